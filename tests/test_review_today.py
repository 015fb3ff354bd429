"""Found in a hostile review of the changes since bb6c1ed: each test a bug it fixed."""

from __future__ import annotations

import errno
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import alertd.members
from alertd.members import JOURNAL_FILE, Members, SearchDraft


def _files_holding(state_dir: Path, text: str) -> list[str]:
    needle = text.encode()
    return sorted(p.name for p in state_dir.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_a_full_disk_when_an_expired_sign_up_is_dropped_fails_no_one_s_own_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk has room for a journal line, not for a 7 MB snapshot: the member whose
    write dropped someone's expired sign-up was told it failed, although it was written
    (a retry made the search twice); and the expired address then stayed on disk until
    a thousand changes later."""
    members = Members.open(tmp_path)
    first = members.add_feed_member(SearchDraft(title="first"))
    monkeypatch.setattr(alertd.members, "CONFIRM_TTL", timedelta(seconds=-1))
    members.start_signup("cy@example.org", SearchDraft(title="c"))
    assert _files_holding(tmp_path, "cy@example.org") == [JOURNAL_FILE]

    def full_disk(path: Path, text: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(alertd.members, "write_atomically", full_disk)
    second = members.add_search(first.member.id, SearchDraft(title="second"), limit=5)
    monkeypatch.undo()  # room again

    assert [s.title for s in members.searches_of(first.member.id)] == ["first", "second"]
    members.set_paused(second.id, True)  # the next write takes the address off the disk
    assert _files_holding(tmp_path, "cy@example.org") == []
    reopened = Members.open(tmp_path)
    assert [(s.title, s.paused) for s in reopened.searches_of(first.member.id)] == [
        ("first", False),
        ("second", True),
    ]


def test_format_time_tells_apart_the_two_same_wall_clock_times_of_a_night_the_clocks_go_back() -> None:
    """format_time's cache took the second 01:30 (fold=1) for the first: same datetime
    by == and hash within one zone, but an hour later."""
    from alertd.models import format_time

    new_york = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=new_york)
    second = first.replace(fold=1)
    assert format_time(first) == "2026-11-01T05:30:00.000Z"
    assert format_time(second) == "2026-11-01T06:30:00.000Z"
    assert format_time(datetime(2026, 11, 1, 6, 30, tzinfo=ZoneInfo("UTC"))) == (
        "2026-11-01T06:30:00.000Z"
    )
