"""SecretValue never turns into its content: repr, str, format, %, logging, exceptions, pickle."""

from __future__ import annotations

import copy
import hashlib
import logging
import pickle

import pytest

from orchestrator.secrets.value import SecretValue, redacted

RAW = b"hunter2-very-secret"


def test_every_text_form_is_redacted() -> None:
    v = SecretValue(RAW)
    digest = hashlib.sha256(RAW).hexdigest()
    expected = f"<redacted sha256:{digest[:8]}…>"
    assert v.digest == digest
    # the old-style forms on purpose: logging and older code still use them
    old_style = ("%s" % v, "%r" % (v,), "{}".format(v))  # noqa: UP031, UP032
    for text in (repr(v), str(v), f"{v}", f"{v!r}", f"{v!s}", f"{v:>60}", *old_style,
                 str([v]), str({"k": v}), repr((v,))):
        assert "hunter2" not in text
        assert expected in text


def test_reveal_and_identity() -> None:
    v = SecretValue(RAW)
    assert v.reveal() == RAW
    assert len(v) == len(RAW)
    assert v == SecretValue(bytearray(RAW))
    assert v != SecretValue(b"other")
    assert copy.deepcopy(v) is v
    assert redacted(v.digest) == str(v)
    with pytest.raises(TypeError):
        SecretValue("text")  # type: ignore[arg-type]


def test_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(SecretValue(RAW))


def test_not_in_logging_or_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    v = SecretValue(RAW)
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("value %s and %r", v, v)
    assert "hunter2" not in caplog.text
    err = ValueError(f"bad secret {v}")
    assert "hunter2" not in str(err) and "hunter2" not in repr(err)
