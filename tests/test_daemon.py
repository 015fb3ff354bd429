"""The daemon as a process: signals, kills, restarts, locks, a corrupt state, a full disk."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.standin import Fault, StandInServer
from tests.conftest import ALERTD, StartDaemon, WriteConfig, wait_for
from tests.webhook import WebhookCollector


def read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def state_files(state_dir: Path) -> dict[str, bytes]:
    """The store's files (not its lock, nor the request window every process writes)."""
    files = sorted(state_dir.iterdir())
    return {p.name: p.read_bytes() for p in files if p.suffix != ".lock" and p.name != "api-budget"}


def titles(webhook: WebhookCollector) -> list[str]:
    return [str(item["title"]) for item in webhook.received]


def test_sigterm_stops_promptly_with_one_line_per_cycle(
    market: Market,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    tmp_path: Path,
    state_dir: Path,
) -> None:
    config = write_config(
        f"poll_interval: 0.3\nsearches:\n  - name: all\n    notify: ['{webhook.url}']\n"
    )
    proc = start_daemon(config)
    wait_for(lambda: (state_dir / "heartbeat.json").exists())
    market.add_job(title="While running")
    wait_for(lambda: len(webhook.received) == 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    log = (tmp_path / "daemon-0.log").read_text()
    cycle_lines = [line for line in log.splitlines() if " cycle " in line]
    assert len(cycle_lines) >= 2
    assert all("next poll" in line for line in cycle_lines)
    assert "SIGTERM received" in log and "alertd stopped after" in log
    assert "Traceback" not in log


def test_sigterm_ends_a_request_in_flight_within_seconds(
    write_config: WriteConfig,
    standin: StandInServer,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    # The feed answers one byte every 5 s: one request could hold the stop for its
    # whole 30 s deadline, past systemd's TimeoutStopSec (then SIGKILL).
    standin.add_fault(Fault("trickle", path="/jobs/changes", delay=5, count=1000))
    config = write_config("request_timeout: 30s\nsearches:\n  - name: all\n")
    proc = start_daemon(config)
    wait_for(lambda: bool(standin.requests("/jobs/changes")))  # its headers are sent
    time.sleep(0.5)  # in the body now
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    assert time.monotonic() - stopped_at < 10  # was 27 s; a second or two now
    log = (tmp_path / "daemon-0.log").read_text()
    assert "stopped early" in log and "Traceback" not in log


@pytest.mark.slow
def test_kill_and_restart_loses_nothing_and_repeats_nothing(
    market: Market,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    state_dir: Path,
) -> None:
    config = write_config(
        f"poll_interval: 0.3\nsearches:\n  - name: all\n    notify: ['{webhook.url}']\n"
    )
    market.add_job(title="Before first start")
    proc = start_daemon(config)
    wait_for(lambda: (state_dir / "heartbeat.json").exists())
    market.add_job(title="First")
    wait_for(lambda: len(webhook.received) == 1)
    # Kill once the send is recorded: a kill between the target accepting and the
    # record is the one window where a resend is by design (README, known limits).
    wait_for(lambda: '"status":"sent"' in read_or_empty(state_dir / "done.json"))
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()

    market.add_job(title="While down 1")
    market.add_job(title="While down 2")
    proc = start_daemon(config)
    wait_for(lambda: len(webhook.received) >= 3)
    market.add_job(title="After restart")
    wait_for(lambda: len(webhook.received) >= 4)
    time.sleep(1.0)  # a few more cycles: nothing may repeat
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=5)
    assert sorted(titles(webhook)) == sorted(
        f"New OpenTrain job: {t}"
        for t in ("First", "While down 1", "While down 2", "After restart")
    )


def test_a_second_process_on_the_same_state_is_refused(
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    state_dir: Path,
) -> None:
    config = write_config("searches:\n  - name: all\n")
    proc = start_daemon(config)
    wait_for(lambda: (state_dir / "heartbeat.json").exists())
    other = subprocess.run([*ALERTD, "once", "-c", str(config)], capture_output=True, text=True)
    assert other.returncode == 1
    assert f"is in use by alertd (pid {proc.pid})" in other.stderr
    assert "Traceback" not in other.stderr


def test_corrupt_state_file_is_reported_and_left_alone(
    write_config: WriteConfig, state_dir: Path
) -> None:
    config = write_config("searches:\n  - name: all\n")
    state_dir.mkdir(parents=True)
    (state_dir / "outbox.json").write_text('{"rows": {"1": ')
    result = subprocess.run([*ALERTD, "once", "-c", str(config)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "is not valid JSON" in result.stderr and "move it aside" in result.stderr
    assert "Traceback" not in result.stderr
    assert (state_dir / "outbox.json").read_text() == '{"rows": {"1": '


@pytest.mark.slow  # an end-to-end run: .ci/run runs it with -m slow
def test_full_disk_loses_nothing(
    market: Market, write_config: WriteConfig, webhook: WebhookCollector, state_dir: Path
) -> None:
    config = write_config(f"searches:\n  - name: all\n    notify: ['{webhook.url}']\n")
    subprocess.run([*ALERTD, "once", "-c", str(config)], check=True, capture_output=True)
    before = state_files(state_dir)
    market.add_job(title="Arrives while the disk is full")
    short_budget = {**os.environ, "_ALERTD_BUDGET_WINDOW": "2"}

    def full_disk() -> None:  # no file may grow past 64 bytes: every state write fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    full = subprocess.run(
        [*ALERTD, "once", "-c", str(config)],
        capture_output=True,
        text=True,
        preexec_fn=full_disk,
        env=short_budget,
    )
    assert full.returncode == 1
    assert "cannot write state file" in full.stderr
    assert "Traceback" not in full.stderr
    assert state_files(state_dir) == before
    assert webhook.received == []  # nothing sent that could not be recorded first

    # The full disk tore the shared budget file, which the next process counts as full
    # for a window (a minute; 2 s here) before it asks anything.
    ok = subprocess.run(
        [*ALERTD, "once", "-c", str(config)], capture_output=True, text=True, env=short_budget
    )
    assert ok.returncode == 0, ok.stderr
    assert titles(webhook) == ["New OpenTrain job: Arrives while the disk is full"]
