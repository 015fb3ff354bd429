"""Edge cases a months-long deployment meets: the edge cache, closures, edited targets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import Result

from alertd.config import Config, load_config
from alertd.deliver import sender_for
from alertd.market import Market
from alertd.match import is_open
from alertd.models import Job, format_time
from alertd.pipeline import make_client, run_once
from alertd.plan import HOLD_BOUND
from alertd.standin import Fault, StandInServer
from alertd.store import Store
from tests.conftest import RunCli, WriteConfig
from tests.webhook import WebhookCollector
from tests.world import Recorder, alerts_in, run

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@pytest.fixture
def hooked(write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector) -> Path:
    """A primed config whose one search notifies ``webhook``; failed sends retry after 0.2 s."""
    config = write_config(
        f"retry_schedule: [0.2]\nsearches:\n  - name: all\n    notify: ['{webhook.url}']\n"
    )
    run_cli("once", "-c", config)
    return config


def once_back_up(
    run_cli: RunCli, config: Path, webhook: WebhookCollector, after: float = 0.3
) -> Result:
    """The webhook up again; ``after`` seconds later (past the retry delay), one ``once``."""
    webhook.up.set()
    time.sleep(after)
    return run_cli("once", "-c", config)


def owe_while_down(run_cli: RunCli, config: Path, webhook: WebhookCollector) -> None:
    """Run a cycle with the webhook refusing, so what it matched stays owed."""
    webhook.up.clear()
    assert run_cli("once", "-c", config).exit_code == 1


def cycle_at(config: Config, send: Recorder, moment: datetime) -> None:
    """One cycle of ``config`` as a new process, at a moment the test chooses."""
    run(config, config.api_url, send, lambda: moment)


@pytest.fixture
def cached_standin(market: Market) -> Iterator[StandInServer]:
    """The stand-in with a short edge cache: 1 s fresh, then stale once, as production does."""
    server = StandInServer(market, cache_ttl=1.0).start()
    yield server
    server.stop()


def test_first_run_stays_silent_when_the_edge_cache_answers_from_before_the_search(
    market: Market, cached_standin: StandInServer, tmp_path: Path, run_cli: RunCli
) -> None:
    market.add_job(title="Long there")
    httpx.get(f"{cached_standin.url}/jobs", params={"limit": "100"})  # someone else warmed it
    market.add_job(title="Posted before the search existed")
    time.sleep(0.01)
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"api_url: {cached_standin.url}\nstate_dir: {tmp_path / 'state'}\n"
        "searches:\n  - name: all\n"
    )
    outputs = [run_cli("once", "-c", config)]  # served the cached page from before the search
    market.add_job(title="Posted after the search")
    time.sleep(1.1)
    outputs.append(run_cli("once", "-c", config))  # expired: served stale once
    outputs.append(run_cli("once", "-c", config))  # fresh
    alerts = [title for out in outputs for title in alerts_in(out.stdout)]
    assert alerts == ["Posted after the search"]
    assert "answered from a cache older than the search" in outputs[0].output


def test_a_job_closed_while_its_target_was_down_is_not_sent(
    hooked: Path,
    market: Market,
    run_cli: RunCli,
    webhook: WebhookCollector,
) -> None:
    config = hooked
    job = market.add_job(title="Filled quickly")
    owe_while_down(run_cli, config, webhook)
    market.close_job(job["id"])
    result = once_back_up(run_cli, config, webhook)
    assert result.exit_code == 0, result.output
    assert webhook.received == []
    assert "1 withdrawn (job closed or expired)" in result.output
    assert "owed: 0" in run_cli("status", "-c", config).output


def test_a_job_that_expired_while_owed_is_not_sent(
    hooked: Path,
    market: Market,
    run_cli: RunCli,
    webhook: WebhookCollector,
) -> None:
    config = hooked
    soon = format_time(datetime.now(UTC) + timedelta(seconds=1))
    market.add_job(title="Short-lived", validThrough=soon)
    owe_while_down(run_cli, config, webhook)
    result = once_back_up(run_cli, config, webhook, after=1.1)
    assert result.exit_code == 0, result.output
    assert webhook.received == []
    assert "1 withdrawn (job closed or expired)" in result.output


def test_is_open_needs_status_open_and_a_future_valid_through() -> None:
    later, earlier = NOW + timedelta(days=1), NOW - timedelta(seconds=1)
    assert is_open(Job(id="a", status="OPEN"), NOW)
    assert is_open(Job(id="a", status="open", valid_through=later), NOW)
    assert not is_open(Job(id="a", status="OPEN", valid_through=earlier), NOW)
    assert not is_open(Job(id="a", status="CLOSED"), NOW)
    assert not is_open(Job(id="a", status=None), NOW)


def test_fixing_a_channel_url_keeps_what_it_is_owed(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    body = "retry_schedule: [0.2]\nchannels:\n  team: {url}\nsearches:\n  - name: all\n"
    body += "    notify: [team]\n"
    config = write_config(body.format(url="json://127.0.0.1:9/typo"))
    run_cli("once", "-c", config)
    market.add_job(title="Owed to team")
    assert run_cli("once", "-c", config).exit_code == 1
    config = write_config(body.format(url=webhook.url))  # the user fixes the URL
    time.sleep(0.3)
    assert run_cli("once", "-c", config).exit_code == 0
    assert [item["title"] for item in webhook.received] == ["New OpenTrain job: Owed to team"]


def test_secret_from_the_environment_never_shows_in_a_label(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig, run_cli: RunCli
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "SuperSecretToken123")
    config = write_config(
        "searches:\n  - name: a\n    notify: ['json://127.0.0.1:9/services/${HOOK_TOKEN}']\n"
    )
    result = run_cli("validate", "-c", config)
    assert result.exit_code == 0
    assert "SuperSecretToken123" not in result.output
    assert "json://127.0.0.1:9/services/***" in result.output


def test_status_and_dry_run_work_beside_a_running_daemon(
    market: Market, write_config: WriteConfig, run_cli: RunCli, state_dir: Path
) -> None:

    config = write_config("searches:\n  - name: all\n")
    run_cli("once", "-c", config)
    with Store.open(state_dir):  # holds the lock, as `alertd run` does
        assert run_cli("once", "-c", config).exit_code == 1
        assert run_cli("status", "-c", config).exit_code == 0
        market.add_job(title="Seen by the dry run")
        dry = run_cli("once", "-c", config, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert "Seen by the dry run" in dry.stdout


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ALERTD_RETRY_SCHEDULE", "5m", "environment variable ALERTD_RETRY_SCHEDULE"),
        ("ALERTD_API_URL", "notaurl", "environment variable ALERTD_API_URL: api_url: 'notaurl'"),
        ("ALERTD_TIMEZONE", "Nowhere", "environment variable ALERTD_TIMEZONE: timezone: unknown"),
        ("ALERTD_POLL_INTERVAL", "200h", "at most 7 days"),
    ],
)
def test_bad_environment_overrides_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    write_config: WriteConfig,
    run_cli: RunCli,
    name: str,
    value: str,
    expected: str,
) -> None:
    config = write_config("searches:\n  - name: a\n")
    monkeypatch.setenv(name, value)
    result = run_cli("validate", "-c", config)
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output


def test_searches_cannot_be_replaced_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("ALERTD_SEARCHES", '[{"name": "x"}]')
    monkeypatch.setenv("ALERTD_CHANNELS", '{"c": "json://127.0.0.1:9/x"}')
    config = load_config(write_config("searches:\n  - name: from-file\n"))
    assert [s.name for s in config.searches] == ["from-file"]
    assert config.channels == {}


def test_a_config_without_searches_does_not_validate(
    write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("log_level: INFO\n")
    for command in ("validate", "once", "run"):
        result = run_cli(command, "-c", config)
        assert result.exit_code == 2, command
        assert "no saved search yet" in result.output


def test_a_closure_seen_earlier_still_stops_a_cached_listing(
    market: Market, tmp_path: Path, run_cli: RunCli
) -> None:
    server = StandInServer(market, cache_ttl=2.0).start()
    try:
        config = tmp_path / "alerts.yaml"
        config.write_text(
            f"api_url: {server.url}\nstate_dir: {tmp_path / 'state'}\nsearches:\n  - name: all\n"
        )
        run_cli("once", "-c", config)  # primes; caches an empty page
        time.sleep(2.1)
        job = market.add_job(title="Closed but cached")
        url = f"{server.url}/jobs"
        httpx.get(url, params={"limit": "100"})  # the stale empty page, served once
        httpx.get(url, params={"limit": "100"})  # a fresh page listing the job, now cached
        market.close_job(job["id"])
        # The feed says closed; the full refresh (due at once here) gets the cached page.
        config.write_text(config.read_text() + "refresh_interval: 0.1\n")
        cached = run_cli("once", "-c", config)
        assert cached.exit_code == 0, cached.output
        assert "1 of 1 query asked" in cached.output
        assert alerts_in(cached.stdout) == []
    finally:
        server.stop()


def test_a_job_closed_then_edited_is_not_sent(
    hooked: Path,
    market: Market,
    run_cli: RunCli,
    webhook: WebhookCollector,
) -> None:
    config = hooked
    job = market.add_job(title="Closed, then edited")
    owe_while_down(run_cli, config, webhook)
    market.close_job(job["id"])
    market.update_job(job["id"], title="Closed, then edited (typo fixed)")
    result = once_back_up(run_cli, config, webhook)
    assert webhook.received == []
    assert "1 withdrawn" in result.output


def test_an_extended_deadline_keeps_the_alert_owed(
    hooked: Path,
    market: Market,
    run_cli: RunCli,
    webhook: WebhookCollector,
) -> None:
    config = hooked
    soon = datetime.now(UTC) + timedelta(seconds=1)
    job = market.add_job(title="Extended", validThrough=format_time(soon))
    owe_while_down(run_cli, config, webhook)
    market.update_job(job["id"], validThrough=format_time(soon + timedelta(days=30)))
    time.sleep(1.1)
    webhook.up.set()
    run_cli("once", "-c", config)
    assert [item["title"] for item in webhook.received] == ["New OpenTrain job: Extended"]


def test_a_search_removed_and_added_back_starts_silent(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    both = "searches:\n  - name: audio\n    category: Audio Annotation\n  - name: other\n"
    config = write_config(both)
    run_cli("once", "-c", config)
    run_cli("once", "-c", write_config("searches:\n  - name: other\n    q: nothing\n"))
    for i in range(3):
        market.add_job(title=f"Audio while removed {i}", category="Audio Annotation")
    result = run_cli("once", "-c", write_config(both))
    assert alerts_in(result.stdout) == []
    assert "primed silently: audio, other" in result.output


def test_first_run_stays_silent_when_the_api_clock_runs_ahead(
    tmp_path: Path, run_cli: RunCli
) -> None:
    ahead = Market(clock=lambda: datetime.now(UTC) + timedelta(seconds=120))
    server = StandInServer(ahead, cache_ttl=0).start()
    try:
        ahead.add_job(title="Posted before the search")
        config = tmp_path / "alerts.yaml"
        config.write_text(
            f"api_url: {server.url}\nstate_dir: {tmp_path / 'state'}\nsearches:\n  - name: all\n"
        )
        assert alerts_in(run_cli("once", "-c", config).stdout) == []
        ahead.add_job(title="Posted after")
        assert alerts_in(run_cli("once", "-c", config).stdout) == ["Posted after"]
    finally:
        server.stop()


def test_reordering_a_channel_list_keeps_what_each_url_is_owed(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    other = WebhookCollector()
    try:
        body = "retry_schedule: [0.2]\nchannels:\n  team: [{a}, {b}]\n"
        body += "searches:\n  - name: all\n    notify: [team]\n"
        config = write_config(body.format(a=webhook.url, b=other.url))
        run_cli("once", "-c", config)
        market.add_job(title="For both")
        owe_while_down(run_cli, config, webhook)
        assert len(other.received) == 1
        config = write_config(body.format(a=other.url, b=webhook.url))
        once_back_up(run_cli, config, webhook)
        assert len(webhook.received) == 1 and len(other.received) == 1
    finally:
        other.stop()


def test_two_configs_sharing_a_state_directory_both_keep_alerting(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    mine = write_config("searches:\n  - name: audio\n    category: Audio Annotation\n", "me.yaml")
    team = write_config("searches:\n  - name: rlhf\n    category: RLHF\n", "team.yaml")
    run_cli("once", "-c", mine)
    run_cli("once", "-c", team)
    market.add_job(title="Audio job", category="Audio Annotation")
    market.add_job(title="RLHF job", category="RLHF")
    assert alerts_in(run_cli("once", "-c", mine).stdout) == ["Audio job"]
    assert alerts_in(run_cli("once", "-c", team).stdout) == ["RLHF job"]


def test_deliveries_wait_while_the_change_feed_is_unreadable(
    market: Market, standin: StandInServer, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("searches:\n  - name: all\n")
    run_cli("once", "-c", config)
    market.add_job(title="Waits for the feed")
    standin.add_fault(Fault("status", status=503, path="/jobs/changes", count=4))
    held = run_cli("once", "-c", config)
    assert held.exit_code == 1
    assert alerts_in(held.stdout) == []
    assert "deliveries held (change feed unreadable)" in held.output
    assert alerts_in(run_cli("once", "-c", config).stdout) == ["Waits for the feed"]


def test_a_stopped_cycle_keeps_what_it_read_from_the_feed(
    market: Market, write_config: WriteConfig, state_dir: Path
) -> None:
    import threading

    config, record = load_config(write_config("searches:\n  - name: all\n")), Recorder()

    with Store.open(state_dir) as store, make_client(config) as client:
        run_once(config, client, store, record)
    job = market.add_job(title="Read, then stopped")
    stop = threading.Event()
    stop.set()  # SIGTERM arrived as the feed was read
    with Store.open(state_dir) as store, make_client(config) as client:
        report = run_once(config, client, store, record, stop=stop)
        assert report.stopped and report.requests == 1
    with Store.open(state_dir) as store, make_client(config) as client:
        assert job["id"] in store.events_of(config.owner)  # the feed moved on; event kept
        run_once(config, client, store, record)
    assert record.titles() == ["New OpenTrain job: Read, then stopped"]


def test_an_edited_job_waits_for_its_check_and_closed_ones_still_go(
    hooked: Path,
    market: Market,
    standin: StandInServer,
    run_cli: RunCli,
    webhook: WebhookCollector,
) -> None:
    config = hooked
    closed = market.add_job(title="Closed")
    edited = market.add_job(title="Edited")
    owe_while_down(run_cli, config, webhook)
    market.close_job(closed["id"])
    market.update_job(edited["id"], summary="now with more detail")
    standin.add_fault(Fault("status", status=503, path=f"/jobs/{edited['id']}", count=4))
    first = once_back_up(run_cli, config, webhook)
    assert webhook.received == []  # closed: withdrawn; edited: held, its check failed
    assert "1 withdrawn" in first.output
    run_cli("once", "-c", config)
    assert [item["title"] for item in webhook.received] == ["New OpenTrain job: Edited"]


def test_many_edited_jobs_are_all_checked_before_any_closed_one_is_sent(
    hooked: Path,
    market: Market,
    run_cli: RunCli,
    webhook: WebhookCollector,
) -> None:
    config = hooked
    jobs = [market.add_job(title=f"T{i:02d}") for i in range(12)]
    owe_while_down(run_cli, config, webhook)
    for job in jobs:
        market.update_job(job["id"], summary="edited")
    market.close_job(jobs[-1]["id"])
    market.update_job(jobs[-1]["id"], summary="edited after closing")
    webhook.up.set()
    for _ in range(3):
        time.sleep(0.3)
        run_cli("once", "-c", config)
    titles = sorted(str(item["title"]) for item in webhook.received)
    assert titles == [f"New OpenTrain job: T{i:02d}" for i in range(11)]


def test_an_answer_shows_an_edit_by_its_updated_at_with_a_second_of_slack() -> None:
    from alertd.models import Event
    from alertd.plan import is_fresh

    edit = Event("j", "UPDATED", NOW, NOW)
    assert is_fresh(Job(id="j", updated_at=NOW + timedelta(milliseconds=3)), edit, NOW)
    assert is_fresh(Job(id="j", updated_at=NOW - timedelta(milliseconds=500)), edit, NOW)
    assert not is_fresh(Job(id="j", updated_at=NOW - timedelta(minutes=2)), edit, NOW)
    # No updatedAt: an edited job's answer may be a cached one; a new job's URL cannot be.
    assert not is_fresh(Job(id="j"), edit, NOW)
    assert is_fresh(Job(id="j"), Event("j", "PUBLISHED", NOW, NOW), NOW)
    late = NOW + HOLD_BOUND + timedelta(seconds=1)
    assert is_fresh(Job(id="j", updated_at=NOW - timedelta(minutes=2)), edit, late)


def test_a_job_edited_again_and_again_is_held_at_most_the_bound(
    market: Market, write_config: WriteConfig, state_dir: Path
) -> None:
    config, send = load_config(write_config("searches:\n  - name: all\n")), Recorder()
    start = datetime.now(UTC)
    cycle_at(config, send, start)
    raw = market.add_job(title="Edited often")
    for minutes in (0, 4, 8, 9):  # an edit every few minutes; the API never bumps updatedAt
        market.update_job(raw["id"], summary=f"edit {minutes}")
        market.jobs[raw["id"]]["updatedAt"] = "2020-01-01T00:00:00.000Z"
        cycle_at(config, send, start + timedelta(minutes=minutes))
        assert send.titles() == [], minutes
    cycle_at(config, send, start + HOLD_BOUND + timedelta(minutes=1))
    assert send.titles() == ["New OpenTrain job: Edited often"]


@pytest.mark.parametrize("removed_through", ["relative", "absolute"])
def test_a_search_removed_and_re_added_starts_silent_however_the_file_is_named(
    market: Market,
    write_config: WriteConfig,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    removed_through: str,
) -> None:
    both = (
        "searches:\n  - name: audio\n    category: Audio Annotation\n"
        "  - name: other\n    category: RLHF\n"
    )
    write_config(both)
    monkeypatch.chdir(tmp_path)
    run_cli("once", "-c", "alerts.yaml")
    only_other = write_config("searches:\n  - name: other\n    category: RLHF\n")
    run_cli("once", "-c", "alerts.yaml" if removed_through == "relative" else only_other)
    market.add_job(title="Audio while removed", category="Audio Annotation")
    run_cli("once", "-c", "alerts.yaml")
    write_config(both)
    again = run_cli("once", "-c", "alerts.yaml")
    assert alerts_in(again.stdout) == []
    assert "primed silently: audio" in again.output


def test_a_permanent_failure_waits_the_longest_step_of_the_schedule(
    write_config: WriteConfig, market: Market, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    config = write_config(
        f"retry_schedule: [0.2, 1h]\nsearches:\n  - name: all\n    notify: ['{webhook.url}']\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="To a deleted webhook")
    webhook.down_status = 404  # the webhook was deleted: retrying soon will not help
    owe_while_down(run_cli, config, webhook)
    assert once_back_up(run_cli, config, webhook).exit_code == 0
    assert webhook.received == []  # not after 0.2 s, as a passing failure would be
    assert "1 owed" in run_cli("once", "-c", config).output


def test_a_burst_over_the_per_cycle_cap_is_one_summary_not_a_trickle(
    hooked: Path, market: Market, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    for i in range(3):
        market.add_job(title=f"Single {i}")
    run_cli("once", "-c", hooked)
    assert len(webhook.received) == 3  # under the cap: a message per job
    for i in range(25):
        market.add_job(title=f"Burst {i}")
    burst = run_cli("once", "-c", hooked)
    assert "0 owed" in burst.output
    (summary,) = webhook.received[3:]
    assert summary["title"].startswith("25 new OpenTrain jobs since ")
    assert all(f"Burst {i} " in summary["message"] for i in range(25))
    run_cli("once", "-c", hooked)
    assert len(webhook.received) == 4  # each job once


def test_a_hold_that_cannot_be_confirmed_is_released_after_the_bound(
    market: Market, write_config: WriteConfig, standin: StandInServer, state_dir: Path
) -> None:
    config, send = load_config(write_config("searches:\n  - name: all\n")), Recorder()
    send.up = False
    start = datetime.now(UTC)
    cycle_at(config, send, start)
    job = market.add_job(title="Edited, then unreadable")
    cycle_at(config, send, start)  # owed; the target is down
    market.update_job(job["id"], summary="edited")  # held until the job is read again...
    standin.add_fault(Fault("status", status=503, path=f"/jobs/{job['id']}", count=1000))
    send.up = True
    for minutes in (2, 5, 9, 11.9):  # ... which keeps failing; held from minute 2 on
        cycle_at(config, send, start + timedelta(minutes=minutes))
        assert send.titles() == [], minutes
    cycle_at(config, send, start + timedelta(minutes=2) + HOLD_BOUND + timedelta(seconds=1))
    assert send.titles() == ["New OpenTrain job: Edited, then unreadable"]


@pytest.mark.slow  # an end-to-end run: .ci/run runs it with -m slow
def test_a_slow_target_gets_its_alert_once(
    hooked: Path, market: Market, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    webhook.delay = 5.0  # records the post, answers after apprise's own 4 s timeout
    market.add_job(title="To a slow webhook")
    first = run_cli("once", "-c", hooked)
    assert first.exit_code == 0, first.output
    webhook.delay = 0.0
    time.sleep(0.3)  # past hooked's retry_schedule of 0.2 s
    run_cli("once", "-c", hooked)
    assert [item["title"] for item in webhook.received] == ["New OpenTrain job: To a slow webhook"]


def test_a_send_that_got_no_answer_in_time_is_retried_late_not_at_once(
    write_config: WriteConfig, market: Market, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    config = write_config(
        "send_timeout: 1s\nretry_schedule: [0.2, 1h]\n"
        f"searches:\n  - name: all\n    notify: ['{webhook.url}']\n"
    )
    run_cli("once", "-c", config)
    webhook.delay = 3.0
    market.add_job(title="Maybe delivered")
    first = run_cli("once", "-c", config)
    assert first.exit_code == 1
    assert "1 of them unanswered" in first.output and "may have arrived" in first.output
    webhook.delay = 0.0
    time.sleep(0.3)
    run_cli("once", "-c", config)
    assert len(webhook.received) == 1  # not sent again after 0.2 s: it waits the longest step
    assert "1 owed" in run_cli("once", "-c", config).output


def test_a_slow_refusal_is_not_taken_for_a_send_that_may_have_arrived(
    webhook: WebhookCollector,
) -> None:
    from alertd.deliver import send_apprise

    webhook.up.clear()  # the service refuses (503), just before the timeout
    webhook.delay = 0.95
    outcome = send_apprise(webhook.url, "t", "b", timeout=1.0)
    assert not outcome.accepted and not outcome.unknown, outcome.error


@pytest.mark.parametrize(
    ("body", "label"),
    [
        ("channels:\n  team: '{url}'\nsearches:\n  - name: all\n    notify: [team]\n", "team"),
        ("searches:\n  - name: all\n    notify: ['{url}']\n", "json://127.0.0.1"),
    ],
    ids=["channel", "inline-url"],
)
def test_a_target_fixed_after_refusing_for_good_is_tried_at_once(
    write_config: WriteConfig,
    market: Market,
    run_cli: RunCli,
    webhook: WebhookCollector,
    state_dir: Path,
    body: str,
    label: str,
) -> None:
    deleted = webhook.url.replace("/hook", "/deleted")
    config = write_config(body.format(url=deleted))
    run_cli("once", "-c", config)
    market.add_job(title="To a deleted webhook")
    webhook.down_status = 404
    owe_while_down(run_cli, config, webhook)
    status = run_cli("status", "-c", config)
    assert "refused for good" in status.output
    from alertd.daemon import Daemon
    from alertd.pipeline import CycleReport

    daemon = Daemon(load_config(config), lambda c, fresh: CycleReport())
    daemon.write_heartbeat(CycleReport(refusing=[label]))
    health = run_cli("health", "-c", config)
    assert health.exit_code == 1 and f"{label}" in health.output and "for good" in health.output
    webhook.up.set()
    write_config(body.format(url=webhook.url))  # the operator fixes the URL
    fixed = run_cli("once", "-c", config)
    assert fixed.exit_code == 0, fixed.output  # at once, not in an hour
    assert [item["title"] for item in webhook.received] == [
        "New OpenTrain job: To a deleted webhook"
    ]
    assert "0 owed" in fixed.output
    run_cli("once", "-c", config)
    assert len(webhook.received) == 1  # once


def test_a_target_fixed_on_the_service_side_is_tried_at_the_daemons_start_not_by_cron(
    write_config: WriteConfig,
    market: Market,
    run_cli: RunCli,
    webhook: WebhookCollector,
    state_dir: Path,
) -> None:
    config = write_config(f"searches:\n  - name: all\n    notify: ['{webhook.url}']\n")
    run_cli("once", "-c", config)
    market.add_job(title="To a revoked token")
    webhook.down_status = 401
    owe_while_down(run_cli, config, webhook)
    assert "refused for good" in run_cli("status", "-c", config).output
    webhook.up.set()  # the token is re-enabled on the service: the URL is the same
    assert run_cli("once", "-c", config).exit_code == 0  # cron's every few minutes:
    assert webhook.received == []  # the slow schedule holds
    loaded = load_config(config)
    with Store.open(state_dir) as store, make_client(loaded) as client:
        # What `alertd run` does in its first cycle (and the first after a SIGHUP).
        report = run_once(loaded, client, store, sender_for(30), retry_refused=True)
    assert report.sent == 1 and report.owed == 0
    assert [item["title"] for item in webhook.received] == ["New OpenTrain job: To a revoked token"]


def test_a_token_written_into_a_webhook_path_or_header_never_reaches_the_log(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    path_token, header_token = "pathT0ken9f8e7d6c5b", "headerS3cret42x"
    url = f"{webhook.url}/{path_token}?+Authorization=Bearer%20{header_token}"
    config = write_config(f"log_level: DEBUG\nsearches:\n  - name: all\n    notify: ['{url}']\n")
    run_cli("once", "-c", config)
    market.add_job(title="Sent with a token")

    results = [run_cli(command, "-c", config) for command in ("once", "status", "validate")]

    assert webhook.seen[-1] == (f"/hook/{path_token}", webhook.seen[-1][1])
    assert webhook.seen[-1][1]["Authorization"] == f"Bearer {header_token}"
    for result in results:
        assert result.exit_code == 0, result.output
        assert path_token not in result.output and header_token not in result.output
    # the lines that would carry them were written, masked; the rest of the URL stays readable
    assert "json://127.0.0.1" in results[0].output and "/hook/***" in results[0].output
    assert "Sent with a token" in webhook.messages()[0]
