"""The pace a target wants: at once, in batches, in digests, never in quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from alertd.models import Alert, Job, Pace
from alertd.plan import gathered_until, plan_messages, quiet_end, release_at

BERLIN = ZoneInfo("Europe/Berlin")
# 27 Nov 2026, 10:00 in Berlin (UTC+1)
NOON = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
INSTANT = Pace()
BATCH = Pace(batch=600)
DIGEST = Pace(digest=(time(8, 0), time(18, 0)))
QUIET = Pace(quiet=(time(22, 0), time(7, 0)))


def at(hour: int, minute: int = 0, day: int = 27) -> datetime:
    """A Berlin wall-clock time on a day of November 2026, as UTC."""
    return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def alerts(target: str, *created: datetime) -> list[Alert]:
    return [Alert(target, Job(id=f"{target}-{i}"), ("s",), 0, c) for i, c in enumerate(created)]


def test_a_batch_goes_out_its_length_after_the_first_alert() -> None:
    assert gathered_until(BATCH, at(10, 0), BERLIN) == at(10, 10)


@pytest.mark.parametrize(
    ("oldest", "released"),
    [
        (at(7, 59), at(8, 0)),
        (at(8, 0), at(8, 0)),
        (at(8, 1), at(18, 0)),
        (at(18, 30), at(8, 0, day=28)),
    ],
)
def test_a_digest_goes_out_at_the_next_digest_time(oldest: datetime, released: datetime) -> None:
    assert gathered_until(DIGEST, oldest, BERLIN) == released


def test_a_digest_time_is_wall_clock_time_across_a_clock_change() -> None:
    # 25 Oct 2026: Berlin goes from UTC+2 to UTC+1; 08:00 is 07:00 UTC after it
    late = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)
    assert gathered_until(DIGEST, late, BERLIN) == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "ends"),
    [
        (at(21, 59), None),
        (at(22, 0), at(7, 0, day=28)),
        (at(3, 0), at(7, 0)),
        (at(7, 0), None),
        (at(12, 0), None),
    ],
)
def test_quiet_hours_across_midnight(now: datetime, ends: datetime | None) -> None:
    assert quiet_end(QUIET, now, BERLIN) == ends


def test_quiet_hours_within_a_day() -> None:
    lunch = Pace(quiet=(time(12, 0), time(13, 30)))
    assert quiet_end(lunch, at(12, 15), BERLIN) == at(13, 30)
    assert quiet_end(lunch, at(13, 30), BERLIN) is None


def test_a_digest_inside_quiet_hours_waits_for_their_end() -> None:
    pace = Pace(digest=(time(6, 0),), quiet=(time(22, 0), time(7, 0)))
    assert release_at(pace, at(23, 0, day=26), BERLIN) == at(7, 0)


def test_an_instant_target_gets_a_message_per_job_oldest_first() -> None:
    due = alerts("t", at(10, 5), at(10, 1), at(10, 3))
    messages, expired = plan_messages(due, {"t": INSTANT}, at(10, 6), BERLIN)
    assert [[a.created_at for a in m] for m in messages] == [[at(10, 1)], [at(10, 3)], [at(10, 5)]]
    assert expired == []


def test_a_burst_over_the_cap_is_one_summary_not_a_trickle() -> None:
    due = alerts("t", *(at(10, 0) + timedelta(seconds=i) for i in range(21)))
    messages, _ = plan_messages(due, {"t": INSTANT}, at(10, 1), BERLIN, cap=20)
    assert [len(m) for m in messages] == [21]


def test_a_batch_waits_then_goes_as_one_message_without_holding_up_others() -> None:
    due = alerts("batched", at(10, 0), at(10, 7)) + alerts("instant", at(10, 7))
    paces = {"batched": BATCH, "instant": INSTANT}
    early, _ = plan_messages(due, paces, at(10, 8), BERLIN)
    assert [[a.target_key for a in m] for m in early] == [["instant"]]
    later, _ = plan_messages(due, paces, at(10, 10), BERLIN)
    assert [[a.job.id for a in m] for m in later] == [["batched-0", "batched-1"], ["instant-0"]]


def test_quiet_hours_hold_then_release_as_one_message() -> None:
    due = alerts("t", at(23, 0, day=26), at(2, 0), at(6, 59))
    held, _ = plan_messages(due, {"t": QUIET}, at(6, 59), BERLIN)
    assert held == []
    morning, _ = plan_messages(due, {"t": QUIET}, at(7, 0), BERLIN)
    assert [len(m) for m in morning] == [3]


def test_an_expired_job_is_withdrawn_not_gathered() -> None:
    gone = Alert("t", Job(id="old", valid_through=at(9, 0)), ("s",), 0, at(8, 0))
    messages, expired = plan_messages([gone], {"t": BATCH}, at(10, 0), BERLIN)
    assert messages == [] and expired == [gone]
