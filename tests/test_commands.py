"""The command line itself: help, version, status, the demo, dry-run daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alertd import __version__
from alertd.cli import cli
from alertd.market import Market
from alertd.models import format_time
from alertd.standin import Fault, StandInServer
from tests.conftest import RunCli, StartDaemon, WriteConfig, wait_for
from tests.webhook import WebhookCollector

ALERTD = [sys.executable, "-m", "alertd"]


def test_version(run_cli: RunCli) -> None:
    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"alertd, version {__version__}"


@pytest.mark.parametrize("command", sorted(cli.commands))  # type: ignore[attr-defined]
def test_every_command_has_help_with_an_example(run_cli: RunCli, command: str) -> None:
    result = run_cli(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output
    assert "alertd " + command in result.output


def test_status_shows_what_is_owed_and_why(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    config = write_config(
        f"channels:\n  team: {webhook.url}\nsearches:\n  - name: all\n    notify: [team]\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="Waiting job")
    webhook.up.clear()
    run_cli("once", "-c", config)
    result = run_cli("status", "-c", config)
    assert result.exit_code == 0, result.output
    assert "sent: 0  owed: 1" in result.output
    assert "team: job " in result.output and "(Waiting job), 1 attempt" in result.output
    assert "last error: " in result.output and "last error: -" not in result.output


def test_demo_shows_alerts_offline_and_ends_by_itself(tmp_path: Path) -> None:
    # A sandbox: whatever the environment says (a daemon's settings, a real API, a
    # state directory the daemon holds), the demo uses its own.
    hostile = {
        "ALERTD_POLL_INTERVAL": "1h",
        "ALERTD_API_URL": "http://192.0.2.1",
        "ALERTD_STATE_DIR": str(tmp_path / "a-file"),
        "ALERTD_LOG_LEVEL": "ERROR",
    }
    (tmp_path / "a-file").write_text("not a directory")
    result = subprocess.run(
        [*ALERTD, "demo", "--duration", "5", "--every", "0.5", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **hostile},
    )
    assert result.returncode == 0, result.stderr
    assert "Simulated marketplace on http://127.0.0.1:" in result.stderr
    assert "primed silently" in result.stderr
    assert result.stdout.count("=== New OpenTrain job: ") >= 1
    assert "Matched: " in result.stdout
    # Realistic jobs: an audio search's alerts are audio work, linked to the stand-in.
    blocks = result.stdout.split("=== New OpenTrain job: ")[1:]
    audio = [b for b in blocks if "Matched: audio-jobs" in b]
    assert audio and all(
        any(w in b.split("\n")[0] for w in ("audio", "podcasts")) for b in audio
    ), audio
    assert "http://127.0.0.1:" in blocks[0]
    stamps = [line.split(" ", 1)[0] for line in result.stderr.splitlines() if " INFO " in line]
    assert stamps and all(s[-5] in "+-" for s in stamps)  # a log time says its zone


def test_run_dry_run_sends_nothing(
    market: Market,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    tmp_path: Path,
) -> None:
    config = write_config(
        "poll_interval: 0.3\nsearches:\n  - name: all\n    notify_existing: true\n"
        f"    notify: ['{webhook.url}']\n"
    )
    market.add_job(title="Shown, not sent")
    out = (tmp_path / "out.txt").open("w")
    proc = subprocess.Popen(
        [*ALERTD, "run", "-c", str(config), "--dry-run"], stdout=out, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 15
    while "Shown, not sent" not in (tmp_path / "out.txt").read_text():
        assert time.monotonic() < deadline, "dry run never showed the alert"
        time.sleep(0.05)
    time.sleep(0.7)  # two more cycles
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    text = (tmp_path / "out.txt").read_text()
    assert "[dry run] would send to json://" in text
    assert webhook.attempts == 0


def test_health_follows_the_heartbeat(
    write_config: WriteConfig, run_cli: RunCli, state_dir: Path
) -> None:
    config = write_config("poll_interval: 10\nsearches:\n  - name: all\n")
    missing = run_cli("health", "-c", config)
    assert missing.exit_code == 1
    assert "no heartbeat" in missing.output
    state_dir.mkdir(parents=True)
    beat = state_dir / "heartbeat.json"
    beat.write_text(json.dumps({"at": format_time(datetime.now(UTC)), "ok": True, "cycles": 4}))
    fresh = run_cli("health", "-c", config)
    assert fresh.exit_code == 0, fresh.output
    assert "healthy: cycle 4" in fresh.output
    old = datetime.now(UTC) - timedelta(seconds=100)  # 3 x 10 s + 60 s is the default limit
    beat.write_text(json.dumps({"at": format_time(old), "ok": True, "cycles": 4}))
    stale = run_cli("health", "-c", config)
    assert stale.exit_code == 1
    assert "the last cycle ended 100s ago (limit 90s)" in stale.output


@pytest.mark.slow
def test_health_turns_unhealthy_when_the_api_or_a_target_stays_down(
    market: Market,
    standin: StandInServer,
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    state_dir: Path,
) -> None:
    config = write_config(
        f"poll_interval: 0.3\nsearches:\n  - name: all\n    notify: ['{webhook.url}']\n"
    )
    proc = start_daemon(config)
    wait_for(lambda: (state_dir / "heartbeat.json").exists())
    assert run_cli("health", "-c", config).exit_code == 0
    webhook.up.clear()
    market.add_job(title="Owed while the webhook is down")
    wait_for(lambda: webhook.attempts >= 1)
    time.sleep(1.2)
    owed = run_cli("health", "-c", config, "--max-owed-age", "1")
    assert owed.exit_code == 1 and "an alert has been owed since" in owed.output
    standin.add_fault(Fault("status", path="/jobs/changes", status=503, count=10_000))
    wait_for(lambda: run_cli("health", "-c", config).exit_code == 1, timeout=20)
    down = run_cli("health", "-c", config)
    assert "the API did not answer in the last" in down.output
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def test_health_turns_unhealthy_when_every_search_keeps_failing(
    write_config: WriteConfig, run_cli: RunCli, state_dir: Path
) -> None:
    from alertd.config import load_config
    from alertd.daemon import Daemon
    from alertd.pipeline import CycleReport

    config = write_config("searches:\n  - name: pods\n    q: podcast\n")
    state_dir.mkdir(parents=True)
    daemon = Daemon(load_config(config), lambda c, fresh: CycleReport())
    failing = CycleReport(searches=2, failed_searches=["pods", "audio"], asked=0)
    for report in (failing, failing, CycleReport(searches=2), failing):  # quiet: no query
        daemon.write_heartbeat(report)
    health = run_cli("health", "-c", config)
    assert health.exit_code == 1
    assert health.output == (
        "unhealthy: every search asked failed in the last 3 cycles that asked the API "
        "(see the log for why)\n"
    )
    daemon.write_heartbeat(CycleReport(searches=2, failed_searches=["pods"], asked=1))
    assert run_cli("health", "-c", config).exit_code == 0  # one answered: the API works


def test_a_refused_query_is_not_an_unreachable_api() -> None:
    from alertd.pipeline import CycleReport

    assert not CycleReport(failed_searches=["bad"], asked=0).api_unreachable
    assert CycleReport(held=True).api_unreachable


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_health_is_unhealthy_as_soon_as_the_daemon_is_gone(
    write_config: WriteConfig,
    run_cli: RunCli,
    start_daemon: StartDaemon,
    state_dir: Path,
    how: str,
) -> None:
    config = write_config("poll_interval: 1h\nsearches:\n  - name: all\n")
    daemon = start_daemon(config)
    wait_for(lambda: (state_dir / "heartbeat.json").exists())
    assert run_cli("health", "-c", config).exit_code == 0
    daemon.send_signal(getattr(signal, how))
    daemon.wait(timeout=15)
    gone = run_cli("health", "-c", config)  # not an hour (3 poll intervals) later: now
    assert gone.exit_code == 1
    said = "alertd stopped at" if how == "SIGTERM" else "is not running"
    assert said in gone.output, gone.output
