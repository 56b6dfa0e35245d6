"""Pure parts of config/secret delivery (``runtime.files``): checks, mount plan, payload framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import RuntimeFailure
from orchestrator.runtime.files import (
    FileSpec,
    MountPlan,
    check_files,
    decode_payload,
    dir_mount_of,
    encode_payload,
    file_specs,
    layout,
    plan_mounts,
)
from orchestrator.secrets.materialise import FileSpec as Meta
from orchestrator.secrets.value import SecretValue

SECRET = b"hunter2-very-secret"


def test_repr_never_shows_content() -> None:
    f = FileSpec("/run/secrets/db", SecretValue(SECRET), secret=True)
    c = FileSpec("/etc/app.conf", b"plain-config-bytes")
    assert "hunter2" not in repr(f) and "plain-config-bytes" not in repr(c)
    assert f.data() == SECRET and c.data() == b"plain-config-bytes"


def test_plan_groups_shared_dirs_and_binds_the_rest() -> None:
    files = [FileSpec("/run/secrets/a", b"1"), FileSpec("/run/secrets/sub/b", b"2"),
             FileSpec("/run/configs/c", b"3"), FileSpec("/etc/nginx/nginx.conf", b"4"),
             FileSpec("/run/secretsX", b"5")]
    plan = plan_mounts(files)
    assert plan == MountPlan(("/run/configs", "/run/secrets"), ("/etc/nginx/nginx.conf", "/run/secretsX"))
    assert MountPlan.from_dict(plan.to_dict()) == plan
    assert dir_mount_of("/run/secrets//a") == "/run/secrets" and dir_mount_of("/run/secrets") == ""


@pytest.mark.parametrize(("files", "why"), [
    ([FileSpec("etc/x", b"")], "absolute"),
    ([FileSpec("/a/../../x", b"")], "escapes"),
    ([FileSpec("/", b"")], "escapes"),
    ([FileSpec("/x", b""), FileSpec("//x/", b"")], "same target"),
    ([FileSpec("/x", b"", mode=0o10000)], "mode"),
    ([FileSpec("/x", b"", uid=-1)], "uid"),
    ([FileSpec("/run/secrets", b"")], "shared files directory"),
    ([FileSpec("/etc/a", b""), FileSpec("/etc/a/b", b"")], "below another file"),
])
def test_check_files_refuses(files: list[FileSpec], why: str) -> None:
    with pytest.raises(RuntimeFailure) as err:
        check_files(files)
    assert why in str(err.value)


def test_errors_never_carry_content() -> None:
    with pytest.raises(RuntimeFailure) as err:
        check_files([FileSpec("relative", SecretValue(SECRET), secret=True)])
    assert "hunter2" not in str(err.value)
    payload = encode_payload([FileSpec("/run/secrets/x", SecretValue(SECRET), secret=True)])
    with pytest.raises(RuntimeFailure) as err2:
        decode_payload(payload[:-3])
    assert "hunter2" not in str(err2.value) and err2.value.__cause__ is None


def test_payload_round_trip_keeps_secrets_secret() -> None:
    files = [FileSpec("/run/secrets/db", SecretValue(SECRET), 101, 102, 0o400, True),
             FileSpec("/etc/a.conf", b"x = 1\n", 0, 0, 0o644, False), FileSpec("/empty", b"")]
    back = decode_payload(encode_payload(files))
    assert back == files
    assert isinstance(back[0].content, SecretValue) and isinstance(back[1].content, bytes)
    header_end = encode_payload(files).index(SECRET)
    assert b"hunter2" not in encode_payload(files)[:header_end]       # the header holds no content
    assert all("content" not in entry for entry in layout(files))


@given(st.lists(st.tuples(st.text(alphabet="abc", min_size=1, max_size=3), st.binary(max_size=64),
                          st.booleans()), max_size=6, unique_by=lambda t: t[0]))
def test_payload_round_trip_property(raw: list[tuple[str, bytes, bool]]) -> None:
    files = [FileSpec(f"/run/secrets/{name}", SecretValue(data) if secret else data, secret=secret)
             for name, data, secret in raw]
    assert decode_payload(encode_payload(files)) == files


def test_file_specs_from_materialise_items() -> None:
    specs = file_specs([(Meta("/etc/c", 1, 2, 0o640), b"c")], [(Meta("/run/secrets/s", 3, 4, 0o400),
                                                                  SecretValue(SECRET))])
    assert [(f.target, f.uid, f.gid, f.mode, f.secret) for f in specs] == \
        [("/etc/c", 1, 2, 0o640, False), ("/run/secrets/s", 3, 4, 0o400, True)]
