"""``MemberSearches``: the members table as a provider of saved searches for the cycle
(``alertd.subscriptions``), with each member's links and daily cap.

A member's search is ``member:<search id>`` (a name the YAML may not use), owned by
``MEMBERS_OWNER``. Its target is the member's address through the operator's
``community.mail``, one per pace: ``member:<member id>:now`` for "as it happens",
``member:<member id>:daily-HH`` for a daily digest at that hour (in the config's time
zone). Every member's search also writes the member's personal Atom feed
(``feed:member:<member id>``, ``alertd.feeds``): all of it, never capped, so a summary's
"+N more" and a capped day are read there. The searches are built again only when the
table's ``version`` moved.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import time
from functools import lru_cache
from urllib.parse import SplitResult, parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

from alertd.community.config import CommunitySpec
from alertd.members import Member, Members, MemberSearch, TokenError
from alertd.models import FEED_PREFIX, Pace, SavedSearch, Target
from alertd.render import Links
from alertd.subscriptions import MEMBER_PREFIX, MEMBERS_OWNER

TARGET_PREFIX = "member:"  # a member's target key: member:<member id>:<pace>
CHAT_SCHEME = "alertd-telegram://"  # a member's chat with the bot: alertd-telegram://<chat id>


def address_url(operator_url: str, to: str) -> str:
    """The operator's mail URL with the member's address as its one ``to=``."""
    parts, query = _operator_parts(operator_url)
    to_part = f"to={quote_plus(to, safe='')}"  # as urlencode writes it
    return urlunsplit(parts._replace(query=f"{query}&{to_part}" if query else to_part))


@lru_cache(maxsize=4)
def _operator_parts(operator_url: str) -> tuple[SplitResult, str]:
    """The operator's URL split, and its query without any ``to=``, encoded: parsed once
    for the 10,000 members' targets built after a restart or a change on the page, not
    once each (half of that build's time)."""
    parts = urlsplit(operator_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "to"]
    return parts, urlencode(query)


def _paced(search: MemberSearch, instant: str, daily: str) -> tuple[str, Pace]:
    """A member's target key's last part and its pace: ``instant``, or ``daily-HH`` with
    a digest at that hour (a digest is a target of its own)."""
    if search.pace == "daily":
        hour = search.digest_hour or 0
        return f"{daily}-{hour:02d}", Pace(digest=(time(hour, 0),))
    return instant, Pace()


def target_for(member: Member, search: MemberSearch, mail: str | None) -> Target | None:
    """Where a member's search sends (None: a feed-only member, or no mail server)."""
    if member.email is None or mail is None:
        return None
    key, pace = _paced(search, "now", "daily")
    return Target(
        key=f"{TARGET_PREFIX}{member.id}:{key}",
        label=f"member {member.id}",  # never the address: labels reach the log
        url=address_url(mail, member.email),
        pace=pace,
    )


def chat_target(member: Member, search: MemberSearch, chat_id: int) -> Target:
    """A member's search's target in their chat with the community bot
    (``alertd.telegram.send``): ``member:<id>:telegram``, or ``…:telegram-daily-HH``."""
    key, pace = _paced(search, "telegram", "telegram-daily")
    return Target(
        key=f"{TARGET_PREFIX}{member.id}:{key}",
        label=f"member {member.id} on Telegram",
        url=f"{CHAT_SCHEME}{chat_id}",
        pace=pace,
    )


def saved_search(
    member: Member, search: MemberSearch, mail: str | None, chat_id: int | None = None
) -> SavedSearch:
    """A member's search as the cycle serves it: the same planner, filters and dedup as
    an operator's; it starts silent like any new search. ``chat_id``: the member's chat
    with the community bot, when it has one."""
    target = target_for(member, search, mail)
    feed = Target.feed(f"member:{member.id}", f"member {member.id}'s feed")
    chat = () if chat_id is None else (chat_target(member, search, chat_id),)
    return SavedSearch(
        name=f"{MEMBER_PREFIX}{search.id}",
        title=search.title,
        q=search.q,
        category=search.category,
        language=search.language,
        country=search.country,
        pay_type=search.pay_type,
        targets=(*chat, feed) if target is None else (target, *chat, feed),
        filters=search.filters,
        source=MEMBERS_OWNER,
    )


def _member_of(target: str) -> str | None:
    """The member a target is theirs: their mail (``member:<id>:<pace>``) or their feed
    (``feed:member:<id>``); None for anyone else's."""
    key = target.removeprefix(FEED_PREFIX)
    if not key.startswith(TARGET_PREFIX):
        return None
    member_id = key[len(TARGET_PREFIX) :].partition(":")[0]
    return member_id or None


# A member's search as last built: from what (member, search, chat), and what it made.
Made = tuple[Member, MemberSearch, int | None, SavedSearch]


class MemberSearches:
    """The members' searches for ``alertd.subscriptions.Subscriptions.gather``."""

    owner = MEMBERS_OWNER
    # An unsubscribed member is owed nothing more, by mail or in their feed.
    claims = (TARGET_PREFIX, f"{FEED_PREFIX}{TARGET_PREFIX}")

    def __init__(self, members: Members, spec: CommunitySpec) -> None:
        self.members = members
        self.spec = spec
        self._lock = threading.Lock()
        self._built: tuple[int, tuple[SavedSearch, ...]] | None = None
        self._made: dict[str, Made] = {}

    def searches(self) -> Sequence[SavedSearch]:
        """Every confirmed member's searches that are not paused (cheap when unchanged)."""
        version = self.members.version()
        with self._lock:
            if self._built is None or self._built[0] != version:
                chats = self.members.telegram_chats() if self.spec.telegram else {}
                self._made = self._remade(self.members.active(), chats)
                self._built = (version, tuple(made[-1] for made in self._made.values()))
            return self._built[1]

    def _remade(
        self, active: Sequence[tuple[Member, MemberSearch]], chats: dict[str, int]
    ) -> dict[str, Made]:
        """The searches, each built again only if its member, its chat with the bot or
        it changed: a change on the page touches one or two of 10,000, and building them
        all again took a third of a second and as much memory again (what a search has
        worked out, its query and fingerprint, is kept with it)."""
        made = {}
        for member, search in active:
            chat = chats.get(member.id)
            kept = self._made.get(search.id)
            if kept is None or kept[:3] != (member, search, chat):
                kept = (member, search, chat, saved_search(member, search, self.spec.mail, chat))
            made[search.id] = kept
        return made

    def links(self, target: str, searches: Sequence[str]) -> Links | None:
        """The manage and one-click unsubscribe links of a message to a member's
        ``target`` about ``searches``; None when the target is not a member's or none of
        those searches is still theirs (asked at the moment of sending)."""
        member_id = _member_of(target)
        if member_id is None:
            return None
        for name in searches:
            search = self.members.search(name.removeprefix(MEMBER_PREFIX))
            if search is None or search.member_id != member_id or search.paused:
                continue
            url = self.spec.public_url
            host = urlsplit(url).hostname or "alertd"
            try:
                return Links(
                    manage=self.members.manage_url(member_id, url),
                    unsubscribe=self.members.unsubscribe_url(search.id, url),
                    list_id=f"<{search.id}.{host}>",  # RFC 2919; the id is [A-Za-z0-9_-]
                    everything=self.members.feed_url(member_id, url),
                    search=search.id,
                )
            except TokenError:  # deleted on the page since the search was read: gone
                continue
        return None

    def cap(self, target: str) -> tuple[str, int] | None:
        """A member's mail targets share one cap: ``alerts_per_member_per_day`` (their
        feed has no cap: it is where the rest of a capped day is read)."""
        member_id = None if target.startswith(FEED_PREFIX) else _member_of(target)
        if member_id is None:
            return None
        return f"{TARGET_PREFIX}{member_id}", self.spec.limits.alerts_per_member_per_day
