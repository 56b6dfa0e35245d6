"""A container with its own network namespace has ``lo`` up (as with Docker's and podman's ``none``)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.root


def test_loopback_is_up_in_a_new_network_namespace(runtime: Any, bundles: Any) -> None:
    # flags: IFF_UP 0x1 | IFF_LOOPBACK 0x8 | IFF_RUNNING 0x40 ...; sysfs shows the container's own netns
    bundle, rootfs = bundles.make(["sh", "-c", "cat /sys/class/net/lo/flags; ls /sys/class/net"])
    runtime.create("lo", bundle, rootfs)
    runtime.start("lo")
    st = runtime.wait("lo", timeout=10)
    assert st.exit_code == 0
    lines = [line.text for line in runtime.logs("lo") if line.stream == "stdout"]
    assert int(lines[0], 16) & 0x1, lines             # up
    assert lines[1:] == ["lo"]                        # and alone: a private namespace
