"""The status pipe of an exec carries several JSON messages back to back; a torn tail is ignored."""

from __future__ import annotations

from orchestrator.runtime.linux.procio import status_messages


def test_messages_back_to_back() -> None:
    raw = b'{"pid": 12}{"error": {"message": "execve"}}\n{"exit_code": 127}'
    assert status_messages(raw) == [{"pid": 12}, {"error": {"message": "execve"}}, {"exit_code": 127}]


def test_torn_and_empty() -> None:
    assert status_messages(b"") == []
    assert status_messages(b'{"pid": 12}{"exit_co') == [{"pid": 12}]
