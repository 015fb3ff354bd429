"""Members' searches served by a real cycle through ``MemberSearches``: a confirmed
member's alert mail arrives with both unsubscribe headers, the one-click POST on the
page stops it, a paused search sends nothing, a feed member's search runs without mail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alertd.market import Market
from alertd.members import SearchDraft
from alertd.standin import StandInServer
from tests.pageworld import PUBLIC, PageWorld, member_config, member_cycle, page_world


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[PageWorld]:
    with page_world(standin, state_dir) as world:
        yield world


def test_a_member_alert_carries_both_unsubscribe_headers_and_one_click_stops_it(
    world: PageWorld, market: Market
) -> None:
    _, token = world.members.start_signup("ana@example.org", SearchDraft(title="Audio", q="audio"))
    world.members.confirm(token, limit=10)
    reader = world.members.add_feed_member(SearchDraft(title="Feed", q="audio")).member
    config = member_config(world)
    member_cycle(world, config)  # primes: a new search starts silent
    market.add_job(title="Spanish audio transcription")
    member_cycle(world, config)
    [mail] = world.mails_to("ana@example.org")
    unsubscribe = str(mail.message["List-Unsubscribe"]).strip().strip("<>")
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe.startswith(f"{PUBLIC}/u/")
    assert mail.message["List-Id"].endswith(".alerts.example.org>")
    assert "Spanish audio transcription" in "".join(mail.text_parts())
    feed = world.local(world.members.feed_url(reader.id, PUBLIC))  # the feed member's
    with httpx.Client(base_url=world.server.url) as client:
        atom = client.get(feed)
        again = client.get(feed, headers={"If-None-Match": atom.headers["etag"]})
    assert atom.status_code == 200 and "Spanish audio transcription" in atom.text
    assert again.status_code == 304

    with httpx.Client(base_url=world.server.url) as provider:  # no cookie, no CSRF token
        answer = provider.post(world.local(unsubscribe), data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    market.add_job(title="More audio work")
    member_cycle(world, config)
    assert len(world.mails_to("ana@example.org", count=2, wait=1)) == 1
    assert [m.feed for m, _ in world.members.active()] == [True]


def test_a_paused_search_sends_nothing(world: PageWorld, market: Market) -> None:
    _, token = world.members.start_signup("bo@example.org", SearchDraft(title="A", q="audio"))
    confirmed = world.members.confirm(token, limit=10)
    config = member_config(world)
    member_cycle(world, config)
    world.members.set_paused(confirmed.search.id, True)
    market.add_job(title="Audio job while paused")
    member_cycle(world, config)
    assert world.mails_to("bo@example.org", wait=1) == []
