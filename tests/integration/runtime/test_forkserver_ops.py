"""The fork server refuses a request it does not know instead of answering "ok" for nothing done."""

from __future__ import annotations

import pytest

from orchestrator.runtime.linux.forkclient import ForkServer

pytestmark = pytest.mark.root


def test_unknown_op_is_an_error_and_the_server_stays_up() -> None:
    server = ForkServer()
    try:
        reply = server.request({"op": "frobnicate"})
        assert reply["ok"] is False
        assert reply["error"]["op"] == "forkserver" and "unknown op 'frobnicate'" in reply["error"]["message"]
        assert "unknown op 'Create'" in server.request({"op": "Create"})["error"]["message"]   # still up
    finally:
        server.close()
