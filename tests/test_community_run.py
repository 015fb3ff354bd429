"""``alertd run`` serves the community page beside the cycle when the config has a
``community:`` section, and stops it with the daemon."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import ALERTD, WriteConfig


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_serves_the_page_beside_the_cycle(write_config: WriteConfig, tmp_path: Path) -> None:
    port = _free_port()
    config = write_config(
        "poll_interval: 0.5\n"
        "community:\n"
        "  name: Guild\n"
        "  public_url: https://alerts.example.org\n"
        f"  listen: 127.0.0.1:{port}\n"
    )
    log = (tmp_path / "log.txt").open("w")
    daemon = subprocess.Popen([*ALERTD, "run", "-c", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=2)
                if "seconds ago" in status.text:  # a cycle has ended and the page knows
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert status is not None and status.status_code == 200, (tmp_path / "log.txt").read_text()
        assert re.search(r'id="last-cycle">\d+ seconds ago', status.text)
        assert 'id="api">answers' in status.text
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    assert "community page on http://127.0.0.1:" in (tmp_path / "log.txt").read_text()
    try:
        httpx.get(f"http://127.0.0.1:{port}/status", timeout=2)
        raise AssertionError("the page still answers after the daemon stopped")
    except httpx.TransportError:
        pass
