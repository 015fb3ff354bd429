"""Slow and half-open connections to the page cost a socket, not a thread, and are closed
after the channel timeout: 250 of them neither grow the process nor stop the page for
good (the metrics port's old failure: a thread each, for ever)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from alertd.standin import StandInServer
from tests.pageworld import page_world


@pytest.mark.slow  # an end-to-end run: .ci/run runs it with -m slow
def test_250_idle_connections_take_no_threads_and_are_closed(
    standin: StandInServer, state_dir: Path
) -> None:
    with page_world(standin, state_dir, channel_timeout=2) as world:
        host, port = world.server.url.removeprefix("http://").split(":")
        httpx.get(f"{world.server.url}/status", timeout=5)  # the worker threads exist now
        threads = threading.active_count()
        idle = []
        for n in range(250):
            sock = socket.create_connection((host, int(port)), timeout=5)
            if n % 2:
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # headers never end
            idle.append(sock)
        time.sleep(0.5)
        assert threading.active_count() <= threads
        started = time.monotonic()
        answer = httpx.get(f"{world.server.url}/status", timeout=15)
        assert answer.status_code == 200
        assert time.monotonic() - started < 10
        closed = 0
        for sock in idle:
            sock.settimeout(5)
            try:
                closed += sock.recv(1) == b""
            except OSError:
                closed += 1
            sock.close()
        assert closed >= 200
