"""Sysctls that are not namespaced write the HOST's kernel settings (``kernel.core_pattern`` = "|prog"
runs prog as host root on the next crash): only runc's allowlist may reach a container
(``security_defaults.sysctl_allowed``: IPC-namespaced keys, ``net.*`` only with a private network
namespace, hostname/domainname only with a private UTS namespace).

The values used are the host's CURRENT values, read at test time, so even a runtime that wrongly writes
them changes nothing on the host.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from escapekit import Escape

from orchestrator import manifest as manifests
from orchestrator.errors import OrchestratorError, RuntimeFailure
from orchestrator.runtime.runc import RuncRuntime

pytestmark = pytest.mark.root

CASES = {
    # key, whether the config keeps its own network namespace
    "kernel.core_pattern": ("kernel.core_pattern", True),
    "vm.swappiness": ("vm.swappiness", True),
    "net-with-host-network": ("net.ipv4.ip_forward", False),
}


def current(key: str) -> str:
    return Path("/proc/sys", key.replace(".", "/")).read_text().strip()


def _config(esc: Escape, key: str, own_netns: bool) -> dict[str, Any]:
    config = esc.config(esc.service(["true"]))
    config["linux"]["sysctl"] = {key: current(key)}
    if not own_netns:
        config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                         if ns["type"] != "network"]
    return config


@pytest.mark.parametrize("case", sorted(CASES))
def test_runc_refuses_a_host_sysctl(esc: Escape, tmp_path: Path, case: str) -> None:
    """The reference behaviour (runc's configs/validate), with the same config.json."""
    key, own_netns = CASES[case]
    config = _config(esc, key, own_netns)
    config["linux"]["cgroupsPath"] = f"/{esc.cgroup_parent}/runc-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeFailure):      # its message ("... is not in a separate kernel namespace")
        esc.create(tmp_path, config, RuncRuntime(tmp_path / "runc-state"))     # goes to runc's log
    assert current(key) == config["linux"]["sysctl"][key]
    # the control: without the sysctl the very same config runs under runc
    del config["linux"]["sysctl"]
    config["linux"]["cgroupsPath"] += "-control"
    st, _out, err = esc.run(tmp_path, config, RuncRuntime(tmp_path / "runc-state"))
    assert st.status == "stopped", err


@pytest.mark.parametrize("case", sorted(CASES))
def test_runtime_refuses_a_host_sysctl(esc: Escape, tmp_path: Path, case: str) -> None:
    key, own_netns = CASES[case]
    config = _config(esc, key, own_netns)
    with pytest.raises(RuntimeFailure):
        esc.create(tmp_path, copy.deepcopy(config))
    assert current(key) == config["linux"]["sysctl"][key]


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifest_refuses_a_host_sysctl(esc: Escape, case: str) -> None:
    key, own_netns = CASES[case]
    svc = esc.service(["true"], security={"sysctls": {key: current(key)}})
    if not own_netns:
        svc["network"] = "host"
    doc = {"apiVersion": "orchestrator/v1", "kind": "Stack", "metadata": {"name": "esc"},
           "spec": {"services": {"probe": svc}}}
    with pytest.raises(OrchestratorError):
        manifests.load_text(json.dumps(doc), str(esc.base / "stack.yaml"))


def test_namespaced_sysctls_are_still_allowed(esc: Escape, tmp_path: Path) -> None:
    """The allowlist's own members keep working (and change only the container's namespaces)."""
    script = "cat /proc/sys/kernel/shmmni /proc/sys/net/ipv4/ip_forward"
    config = esc.config(esc.service(["sh", "-c", script]))
    config["linux"]["sysctl"] = {"kernel.shmmni": "1234", "net.ipv4.ip_forward": "1"}
    host = (current("kernel.shmmni"), current("net.ipv4.ip_forward"))
    st, out, err = esc.run(tmp_path, config)
    assert st.exit_code == 0, err
    assert out == ["1234", "1"]
    assert (current("kernel.shmmni"), current("net.ipv4.ip_forward")) == host
