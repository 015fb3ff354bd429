"""The store's fast row copy (``OutboxRow.but``) makes exactly what ``dataclasses.replace``
makes, and ``format_time``'s memory gives the text of the instant, whatever its zone."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from alertd.models import DeliveryStatus, OutboxRow, Pay, format_time

NOW = datetime(2026, 12, 2, 13, 30, 0, 123456, tzinfo=UTC)
ROW = OutboxRow("json:abc", "job-1", ("s1",), DeliveryStatus.PENDING, NOW, NOW)
CHANGES = {
    "target": "json:def",
    "job_id": "job-2",
    "searches": ("s1", "s2"),
    "status": DeliveryStatus.SENT,
    "created_at": NOW - timedelta(days=1),
    "next_attempt_at": NOW + timedelta(minutes=5),
    "attempts": 3,
    "last_error": "HTTP 500",
    "held_since": NOW,
    "done_at": NOW,
    "title": "Spanish audio",
    "refused_by": "digest",
    "change": "pay_raised",
    "old_pay": Pay(hourly_rate=10.0),
    "pay": Pay(hourly_rate=12.0),
}


def test_every_field_covered() -> None:
    assert set(CHANGES) == {f.name for f in dataclasses.fields(OutboxRow)}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_but_changes_one_field_like_replace(name: str) -> None:
    copied = ROW.but(**{name: CHANGES[name]})
    assert copied == dataclasses.replace(ROW, **{name: CHANGES[name]})
    assert getattr(copied, name) == CHANGES[name]
    assert ROW.target == "json:abc" and ROW.attempts == 0  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        copied.attempts = 9  # type: ignore[misc]


def test_but_refuses_a_field_rows_do_not_have() -> None:
    with pytest.raises(TypeError, match="no field atempts"):
        ROW.but(atempts=2)


def test_format_time_is_the_instant_in_any_zone() -> None:
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert format_time(NOW) == "2026-12-02T13:30:00.123Z"
    assert format_time(tokyo) == "2026-12-02T13:30:00.123Z"
    assert format_time(NOW + timedelta(milliseconds=1)) == "2026-12-02T13:30:00.124Z"
