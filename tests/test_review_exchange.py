"""A hostile reviewer's cases for bounded deliveries (alertd/exchange.py)."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime

from alertd.deliver import send
from alertd.models import Job, Target
from alertd.render import Item, Message
from tests.rawserver import RawServer

MESSAGE = Message((Item(Job(id="j1", title="A job", date_posted=datetime.now(UTC)), ("all",)),))


def trickled_headers(conn: socket.socket, stop: threading.Event) -> None:
    """A status line and headers a byte at a time, each well inside a read timeout."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
        if stop.wait(0.2):
            return
        conn.sendall(bytes([byte]))


def send_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "alertd-send")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sends_to_a_target_trickling_its_headers_leave_no_thread_or_socket() -> None:
    """Before: each send left its worker reading the headers (and its socket open) for
    as long as the target trickled; a daemon retrying such a target piled them up."""
    server = RawServer(trickled_headers)
    try:
        target = Target.for_url(server.url.replace("http://", "json://") + "/hook", "hook")
        send(target, MESSAGE, timeout=0.5)  # apprise loads its plugins once
        time.sleep(0.5)
        threads, fds = send_threads(), open_fds()
        for _ in range(5):
            outcome = send(target, MESSAGE, timeout=0.5)
            assert not outcome.accepted and outcome.unknown, outcome
        deadline = time.monotonic() + 3.0
        while (send_threads(), open_fds()) > (threads, fds) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert send_threads() == threads
        assert open_fds() <= fds
    finally:
        server.close()
