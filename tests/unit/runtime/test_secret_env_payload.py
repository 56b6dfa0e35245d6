"""``env:`` secrets in the files payload (runtime.files): carried by name alongside the file, decoded as
SecretValue, turned into the init's environment; bad values refused naming the variable, never quoting
the value; the on-disk layout carries the name only."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import RuntimeFailure
from orchestrator.manifest.model import FileMount
from orchestrator.runtime.files import (
    FileSpec,
    check_files,
    decode_payload,
    encode_payload,
    environment,
    file_specs,
    layout,
)
from orchestrator.secrets.value import SecretValue

VALUE = "s3cret-Kp9EnvPayloadValue"


def _env_file(value: bytes = VALUE.encode(), name: str = "DB_PASSWORD",
              target: str = "/run/secrets/db") -> FileSpec:
    return FileSpec(target, SecretValue(value), mode=0o400, secret=True, env=name)


def test_round_trip_keeps_the_name_and_the_value() -> None:
    files = [FileSpec("/etc/app.conf", b"x=1\n"), _env_file()]
    back = decode_payload(encode_payload(files))
    assert [f.env for f in back] == ["", "DB_PASSWORD"]
    assert isinstance(back[1].content, SecretValue)
    assert environment(back) == {"DB_PASSWORD": VALUE}


def test_old_payloads_without_env_still_decode() -> None:
    meta = [{"target": "/run/secrets/a", "uid": 0, "gid": 0, "mode": 0o400, "secret": True, "size": 2}]
    raw = json.dumps(meta).encode()
    payload = len(raw).to_bytes(4, "big") + raw + b"ab"
    (f,) = decode_payload(payload)
    assert f.env == "" and environment([f]) == {}


def test_header_and_layout_hold_the_name_never_the_value() -> None:
    files = [_env_file()]
    payload = encode_payload(files)
    header_len = int.from_bytes(payload[:4], "big")
    header = payload[4:4 + header_len]
    assert b"DB_PASSWORD" in header and VALUE.encode() not in header
    assert layout(files)[0]["env"] == "DB_PASSWORD"
    assert VALUE not in json.dumps(layout(files)) and VALUE not in repr(files)


def test_file_specs_take_env_from_secret_mounts() -> None:
    fm = FileMount(name="db", target="/run/secrets/db", env="DB_PASSWORD")
    (spec,) = file_specs(secrets=[(fm, SecretValue(b"v"))])
    assert spec.env == "DB_PASSWORD" and spec.secret


@pytest.mark.parametrize(("value", "why"), [(b"a\0b", "NUL"), (b"\xff\xfe", "UTF-8")])
def test_bad_values_are_refused_naming_the_variable_only(value: bytes, why: str) -> None:
    files = [_env_file(value)]
    for check in (check_files, environment):
        with pytest.raises(RuntimeFailure) as info:
            check(files)
        assert "DB_PASSWORD" in str(info.value) and why in str(info.value)
        assert repr(value) not in str(info.value) and "\\xff" not in str(info.value)


@pytest.mark.parametrize("name", ["A=B", "A\0B", "ÄB"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(RuntimeFailure, match="invalid environment variable name"):
        check_files([FileSpec("/run/secrets/db", SecretValue(b"v"), secret=True, env=name)])


def test_two_secrets_for_one_variable_are_refused() -> None:
    files = [_env_file(target="/run/secrets/a"), _env_file(target="/run/secrets/b")]
    with pytest.raises(RuntimeFailure, match="two secrets for environment variable DB_PASSWORD"):
        check_files(files)
