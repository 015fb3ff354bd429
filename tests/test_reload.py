"""The daemon's timer and SIGHUP reloads: fast tests on a fake clock, one real process."""

from __future__ import annotations

import logging
import signal
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alertd.config import Config, parse_config
from alertd.daemon import Daemon, describe_changes, keep_restart_settings, next_start
from alertd.errors import ConfigError
from alertd.market import Market
from alertd.pipeline import CycleReport
from tests.conftest import StartDaemon, WriteConfig, wait_for
from tests.webhook import WebhookCollector


def config_text(tmp_path: Path, body: str, poll: str = "60") -> str:
    return f"state_dir: {tmp_path}\npoll_interval: {poll}\n" + textwrap.dedent(body)


class FakeTime:
    """A monotonic clock that only moves when the daemon waits or a cycle runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        return False


def test_next_start_counts_from_the_previous_start_and_never_queues() -> None:
    assert next_start(None, 60, now=5.0) == 5.0  # the first cycle starts at once
    assert next_start(0.0, 60, now=10.0) == 60.0  # a 10 s cycle: the next starts at 60, not 70
    assert next_start(0.0, 60, now=63.0) == 63.0  # overran: at once, and only once
    assert next_start(0.0, 60, now=200.0) == 200.0


def test_cycles_start_every_poll_interval_from_the_previous_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    time = FakeTime()
    durations = iter([63.0, 10.0, 10.0, 10.0])
    starts: list[float] = []
    config = parse_config(config_text(tmp_path, "searches:\n  - name: a\n"), "a.yaml")

    def cycle(current: Config, fresh: bool) -> CycleReport:
        starts.append(time.now)
        time.now += next(durations)
        if len(starts) == 4:
            daemon.stop.set()
        return CycleReport(searches=1)

    daemon = Daemon(config, cycle, clock=time.clock, wait=time.wait)
    with caplog.at_level(logging.INFO, logger="alertd.daemon"):
        daemon.run()
    assert starts == [0.0, 63.0, 123.0, 183.0]
    # "next poll" is the real next start: right away after the overrun, then 50 s later
    lines = [r.getMessage() for r in caplog.records if "next poll" in r.getMessage()]
    wall = datetime.now(UTC)
    assert any(f"next poll {(wall + timedelta(seconds=s)):%H:%M:%S}" in lines[0] for s in (-1, 0))
    assert any(f"next poll {(wall + timedelta(seconds=s)):%H:%M:%S}" in lines[1] for s in (49, 50))


def test_a_reload_takes_the_new_config_and_a_broken_one_keeps_the_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    time = FakeTime()
    old = parse_config(
        config_text(tmp_path, "searches:\n  - name: a\n  - name: b\n    q: x\n"), "a.yaml"
    )
    new = parse_config(
        config_text(tmp_path, "searches:\n  - name: b\n    q: y\n  - name: c\n", poll="30"),
        "a.yaml",
    )
    loads: list[Config | ConfigError] = [new, ConfigError("bad", source="a.yaml", line=3)]
    used: list[tuple[float, Config]] = []
    fresh_cycles: list[bool] = []

    def reload() -> Config:
        result = loads.pop(0)
        if isinstance(result, ConfigError):
            raise result
        return result

    def cycle(current: Config, fresh: bool) -> CycleReport:
        used.append((time.now, current))
        fresh_cycles.append(fresh)
        if len(used) < 4:
            daemon.reload_requested = len(used) in (1, 2)  # as SIGHUP's handler does
        else:
            daemon.stop.set()
        return CycleReport()

    daemon = Daemon(old, cycle, reload=reload, clock=time.clock, wait=time.wait)
    with caplog.at_level(logging.INFO, logger="alertd.daemon"):
        daemon.run()
    assert [config for _, config in used] == [old, new, new, new]
    assert [at for at, _ in used] == [0.0, 30.0, 60.0, 90.0]  # the new poll_interval counts
    # The start and each SIGHUP (refused or not) try targets that refused for good at once.
    assert fresh_cycles == [True, True, True, False]
    assert "config reloaded: 2 searches (+1 new, -1 removed, 1 changed)" in caplog.text
    refused = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in refused] == [
        "config reload refused: a.yaml:3: bad; still running the previous config"
    ]


def test_settings_that_need_a_restart_keep_their_values(tmp_path: Path) -> None:
    old = parse_config(config_text(tmp_path, "requests_per_minute: 60\n"), "a.yaml")
    new = parse_config(
        config_text(tmp_path / "x", "requests_per_minute: 30\nlog_level: DEBUG\n", poll="5"),
        "a.yaml",
    )
    merged, kept = keep_restart_settings(old, new)
    assert kept == ["state_dir", "requests_per_minute"]
    assert (merged.state_dir, merged.requests_per_minute) == (old.state_dir, 60)
    assert (merged.poll_interval, merged.log_level) == (5.0, "DEBUG")


def test_moving_a_search_is_not_a_change(tmp_path: Path) -> None:
    old = parse_config(config_text(tmp_path, "searches:\n  - name: a\n  - name: b\n"), "a.yaml")
    new = parse_config(config_text(tmp_path, "searches:\n  - name: b\n  - name: a\n"), "a.yaml")
    assert describe_changes(old, new) == "2 searches (+0 new, -0 removed, 0 changed)"


def test_sighup_adds_a_search_silently_and_refuses_a_broken_config(
    market: Market,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    tmp_path: Path,
    state_dir: Path,
) -> None:
    config = write_config(
        f"""\
        poll_interval: 0.3
        include: members/*.yaml
        channels:
          team: '{webhook.url}'
        searches:
          - name: audio
            category: Audio Annotation
            notify: team
        """
    )
    log = tmp_path / "daemon-0.log"
    proc = start_daemon(config)
    wait_for(lambda: "cycle 1 " in log.read_text())
    market.add_job(title="Spanish before the search", languages=["Spanish"])
    member = tmp_path / "members" / "ann.yaml"
    member.parent.mkdir()
    member.write_text("searches:\n  - name: spanish\n    language: Spanish\n    notify: team\n")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "primed silently: spanish" in log.read_text())
    assert "config reloaded: 2 searches (+1 new, -0 removed, 0 changed)" in log.read_text()
    market.add_job(title="Spanish after", languages=["Spanish"])
    wait_for(lambda: len(webhook.received) == 1)

    config.write_text(config.read_text().replace("category:", "categroy:"))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reload refused" in log.read_text())
    market.add_job(title="Audio while broken", category="Audio Annotation")
    wait_for(lambda: len(webhook.received) == 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0

    text = log.read_text()
    assert [str(m["title"]) for m in webhook.received] == [
        "New OpenTrain job: Spanish after",
        "New OpenTrain job: Audio while broken",
    ]
    assert (
        f"ERROR config reload refused: {config}:10: searches[0].categroy: unknown key 'categroy'"
        in text
    )
    assert "still running the previous config" in text
    assert "Traceback" not in text
