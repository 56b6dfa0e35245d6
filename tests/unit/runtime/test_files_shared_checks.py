"""``runtime.files`` and ``secrets.materialise`` share one target check (``relative_parts``): NUL bytes,
escapes and relative paths are refused by both, each naming its own step."""

from __future__ import annotations

import pytest

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.files import FileSpec, check_files, normalise
from orchestrator.secrets.materialise import content_bytes, relative_parts
from orchestrator.secrets.value import SecretValue


@pytest.mark.parametrize("target", ["/run/a\0b", "/../etc/passwd", "/", "relative/x"])
def test_bad_targets_refused_by_both(target: str) -> None:
    with pytest.raises(RuntimeFailure) as materialise_err:
        relative_parts(target)
    with pytest.raises(RuntimeFailure) as files_err:
        check_files([FileSpec(target, b"x")])
    assert materialise_err.value.op == "materialise" and files_err.value.op == "files"


def test_normalise_and_content() -> None:
    assert normalise("/run//./configs/app.conf") == "/run/configs/app.conf"
    assert FileSpec("/x", SecretValue(b"s3cret")).data() == b"s3cret" == content_bytes(SecretValue(b"s3cret"))
    assert content_bytes(bytearray(b"ab")) == b"ab"
