"""Deliver first, slow work later: a query whose answer trickles in holds up no one's alerts.

The daemon runs as a process against the stand-in, whose answer to the slow searches'
query trickles a byte every 5 s (the whole request then costs its 30 s deadline). Another
search's new job, matched from the change feed, must reach its webhook long before the
slow queries would have let the cycle end, and the cycle's log line says what it left.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.standin import Fault, StandInServer
from tests.conftest import ALERTD, StartDaemon, WriteConfig, wait_for
from tests.webhook import WebhookCollector

pytestmark = pytest.mark.slow  # each runs a daemon for 20-65 s: CI runs them apart


def slow_config(write_config: WriteConfig, webhook: WebhookCollector, slow: int) -> Path:
    """``fast`` (an exact filter, alerted from the feed) first, then ``slow`` searches."""
    lines = [
        "log_level: DEBUG",  # a search's own priming line, logged when it primes
        "poll_interval: 5s",
        "request_timeout: 30s",
        "searches:",
        "  - name: fast",
        "    category: Audio Annotation",
        f"    notify: ['{webhook.url}']",
    ]
    for n in range(slow):
        lines += [f"  - name: slow{n}", f"    category: Slow{n}"]
    return write_config("\n".join(lines) + "\n")


def trickle(standin: StandInServer, slow: int) -> None:
    for n in range(slow):
        standin.add_fault(Fault("trickle", path=f"/jobs?category=Slow{n}&", delay=5, count=1000))


def publish_while_slow_query_runs(
    market: Market, standin: StandInServer, log: Path, webhook: WebhookCollector
) -> float:
    """Publish a job for ``fast`` just as a slow query starts; seconds until it arrived."""
    wait_for(lambda: "search 'fast' primed" in log.read_text(), timeout=20)
    wait_for(lambda: bool(standin.requests("/jobs?category=Slow")), timeout=20)
    published = time.monotonic()
    market.add_job(title="Fresh audio job", category="Audio Annotation")
    wait_for(lambda: bool(webhook.received), timeout=70)
    assert "Fresh audio job" in json.dumps(webhook.received)
    return time.monotonic() - published


def test_one_trickling_query_does_not_hold_up_another_searchs_alert(
    market: Market,
    standin: StandInServer,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    trickle(standin, 1)
    daemon = start_daemon(slow_config(write_config, webhook, 1))
    took = publish_while_slow_query_runs(market, standin, tmp_path / "daemon-0.log", webhook)
    daemon.terminate()
    assert daemon.wait(timeout=10) == 0
    # The slow query costs its 30 s deadline once a cycle (no retry after the ask window);
    # the next cycle delivers before it asks it again. Before: 4 tries, over 2 minutes.
    assert took < 40, took
    log = (tmp_path / "daemon-0.log").read_text()
    assert "'slow0' skipped this cycle" in log and "Traceback" not in log


def test_five_trickling_queries_do_not_add_up_and_the_log_says_what_was_left(
    market: Market,
    standin: StandInServer,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    trickle(standin, 5)
    daemon = start_daemon(slow_config(write_config, webhook, 5))
    log = tmp_path / "daemon-0.log"
    took = publish_while_slow_query_runs(market, standin, log, webhook)
    daemon.terminate()
    assert daemon.wait(timeout=10) == 0
    assert took < 60, took  # five queries × 30 s each would be 150 s a cycle
    cycle_lines = [line for line in log.read_text().splitlines() if " cycle " in line]
    assert cycle_lines, log.read_text()
    assert "10s ask window over: 4 queries left for the next cycle" in cycle_lines[0]


def test_health_still_tells_a_daemon_whose_cycle_no_longer_ends(
    standin: StandInServer,
    write_config: WriteConfig,
    start_daemon: StartDaemon,
    state_dir: Path,
) -> None:
    # A request with an hour's deadline, trickled: the cycle is stuck in it (the ask
    # window starts nothing new, it cannot end a request on its way).
    config = write_config("poll_interval: 1\nrequest_timeout: 1h\nsearches:\n  - name: all\n")
    daemon = start_daemon(config)
    beat = state_dir / "heartbeat.json"
    wait_for(lambda: beat.exists())

    def health() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ALERTD, "health", "-c", str(config), "--max-age", "4"],
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert health().returncode == 0, health().stdout
    standin.add_fault(Fault("trickle", path="/jobs/changes", delay=5, count=1000))
    wait_for(lambda: health().returncode == 1, timeout=20)
    verdict = health().stdout
    assert "stopped or stuck?" in verdict, verdict
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0


def test_what_a_free_text_query_found_goes_out_before_a_failing_query_is_tried(
    market: Market,
    standin: StandInServer,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    # A free-text search must be asked about each new job; its answer must not wait
    # behind the failing query's 30 s in the same cycle.
    trickle(standin, 1)
    config = write_config(
        "log_level: DEBUG\npoll_interval: 5s\nrequest_timeout: 30s\nsearches:\n"
        f"  - name: words\n    q: violin\n    notify: ['{webhook.url}']\n"
        "  - name: slow0\n    category: Slow0\n"
    )
    daemon = start_daemon(config)
    log = tmp_path / "daemon-0.log"
    wait_for(lambda: "search 'words' primed" in log.read_text(), timeout=45)
    wait_for(lambda: len(standin.requests("/jobs?category=Slow0")) >= 2, timeout=70)
    published = time.monotonic()  # the failing query's second try has begun
    market.add_job(title="Violin recordings", category="Audio Annotation")
    wait_for(lambda: bool(webhook.received), timeout=75)
    took = time.monotonic() - published
    daemon.terminate()
    assert daemon.wait(timeout=10) == 0
    assert took < 40, took  # the rest of this cycle, then the next one's first minute


def test_what_owed_queries_found_goes_out_before_a_new_querys_first_try(
    market: Market,
    standin: StandInServer,
    write_config: WriteConfig,
    webhook: WebhookCollector,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    # slow0 fails first (cycle 1), then each cycle primes one new search whose first
    # try costs its 30 s: the free-text job found before it must not wait for it.
    trickle(standin, 3)
    config = write_config(
        "log_level: DEBUG\npoll_interval: 5s\nrequest_timeout: 30s\nsearches:\n"
        f"  - name: words\n    q: violin\n    notify: ['{webhook.url}']\n"
        + "".join(f"  - name: slow{n}\n    category: Slow{n}\n" for n in range(3))
    )
    daemon = start_daemon(config)
    log = tmp_path / "daemon-0.log"
    wait_for(lambda: "search 'words' primed" in log.read_text(), timeout=45)
    wait_for(lambda: bool(standin.requests("/jobs?category=Slow1")), timeout=45)
    published = time.monotonic()  # slow1's first try has begun; slow2's is next cycle's
    market.add_job(title="Violin recordings", category="Audio Annotation")
    wait_for(lambda: bool(webhook.received), timeout=75)
    took = time.monotonic() - published
    daemon.terminate()
    assert daemon.wait(timeout=10) == 0
    assert took < 40, took
