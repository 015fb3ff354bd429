"""The members table without HTTP: writes from many threads and two processes' worth of
instances lose nothing, ``version`` moves on every write, a deleted member leaves no
trace, the rate limiter's window, and no address in the log."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from alertd.community.rules import RateLimiter
from alertd.members import MEMBERS_FILE, Members, SearchDraft
from alertd.standin import StandInServer
from tests.pageworld import confirm_by_mail, page_world, sign_up


def test_concurrent_writers_lose_no_signup(tmp_path: Path) -> None:
    first, second = Members.open(tmp_path), Members.open(tmp_path)  # as two processes

    def sign_ups(members: Members, n: int) -> None:
        for i in range(n):
            members.add_feed_member(SearchDraft(title=f"t{i}"))

    threads = [threading.Thread(target=sign_ups, args=(m, 20)) for m in (first, second) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(first.active()) == len(second.active()) == 80
    assert len(Members.open(tmp_path).active()) == 80
    assert first.version() == second.version() == 80


def test_version_moves_on_every_write_and_active_follows(tmp_path: Path) -> None:
    members = Members.open(tmp_path)
    before = members.version()
    confirmed = members.add_feed_member(SearchDraft(title="a"))
    assert members.version() == before + 1
    members.set_paused(confirmed.search.id, True)
    assert members.version() == before + 2 and members.active() == []
    members.set_paused(confirmed.search.id, False)
    assert [s.id for _, s in members.active()] == [confirmed.search.id]


def test_a_deleted_member_leaves_no_address_search_or_link(tmp_path: Path) -> None:
    members = Members.open(tmp_path)
    _, token = members.start_signup("ana@example.org", SearchDraft(title="a"))
    confirmed = members.confirm(token, limit=10)
    manage = members.manage_token(confirmed.member.id)
    assert members.remove_member(confirmed.member.id)
    text = (tmp_path / MEMBERS_FILE).read_text()
    assert "ana@example.org" not in text and confirmed.search.id not in text
    assert members.member_for_manage(manage) is None
    assert members.active() == []


def test_a_confirmation_link_works_once(tmp_path: Path) -> None:
    members = Members.open(tmp_path)
    _, token = members.start_signup("bo@example.org", SearchDraft(title="a"))
    members.confirm(token, limit=10)
    with pytest.raises(Exception, match="unknown, used or expired"):
        members.confirm(token, limit=10)
    assert len(members.active()) == 1


def test_the_rate_limiter_lets_one_in_once_the_window_passed() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 60.0, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")
    now[0] = 61.0
    assert limiter.allow("a")
    small = RateLimiter(1, 60.0, max_keys=3, clock=lambda: now[0])
    for key in "wxyz":
        small.allow(key)
    assert small.allow("w")  # forgotten, never refused for good


def test_no_address_reaches_the_log(
    standin: StandInServer, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with page_world(standin, state_dir) as world, world.client() as client:
        sign_up(world, client, "secret-person@example.org")
        confirm_by_mail(world, client, "secret-person@example.org")
        sign_up(world, client, "bad@@example.org")
    assert world.members.active()
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # the SMTP server's
    assert ours and not [r for r in ours if "secret-person" in r.getMessage()]
