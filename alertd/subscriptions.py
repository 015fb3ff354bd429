"""Subscriptions: the saved searches a cycle serves, whoever wrote them.

A saved search comes from a provider: the operator's YAML (``ConfigSearches``) or the
members table in the state (``alertd.members``, through ``MemberSearches``). The cycle
takes one ``Subscriptions`` built from all of them each time it starts, so a member's
sign-up is live in the next cycle without re-reading the YAML or restarting anything,
and goes through the same planner, filters, dedup, outbox, pace and rendering as an
operator's search (identical queries still share one fetch).

Every search has a stable id (its ``name``, unique in a state directory: a member's is
``member:<id>``, a name the YAML may not use) and an owner (its ``source``: the config
file's resolved path, or ``MEMBERS_OWNER``). What a provider no longer has is forgotten
per owner, so nothing that forgets searches missing from the YAML touches members'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from alertd.feeds import public_feed_key, public_feed_slug
from alertd.models import SavedSearch, Target
from alertd.render import Links

# The links a message to ``target`` about these searches carries; None: not a member's.
LinksFor = Callable[[str, Sequence[str]], Links | None]
# The group a target's alerts count against and that group's alerts a day (a member's
# cap), or None: not capped.
CapOf = Callable[[str], tuple[str, int] | None]
# Where every job of a summary about these searches can be read, or None: nowhere.
EverythingAt = Callable[[Sequence[str]], str | None]

MEMBER_PREFIX = "member:"  # a member's search's name; the YAML may not use it
MEMBERS_OWNER = "members"  # the owner of every member's search in the store


class Provider(Protocol):
    """Where saved searches come from. A provider may also have ``links`` (a
    ``LinksFor``): the manage and unsubscribe links its targets' messages carry; and
    ``cap`` (a ``CapOf``): how many alerts a day a group of its targets may get; and
    ``claims``: the prefixes of its targets' keys whose owed alerts are withdrawn once
    none of their searches is left (a member who unsubscribed gets nothing more), where
    the operator's removed search still delivers what it owed; and ``everything`` (an
    ``EverythingAt``): where a summary's "+N more" can all be read."""

    @property
    def owner(self) -> str:
        """Whose searches these are in the store: what it forgets, it forgets of its own."""
        ...

    def searches(self) -> Sequence[SavedSearch]:
        """Its saved searches now (called once per cycle: cheap when nothing changed)."""
        ...


@dataclass(frozen=True)
class ConfigSearches:
    """The operator's saved searches, as the YAML says (they change on a reload); a
    search with ``feed: true`` also writes its public feed, served on the community page
    at ``public_url`` (when the config has one)."""

    items: tuple[SavedSearch, ...]
    owner: str
    public_url: str | None = None

    def searches(self) -> Sequence[SavedSearch]:
        return self.items

    def everything(self, searches: Sequence[str]) -> str | None:
        """The public feed of the first of ``searches`` that has one, on the community
        page; None without a page or such a search (the summary then only counts)."""
        if not self.public_url:
            return None
        with_feed = {s.name for s in self.items if s.feed}
        for name in searches:
            if name in with_feed:
                return f"{self.public_url.rstrip('/')}/feeds/{public_feed_slug(name)}.atom"
        return None


def with_public_feed(search: SavedSearch) -> SavedSearch:
    """``search`` with its public feed as one more target, when it opted in."""
    if not search.feed:
        return search
    feed = Target.feed(public_feed_key(search.name), f"{search.name} (public feed)")
    return replace(search, targets=(*search.targets, feed))


@dataclass(frozen=True)
class Subscriptions:
    """Every saved search of one cycle, operator's first, with who owns which."""

    searches: tuple[SavedSearch, ...] = ()
    owners: Mapping[str, frozenset[str]] = field(default_factory=dict)
    linkers: tuple[LinksFor, ...] = ()
    cappers: tuple[CapOf, ...] = ()
    claims: tuple[str, ...] = ()  # target key prefixes whose rows end with their searches
    everywhere: tuple[EverythingAt, ...] = ()

    @classmethod
    def gather(cls, providers: Iterable[Provider]) -> Subscriptions:
        """One cycle's subscriptions. A name already taken is skipped (names are the
        store's keys; the YAML's own clash check and the member prefix keep it rare)."""
        searches: list[SavedSearch] = []
        owners: dict[str, set[str]] = {}
        taken: set[str] = set()
        linkers: list[LinksFor] = []
        cappers: list[CapOf] = []
        claims: list[str] = []
        everywhere: list[EverythingAt] = []
        for provider in providers:
            claims += getattr(provider, "claims", ())
            if (linker := getattr(provider, "links", None)) is not None:
                linkers.append(linker)
            if (capper := getattr(provider, "cap", None)) is not None:
                cappers.append(capper)
            if (at := getattr(provider, "everything", None)) is not None:
                everywhere.append(at)
            mine = owners.setdefault(provider.owner, set())
            for search in provider.searches():
                if search.name in taken:
                    continue
                taken.add(search.name)
                mine.add(search.name)
                searches.append(search)
        frozen = {k: frozenset(v) for k, v in owners.items()}
        return cls(
            tuple(searches),
            frozen,
            tuple(linkers),
            tuple(cappers),
            tuple(claims),
            tuple(everywhere),
        )

    def targets(self) -> dict[str, Target]:
        """Every target the searches deliver to, by key."""
        return {t.key: t for s in self.searches for t in s.targets}

    def claimed(self, target: str) -> bool:
        """Whether ``target``'s owed alerts end when their searches do (a member's)."""
        return bool(self.claims) and target.startswith(self.claims)

    def links(self, target: str, searches: Sequence[str]) -> Links | None:
        """The links a message to ``target`` about ``searches`` carries (a member's way
        out and around), or None: the operator's own target, or for a claimed one, none
        of those searches is wanted any more (asked at the moment of sending)."""
        for linker in self.linkers:
            if (found := linker(target, searches)) is not None:
                return found
        return None

    def everything(self, searches: Sequence[str]) -> str | None:
        """Where every job of a summary about ``searches`` (an operator's target's) can
        be read: an opted-in search's public feed; None when nowhere."""
        for at in self.everywhere:
            if (found := at(searches)) is not None:
                return found
        return None

    def cap(self, target: str) -> tuple[str, int] | None:
        """The group ``target``'s alerts count against and its alerts a day, if capped."""
        for capper in self.cappers:
            if (found := capper(target)) is not None:
                return found
        return None

    def titles(self) -> dict[str, str]:
        """Each search's name as a person reads it, where it differs from its id."""
        return {s.name: s.title for s in self.searches if s.title and s.title != s.name}


def of_config(
    config_searches: Sequence[SavedSearch], owner: str, public_url: str | None = None
) -> ConfigSearches:
    """The YAML's provider; ``public_url``: the community page's, where public feeds are."""
    return ConfigSearches(tuple(with_public_feed(s) for s in config_searches), owner, public_url)
