"""What users count on, driven through ``alertd once`` against the stand-in API."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.models import format_time
from alertd.standin import Fault, StandInServer
from tests.conftest import RunCli, WriteConfig
from tests.webhook import WebhookCollector
from tests.world import alerts_in


def test_first_run_is_silent_then_new_jobs_alert_once(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    market.add_job(title="Old audio job", category="Audio Annotation")
    config = write_config("searches:\n  - name: audio\n    category: Audio Annotation\n")
    first = run_cli("once", "-c", config)
    assert first.exit_code == 0, first.output
    assert alerts_in(first.stdout) == []
    assert "primed silently: audio" in first.output

    market.add_job(title="Fresh audio job", category="Audio Annotation")
    market.add_job(title="Not audio", category="RLHF")
    second = run_cli("once", "-c", config)
    assert alerts_in(second.stdout) == ["Fresh audio job"]

    third = run_cli("once", "-c", config)
    assert alerts_in(third.stdout) == []


def test_notify_existing_opts_in_to_current_matches(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    market.add_job(title="Already there", category="RLHF")
    config = write_config(
        "searches:\n  - name: rlhf\n    category: RLHF\n    notify_existing: true\n"
    )
    assert alerts_in(run_cli("once", "-c", config).stdout) == ["Already there"]
    assert alerts_in(run_cli("once", "-c", config).stdout) == []


def test_adding_a_search_to_a_running_config_does_not_flood(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    for i in range(5):
        market.add_job(title=f"Spanish {i}", languages=["Spanish"])
    config = write_config("searches:\n  - name: audio\n    category: Audio Annotation\n")
    run_cli("once", "-c", config)
    config = write_config(
        "searches:\n  - name: audio\n    category: Audio Annotation\n"
        "  - name: spanish\n    language: Spanish\n"
    )
    result = run_cli("once", "-c", config)
    assert alerts_in(result.stdout) == []
    assert "primed silently: spanish" in result.output


def test_editing_a_search_re_primes_it_silently(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    market.add_job(title="German text", category="Text Annotation", languages=["German"])
    config = write_config("searches:\n  - name: mine\n    language: Spanish\n")
    run_cli("once", "-c", config)
    config = write_config("searches:\n  - name: mine\n    language: German\n")
    assert alerts_in(run_cli("once", "-c", config).stdout) == []


def test_one_alert_per_job_per_target_naming_every_search(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    config = write_config(
        f"channels:\n  hook: {webhook.url}\n"
        "searches:\n"
        "  - name: spanish-audio\n    category: Audio Annotation\n    language: Spanish\n"
        "    notify: [hook]\n"
        "  - name: any-audio\n    category: Audio Annotation\n    notify: [hook]\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="Spanish podcast", category="Audio Annotation", languages=["Spanish"])
    result = run_cli("once", "-c", config)
    assert result.exit_code == 0, result.output
    assert len(webhook.received) == 1
    (message,) = webhook.messages()
    assert "Matched: spanish-audio, any-audio" in message
    assert webhook.received[0]["title"] == "New OpenTrain job: Spanish podcast"


def test_jobs_that_are_not_open_never_alert(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("searches:\n  - name: all\n")
    run_cli("once", "-c", config)
    past = format_time(datetime.now(UTC) - timedelta(days=1))
    market.add_job(title="Expired", validThrough=past)
    closing = market.add_job(title="Closed before we looked")
    market.close_job(closing["id"])
    market.add_job(title="Open one")
    assert alerts_in(run_cli("once", "-c", config).stdout) == ["Open one"]


def test_target_down_then_up_gets_the_alert_later_and_others_once(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    config = write_config(
        "retry_schedule: [1]\n"
        f"searches:\n  - name: all\n    notify: ['{webhook.url}']\n"
        "  - name: printed\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="Owed job")
    webhook.up.clear()
    down = run_cli("once", "-c", config)
    assert down.exit_code == 1
    assert alerts_in(down.stdout) == ["Owed job"]  # the stdout target accepted it
    assert "did not accept job" in down.output
    assert webhook.received == []

    webhook.up.set()
    time.sleep(1.1)
    up = run_cli("once", "-c", config)
    assert up.exit_code == 0, up.output
    assert alerts_in(up.stdout) == []  # not sent again where it was accepted
    assert [m.splitlines()[0] for m in webhook.messages()] == ["Owed job — " + _company(market)]
    assert alerts_in(run_cli("once", "-c", config).stdout) == []
    assert len(webhook.received) == 1


def _company(market: Market) -> str:
    return next(iter(market.jobs.values()))["companyName"]


def test_a_failing_search_does_not_stop_the_others(
    market: Market, standin: StandInServer, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config(
        "searches:\n  - name: broken\n    q: broken\n  - name: fine\n    q: fine\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="A fine job")
    standin.add_fault(Fault("nonjson", path="/jobs?q=broken", count=100))
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1
    assert alerts_in(result.stdout) == ["A fine job"]
    assert "search 'broken' skipped this cycle" in result.output
    assert "1 failed: broken" in result.output


@pytest.mark.slow
def test_429_storm_slows_down_without_losing_anything(
    market: Market, standin: StandInServer, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("searches:\n  - name: all\n")
    run_cli("once", "-c", config)
    for i in range(3):
        market.add_job(title=f"Storm job {i}")
    standin.add_fault(Fault("ratelimit", count=3, retry_after="1"))
    started = time.monotonic()
    result = run_cli("once", "-c", config)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 2.9
    assert sorted(alerts_in(result.stdout)) == ["Storm job 0", "Storm job 1", "Storm job 2"]


def test_malformed_jobs_are_skipped_with_a_warning(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("searches:\n  - name: all\n")
    run_cli("once", "-c", config)
    market.add_job(title="Pay is odd", pay={"paymentType": "PAY_PER_HOUR", "hourlyMin": "lots"})
    market.add_raw({"title": "No id", "status": "OPEN", "datePosted": "2099-01-01"}, "noid")
    result = run_cli("once", "-c", config)
    assert result.exit_code == 0
    assert alerts_in(result.stdout) == ["Pay is odd"]
    assert "Pay: not stated" in result.stdout
    assert "malformed pay dropped" in result.output
    assert "1 malformed job skipped" in result.output


def test_dry_run_sends_and_records_nothing(
    market: Market, write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    config = write_config(f"searches:\n  - name: all\n    notify: ['{webhook.url}']\n")
    run_cli("once", "-c", config)
    market.add_job(title="Try me")
    dry = run_cli("once", "-c", config, "--dry-run")
    assert dry.exit_code == 0
    assert "[dry run] would send to json://" in dry.stdout
    assert "Try me" in dry.stdout
    assert webhook.received == []
    run_cli("once", "-c", config)
    assert len(webhook.received) == 1


def test_state_is_utc_and_secret_free(
    market: Market,
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    state_dir: Path,
) -> None:
    config = write_config(
        f"timezone: Asia/Tokyo\nsearches:\n  - name: all\n    notify: ['{webhook.url}']\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="Tokyo time", datePosted="2026-06-12T08:00:00.000Z")
    run_cli("once", "-c", config)
    assert "Posted: 12 Jun 2026, 17:00 JST" in webhook.messages()[0]
    state = {p.name: p.read_text() for p in state_dir.iterdir() if p.suffix != ".lock"}
    row = next(iter(json.loads(state["done.json"])["rows"].values()))
    assert row["created_at"].endswith("Z") and row["done_at"].endswith("Z")
    assert row["status"] == "sent" and row["title"] == "Tokyo time"
    assert "summary" not in row  # delivered rows stay small
    assert str(webhook.server_address[1]) not in json.dumps(state)


def test_preview_lists_matches_and_records_nothing(
    market: Market, write_config: WriteConfig, run_cli: RunCli, state_dir: Path
) -> None:
    market.add_job(title="Audio one", category="Audio Annotation")
    market.add_job(title="Other", category="RLHF")
    config = write_config("searches:\n  - name: audio\n    category: Audio Annotation\n")
    result = run_cli("preview", "-c", config, "audio")
    assert result.exit_code == 0, result.output
    assert "Audio one" in result.stdout and "Other" not in result.stdout
    assert "1 open jobs match 'audio' now" in result.stdout
    assert not state_dir.exists()
    missing = run_cli("preview", "-c", config, "audi")
    assert missing.exit_code == 2
    assert "did you mean 'audio'" in missing.output


def test_validate_online_suggests_the_nearest_facet(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    market.add_job(category="Audio Annotation")
    good = write_config("searches:\n  - name: a\n    category: Audio Annotation\n")
    assert run_cli("validate", "-c", good, "--online").exit_code == 0
    bad = write_config("searches:\n  - name: a\n\n    category: Audio Anotation\n")
    result = run_cli("validate", "-c", bad, "--online")
    assert result.exit_code == 2
    assert (
        f"{bad}:8: searches[0].category: 'Audio Anotation' is not a category on OpenTrain now"
        " — did you mean 'Audio Annotation'?" in result.output
    )


def test_facets_command_prints_values_with_counts(
    market: Market, standin: StandInServer, run_cli: RunCli
) -> None:
    market.add_job(category="Audio Annotation", languages=["Spanish"])
    result = run_cli("facets", "--api-url", standin.url)
    assert result.exit_code == 0, result.output
    assert "  Audio Annotation (1)" in result.stdout
    assert "  Spanish (1)" in result.stdout


def test_test_notify_reports_each_target(
    write_config: WriteConfig, run_cli: RunCli, webhook: WebhookCollector
) -> None:
    config = write_config(
        f"channels:\n  good: {webhook.url}\n  dead: json://127.0.0.1:9/nothing-listens\n"
        "searches:\n  - name: a\n    notify: [good, dead]\n"
    )
    result = run_cli("test-notify", "-c", config)
    assert result.exit_code == 1
    assert "ok      good: accepted" in result.stdout
    assert "FAILED  dead:" in result.stdout
    assert len(webhook.received) == 1
    only = run_cli("test-notify", "-c", config, "good")
    assert only.exit_code == 0
    assert len(webhook.received) == 2
