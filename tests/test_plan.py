"""The cycle's decisions, tested as the pure functions they are: no server, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alertd import plan
from alertd.config import load_config
from alertd.models import (
    DeliveryStatus,
    Event,
    Job,
    OutboxRow,
    Pay,
    QueryState,
    SavedSearch,
)
from alertd.plan import Verdict

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
AUDIO = Job(
    id="a",
    status="OPEN",
    category="Audio Annotation",
    languages=("Spanish", "English"),
    countries=("US",),
    pay=Pay(payment_type="PAY_PER_HOUR"),
)


@pytest.mark.parametrize(
    ("query", "verdict"),
    [
        ({}, Verdict.MATCH),
        ({"category": "Audio Annotation", "language": "Spanish"}, Verdict.MATCH),
        ({"country": "US", "payType": "PAY_PER_HOUR"}, Verdict.MATCH),
        ({"category": "RLHF"}, Verdict.NO_MATCH),
        ({"language": "German"}, Verdict.NO_MATCH),
        ({"country": "DE"}, Verdict.NO_MATCH),
        ({"payType": "FIXED_PRICE"}, Verdict.NO_MATCH),
        ({"category": "audio annotation"}, Verdict.ASK),  # only case differs: the API decides
        ({"q": "podcast"}, Verdict.ASK),  # free text is the API's
        ({"q": "podcast", "category": "RLHF"}, Verdict.NO_MATCH),  # ...unless a filter rules out
    ],
)
def test_judge_decides_only_what_the_exact_filters_prove(
    query: dict[str, str], verdict: Verdict
) -> None:
    assert plan.judge(AUDIO, query) is verdict


def test_judge_leaves_missing_fields_to_the_api_and_reads_no_countries_as_anywhere() -> None:
    bare = Job(id="b", status="OPEN")
    for query in ({"category": "RLHF"}, {"language": "Hindi"}, {"payType": "FIXED_PRICE"}):
        assert plan.judge(bare, query) is Verdict.ASK, query
    assert plan.judge(bare, {"country": "DE"}) is Verdict.MATCH  # empty countries: no limit


def test_distinct_queries_are_grouped_whatever_the_search_names() -> None:
    searches = [
        SavedSearch(name="a", category="RLHF"),
        SavedSearch(name="b", category="RLHF"),
        SavedSearch(name="c", category="RLHF", language="Hindi"),
    ]
    groups = plan.group_queries(searches)
    assert [[s.name for s in q.searches] for q in groups.values()] == [["a", "b"], ["c"]]


def test_merge_events_keeps_the_latest_and_a_closure_resolves_at_once() -> None:
    earlier = NOW - timedelta(minutes=5)
    pending = {"x": Event("x", "PUBLISHED", earlier, earlier)}
    changes = {
        "x": ("UPDATED", NOW),
        "y": ("CLOSED", NOW),
        "z": ("PUBLISHED", NOW),
        "w": ("SOMETHING_NEW", NOW),
    }
    events, closed = plan.merge_events(pending, changes, NOW)
    assert events["x"] == Event("x", "UPDATED", NOW, earlier)  # noticed when first seen
    assert set(events) == {"x", "z"} and closed == {"y": NOW}
    again, _ = plan.merge_events(events, {"x": ("CLOSED", NOW)}, NOW)
    assert set(again) == {"z"}


def test_a_page_answers_for_an_event_only_if_generated_at_or_after_it() -> None:
    owed = plan.owe_answer(None, NOW)
    assert plan.answers(owed, NOW - timedelta(seconds=1)).owed_since == NOW
    assert plan.answers(owed, NOW).owed_since is None
    later = plan.owe_answer(owed, NOW + timedelta(minutes=1))
    assert later.owed_since == NOW + timedelta(minutes=1)  # the latest event counts


def test_a_closed_job_on_a_page_from_before_its_closure_is_not_listed() -> None:
    closed = {"x": NOW}
    assert plan.is_listed_stale("x", closed, NOW - timedelta(minutes=30))
    assert not plan.is_listed_stale("x", closed, NOW + timedelta(seconds=1))  # reopened
    assert not plan.is_listed_stale("y", closed, None)
    assert plan.forgettable(closed, NOW + plan.CACHE_HORIZON) == []
    assert plan.forgettable(closed, NOW + plan.CACHE_HORIZON + timedelta(seconds=1)) == ["x"]


def test_the_full_refresh_is_spread_oldest_first() -> None:
    states: dict[str, QueryState | None] = {
        f"q{i}": QueryState(NOW - timedelta(hours=7, minutes=i)) for i in range(100)
    }
    states["fresh"] = QueryState(NOW)
    share = plan.plan_refresh(states, NOW, every=6 * 3600, poll_interval=600)
    assert share == ["q99", "q98", "q97"]  # ceil(101 × 600 / 21600) = 3 a cycle
    assert "fresh" not in plan.plan_refresh(states, NOW, every=6 * 3600, poll_interval=10**6)


def test_priming_waits_for_a_page_from_after_the_search_began() -> None:
    old = Job(id="old", date_posted=NOW - timedelta(days=1))
    new = Job(id="new", date_posted=NOW + timedelta(seconds=5))
    assert plan.split_priming([old, new], NOW, NOW - timedelta(minutes=3)) is None
    assert plan.split_priming([old, new], NOW, NOW + timedelta(seconds=6)) == ([old], [new])


def test_retries_follow_the_schedule_and_a_permanent_failure_waits_the_longest() -> None:
    schedule = (60.0, 300.0, 1800.0)
    assert [plan.retry_delay(schedule, n) for n in (1, 2, 3, 4, 9)] == [60, 300, 1800, 1800, 1800]
    assert plan.retry_delay(schedule, 1, permanent=True) == 1800


def test_a_hold_is_released_once_it_is_overdue() -> None:
    def row(job: str, since: datetime | None) -> OutboxRow:
        status = DeliveryStatus.HELD if since else DeliveryStatus.PENDING
        return OutboxRow("t", job, ("s",), status, NOW, NOW, held_since=since)

    rows = [row("a", NOW - plan.HOLD_BOUND - timedelta(seconds=1)), row("b", NOW), row("c", None)]
    assert plan.overdue_holds(rows, NOW) == ["a"]


def test_capacity_says_when_a_full_refresh_cannot_keep_up() -> None:
    text, too_slow = plan.describe_capacity(3000, 60, 6 * 3600)
    assert text.startswith("3,000 distinct queries at 60/min: a full refresh")
    assert "takes 50 min" in text and not too_slow
    assert plan.describe_capacity(3000, 60, 1800)[1]
    assert plan.cycle_budget(60, 300) == 300 and plan.cycle_budget(60, 10) == 60


def test_a_permanent_failure_backs_off_doubling_up_to_a_day() -> None:
    schedule = (60.0, 300.0, 3600.0)
    delays = [plan.retry_delay(schedule, n, permanent=True) for n in range(1, 8)]
    assert delays == [3600, 7200, 14400, 28800, 57600, 86400, 86400]


def test_the_default_retry_schedule_is_1m_5m_30m_then_hourly_forever(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nsearches:\n  - name: s\n")
    schedule = load_config(path).retry_schedule
    delays = [plan.retry_delay(schedule, n) for n in (1, 2, 3, 4, 5, 50)]
    assert delays == [60, 300, 1800, 3600, 3600, 3600]


def test_the_numbers_the_readme_gives() -> None:
    from alertd.models import Alert
    from alertd.pipeline import KEEP_DONE

    assert timedelta(minutes=65) == plan.CACHE_HORIZON  # closures are remembered 65 minutes
    assert timedelta(minutes=10) == plan.HOLD_BOUND  # an edited job is held at most 10
    assert timedelta(days=180) == KEEP_DONE  # delivered rows are kept 180 days

    def due(count: int) -> list[Alert]:
        return [Alert("t", Job(id=f"j{i}"), ("s",), 0, NOW) for i in range(count)]

    twenty, _ = plan.plan_messages(due(20), {}, NOW, UTC)
    assert [len(m) for m in twenty] == [1] * 20  # at most 20 to a target, a message each
    (burst,), _ = plan.plan_messages(due(21), {}, NOW, UTC)
    assert len(burst) == 21  # a bigger burst is one summary message
