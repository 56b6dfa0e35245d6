"""Redaction: known values never appear in logs (JSON and console), JSON output, or exception text."""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.secrets.redact import (
    MAX_SCRUB_BYTES,
    MIN_LEN,
    Redactor,
    dumps,
    redact_processor,
    trie_pattern,
)
from orchestrator.secrets.value import SecretValue

SECRET = SecretValue(b"p@ss\nword-42\n")
LABEL = str(SECRET)[:-2]                    # without "…>": the JSON renderer escapes the ellipsis


def _all_forms(raw: bytes) -> list[str]:
    text = raw.decode()
    return [text, text.strip(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
            raw.hex(), raw.hex().upper(), json.dumps(text), repr(raw), repr(text)]


def test_scrub_every_form() -> None:
    r = Redactor([SECRET])
    for form in _all_forms(SECRET.reveal()):
        out = r.scrub(f"before {form} after")
        assert "word-42" not in out and form not in out, form
        assert LABEL in out


def test_scrub_leaves_other_text_alone() -> None:
    r = Redactor()
    assert r.scrub("nothing known") == "nothing known"
    r.add(SECRET)
    assert r.scrub("nothing secret here") == "nothing secret here"
    r.discard(SECRET)
    assert r.scrub("p@ss\nword-42") == "p@ss\nword-42"


def test_short_values_are_not_scrubbed_from_free_text() -> None:
    r = Redactor([SecretValue(b"ab")])
    assert r.scrub("abc") == "abc"
    assert MIN_LEN == 4


def _logger(redactor: Redactor, renderer: Any) -> tuple[Any, io.StringIO]:
    out = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.format_exc_info, redact_processor(redactor), renderer])
    return log, out


def test_structlog_json_and_console_never_show_the_value() -> None:
    r = Redactor([SECRET])
    raw = SECRET.reveal().decode()
    for renderer in (structlog.processors.JSONRenderer(sort_keys=True),
                     structlog.dev.ConsoleRenderer(colors=False)):
        log, out = _logger(r, renderer)
        log.info("wrote " + raw, env={"DB": raw, "n": 1}, items=[raw.encode(), SECRET], raw=SECRET)
        try:
            raise RuntimeError(f"decoder choked on {raw!r}")
        except RuntimeError:
            log.exception("failed")
        text = out.getvalue()
        assert "word-42" not in text, text
        assert LABEL in text and "decoder choked" in text


def test_processor_keeps_types_of_clean_values() -> None:
    r = Redactor([SECRET])
    event = redact_processor(r)(None, "info", {"event": "x", "count": 3, "ok": True, "nested": {"a": (1,)}})
    assert event == {"event": "x", "count": 3, "ok": True, "nested": {"a": (1,)}}


def test_json_output_helper() -> None:
    r = Redactor([SECRET])
    raw = SECRET.reveal().decode()
    text = dumps({"plan": [{"reason": f"env {raw}"}], raw.strip(): SECRET}, r, indent=1)
    assert "word-42" not in text
    data = json.loads(text)                     # still valid JSON after scrubbing
    assert LABEL in json.dumps(data, ensure_ascii=False)


def test_exception_messages_scrubbed() -> None:
    r = Redactor([SECRET])
    err = ValueError(f"bad value {SECRET.reveal()!r}")
    assert "word-42" not in r.scrub(str(err)) and "word-42" not in r.scrub(repr(err))


@settings(max_examples=300, deadline=None)
@given(secret=st.binary(min_size=MIN_LEN, max_size=64), before=st.text(" .:=-_abc/+", max_size=20),
       after=st.text(" .:=-_abc/+", max_size=20))
def test_property_value_never_survives(secret: bytes, before: str, after: str) -> None:
    value = SecretValue(secret)
    r = Redactor([value])
    text = secret.decode("utf-8", errors="replace")
    for form in (text, base64.b64encode(secret).decode(), secret.hex(), json.dumps(text)):
        if len(form) < MIN_LEN:
            continue
        scrubbed = r.scrub(before + form + after)
        assert form not in scrubbed
        assert str(value) in scrubbed


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.text("ab.\\n*", min_size=1, max_size=6), min_size=1, max_size=8),
       text=st.text("ab.\\n* x", max_size=40))
def test_trie_pattern_matches_like_a_longest_first_alternation(words: list[str], text: str) -> None:
    flat = re.compile("|".join(map(re.escape, sorted(set(words), key=len, reverse=True))))
    trie = re.compile(trie_pattern(words))
    assert [m.span() for m in trie.finditer(text)] == [m.span() for m in flat.finditer(text)]


def test_values_registered_later_and_large_values() -> None:
    r = Redactor()
    assert r.scrub("abcd-secret") == "abcd-secret"
    late = SecretValue(b"abcd-secret")
    r.add(late)
    assert r.scrub("x abcd-secret y") == f"x {late} y"
    huge = SecretValue(b"Z" * (MAX_SCRUB_BYTES + 1))
    r.add(huge)
    assert r.scrub("ZZZZ") == "ZZZZ" and len(r) == 2
