"""No test server prints into the test run's output: what breaks a request is recorded.

socketserver's default ``handle_error`` writes "Exception occurred during processing of
request from ..." and a traceback to stderr, which shows up between pytest's dots.
Each server here records it instead, where a test can look.
"""

from __future__ import annotations

import socket
import threading

import pytest

from alertd.standin import Fault, StandInServer
from tests.conftest import wait_for
from tests.rawserver import RawServer
from tests.servers import TLSInterceptProxy
from tests.webhook import WebhookCollector


def test_a_post_cut_short_is_recorded_by_the_webhook_not_printed(
    webhook: WebhookCollector, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.create_connection(webhook.server_address[:2]) as conn:
        conn.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        conn.shutdown(socket.SHUT_WR)  # the body ends after one byte: not JSON
        wait_for(lambda: bool(webhook.errors), timeout=5)
    assert "JSONDecodeError" in webhook.errors[0]
    assert capfd.readouterr() == ("", "")


def test_a_request_that_breaks_the_standin_is_recorded_not_printed(
    standin: StandInServer, capfd: pytest.CaptureFixture[str]
) -> None:
    broken = Fault("bomb", path="/jobs/changes")
    broken.kind = "not a fault"  # the handler raises on it
    standin.add_fault(broken)
    with socket.create_connection(standin.server_address[:2]) as conn:
        conn.sendall(b"GET /jobs/changes HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: bool(standin.errors), timeout=5)
    assert "unknown fault kind" in standin.errors[0]
    assert capfd.readouterr() == ("", "")


def test_the_intercepting_proxy_records_what_broke_a_connection(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with TLSInterceptProxy() as proxy:
        assert proxy._server is not None
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:  # as socketserver calls it: inside the except block
            proxy._server.handle_error(None, ("127.0.0.1", 1))
    assert proxy.unhandled == [
        "('127.0.0.1', 1): ConnectionResetError(104, 'Connection reset by peer')"
    ]
    assert capfd.readouterr() == ("", "")


def test_a_raw_behaviour_that_raises_is_recorded_not_printed(
    capfd: pytest.CaptureFixture[str],
) -> None:
    def broken(conn: socket.socket, stop: threading.Event) -> None:
        raise RuntimeError("a behaviour with a bug")

    server = RawServer(broken)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\n\r\n")
            wait_for(lambda: bool(server.errors), timeout=5)
    finally:
        server.close()
    assert server.errors == ["RuntimeError('a behaviour with a bug')"]
    assert capfd.readouterr() == ("", "")
