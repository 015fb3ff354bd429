"""Under systemd: `alertd run` says READY=1 after its first cycle, its summary as STATUS=,
WATCHDOG=1 while it lives, and STOPPING=1 on the way out. The test plays systemd: it
binds the unix datagram socket and passes it in $NOTIFY_SOCKET, as systemd does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.sdnotify import Notifier, socket_address, watchdog_interval
from tests.conftest import ALERTD, WriteConfig


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and its path (short: unix paths stop at 108 bytes)."""
    folder = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


def receive(
    sock: socket.socket, until: float, enough: Callable[[list[str]], bool] = lambda got: False
) -> list[str]:
    """The datagrams that arrive before ``until`` (a monotonic time), or until ``enough``."""
    got: list[str] = []
    while (left := until - time.monotonic()) > 0 and not enough(got):
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return got


def start(config: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*ALERTD, "run", "-c", str(config)],
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def ready_and_three_watchdogs(got: list[str]) -> bool:
    after = "\n".join(got).partition("READY=1")[2]
    return after.count("WATCHDOG=1") >= 4  # one rides with READY


@pytest.mark.slow  # an end-to-end run: .ci/run runs it with -m slow
def test_ready_after_first_cycle_with_its_summary_then_watchdog_and_stopping(
    market: Market,
    write_config: WriteConfig,
    notify_socket: tuple[socket.socket, str],
    state_dir: Path,
    tmp_path: Path,
) -> None:
    sock, path = notify_socket
    market.add_job(title="Spanish audio")
    config = write_config("poll_interval: 3600\nsearches:\n  - name: all\n    notify: []\n")
    proc = start(config, tmp_path / "log", NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    try:
        messages = receive(sock, time.monotonic() + 15, enough=ready_and_three_watchdogs)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    messages += receive(sock, time.monotonic() + 0.5)

    ready = [i for i, m in enumerate(messages) if "READY=1" in m.splitlines()]
    assert len(ready) == 1, messages
    first = messages[ready[0]].splitlines()
    # READY comes with the first cycle's summary: the cycle ran before it was sent.
    assert first[1].startswith("STATUS=cycle 1: 1 search, "), first
    assert "primed silently: all" in first[1]
    assert (state_dir / "heartbeat.json").exists()
    assert not any("READY=1" in m for m in messages[: ready[0]])
    # While idle for an hour, the watchdog keeps coming (every ~0.2s asked; loop: 1s).
    later = [m for m in messages[ready[0] + 1 :] if m == "WATCHDOG=1"]
    assert len(later) >= 3, messages
    assert messages[-1] == "STOPPING=1\nSTATUS=stopping"


@pytest.mark.slow
def test_no_watchdog_unless_asked_and_abstract_socket(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    name = f"alertd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    config = write_config("poll_interval: 3600\nsearches:\n  - name: all\n    notify: []\n")
    proc = start(config, tmp_path / "log", NOTIFY_SOCKET="@" + name)
    try:
        messages = receive(sock, time.monotonic() + 3.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        sock.close()
    assert messages and messages[0].startswith("READY=1\nSTATUS=cycle 1: ")
    assert not any("WATCHDOG=1" in m for m in messages)


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier.from_environ({})
    notifier.cycle_ended("cycle 1: fine")
    notifier.watchdog()
    assert notifier.address is None and not notifier.broken


def test_a_vanished_socket_is_reported_once_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier("/nonexistent/notify", watchdog_every=0.0)
    for _ in range(3):
        notifier.cycle_ended("cycle: fine")
        notifier.watchdog()
    assert notifier.broken
    assert len([r for r in caplog.records if "NOTIFY_SOCKET" in r.getMessage()]) == 1


def test_addresses_and_watchdog_time_as_systemd_gives_them() -> None:
    assert socket_address("@alertd/notify") == "\0alertd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("vsock:2:1234") is None and socket_address("") is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 7) is None
