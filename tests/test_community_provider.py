"""A member's feed is theirs like their mail: its owed alerts end when their searches do
(claimed), its messages are sent only while a search is wanted, and it has no daily cap
(the rest of a capped day is read there)."""

from __future__ import annotations

from pathlib import Path

from alertd.community.config import CommunitySpec
from alertd.community.provider import MemberSearches
from alertd.members import Members, SearchDraft
from alertd.subscriptions import Subscriptions

SPEC = CommunitySpec(
    name="Guild",
    public_url="https://alerts.example.org",
    mail="mailto://127.0.0.1:9?from=alerts@example.org",
)


def test_a_members_feed_is_claimed_linked_while_wanted_and_never_capped(tmp_path: Path) -> None:
    members = Members.open(tmp_path)
    _, token = members.start_signup("ana@example.org", SearchDraft(title="Audio", q="audio"))
    confirmed = members.confirm(token, limit=10)
    provider = MemberSearches(members, SPEC)
    subs = Subscriptions.gather([provider])
    (search,) = subs.searches
    feed = next(t.key for t in search.targets if t.feed_key is not None)
    mail = next(t.key for t in search.targets if t.feed_key is None)
    assert feed == f"feed:member:{confirmed.member.id}"
    assert subs.claimed(feed) and subs.claimed(mail)
    assert subs.links(feed, [search.name]) is not None  # delivered while wanted
    assert subs.cap(feed) is None and subs.cap(mail) is not None
    members.unsubscribe(confirmed.search.id)
    assert subs.links(feed, [search.name]) is None  # withdrawn at the moment of sending
