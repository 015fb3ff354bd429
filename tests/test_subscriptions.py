"""Subscriptions are data: a cycle serves saved searches from any provider (the YAML, the
members table) through the same planner, dedup and outbox, and each owner forgets only
its own searches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from alertd.errors import ConfigError
from alertd.models import SavedSearch, Target
from alertd.outcome import Outcome
from alertd.render import Links, Message
from alertd.store import Store
from alertd.subscriptions import MEMBERS_OWNER, Subscriptions, of_config
from tests.world import World, config_file

AUDIO = "Audio Annotation"


@dataclass
class Table:
    """A provider as the members table is one: searches that change without the YAML,
    whose targets' owed alerts end with their searches (``claims``)."""

    items: list[SavedSearch] = field(default_factory=list)
    owner: str = MEMBERS_OWNER
    claims: tuple[str, ...] = ("member:",)

    def searches(self) -> Sequence[SavedSearch]:
        return self.items

    def links(self, target: str, searches: Sequence[str]) -> Links | None:
        live = {s.name for s in self.items}  # asked at the moment of sending
        if not target.startswith("member:") or live.isdisjoint(searches):
            return None
        return Links(manage="https://a.example/m", unsubscribe="https://a.example/u", list_id="l")


def member_search(sid: str, title: str, **query: str) -> SavedSearch:
    url = f"json://127.0.0.1:9/member-{sid}"
    target = Target(key=f"member:{sid}:now", label=f"member {sid}", url=url)
    return SavedSearch(
        name=f"member:{sid}", title=title, targets=(target,), source=MEMBERS_OWNER, **query
    )


def serve(w: World, table: Table) -> Subscriptions:
    assert w.config is not None
    return Subscriptions.gather([of_config(w.config.searches, w.config.owner), table])


@pytest.fixture
def w(tmp_path: Path) -> World:
    world = World(tmp_path, seed=3)
    yield world
    world.stop()


def test_a_members_search_starts_silent_then_alerts_under_its_own_title(w: World) -> None:
    w.searches({"ops": {"category": "RLHF"}})
    w.market.add_job(title="old audio job", category=AUDIO)
    table = Table()
    w.cycle(subscriptions=serve(w, table))  # the operator's search primes
    table.items.append(member_search("s1", "Audio for Ana", category=AUDIO))
    report = w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))  # live: no reload
    assert report.ok, report.summary()
    assert w.send.sent == []  # the job open before the sign-up is not news
    w.market.add_job(title="fresh audio job", category=AUDIO)
    w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    assert w.send.sent == [("member s1", "fresh")]


def test_the_member_title_not_its_id_is_what_the_message_names(w: World) -> None:
    seen: list[tuple[str, ...]] = []
    w.searches({"ops": {"category": "RLHF"}})
    table = Table([member_search("s1", "Audio for Ana", category=AUDIO)])
    w.cycle(subscriptions=serve(w, table))
    w.market.add_job(title="fresh audio job", category=AUDIO)
    real = w.send

    def record(target: Target, message):  # type: ignore[no-untyped-def]
        seen.extend(item.searches for item in message.items)
        return real(target, message)

    w.send = record  # type: ignore[assignment]
    w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    assert seen == [("Audio for Ana",)]


def test_a_reload_that_drops_operator_searches_keeps_members_state(w: World) -> None:
    w.searches({"ops": {"category": "RLHF"}, "more": {"category": AUDIO}})
    table = Table([member_search("s1", "Audio for Ana", category=AUDIO)])
    w.cycle(subscriptions=serve(w, table))
    w.searches({"ops": {"category": "RLHF"}})  # the operator removes "more"
    w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    assert w.config is not None
    with Store.open(w.config.state_dir) as store:
        assert "more" not in store.searches  # the YAML forgets its own
        kept = store.searches["member:s1"]
        assert kept.primed and kept.owner == MEMBERS_OWNER
    w.market.add_job(title="fresh audio job", category=AUDIO)
    w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    assert w.send.sent == [("member s1", "fresh")]  # not re-primed into silence


def test_a_cycle_without_the_members_provider_forgets_none_of_theirs(w: World) -> None:
    w.searches({"ops": {"category": "RLHF"}})
    table = Table([member_search("s1", "Audio for Ana", category=AUDIO)])
    w.cycle(subscriptions=serve(w, table))
    w.cycle(timedelta(seconds=10))  # e.g. `alertd once` with the YAML only
    assert w.config is not None
    with Store.open(w.config.state_dir) as store:
        assert "member:s1" in store.searches


def test_a_search_its_member_deleted_is_forgotten_and_starts_silent_again(w: World) -> None:
    w.searches({"ops": {"category": "RLHF"}})
    table = Table([member_search("s1", "Audio for Ana", category=AUDIO)])
    w.cycle(subscriptions=serve(w, table))
    table.items.clear()
    w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    assert w.config is not None
    with Store.open(w.config.state_dir) as store:
        assert "member:s1" not in store.searches


def test_identical_queries_of_operator_and_member_share_one_fetch(w: World) -> None:
    w.searches({"ops": {"category": AUDIO}})
    table = Table([member_search(f"s{i}", f"audio {i}", category=AUDIO) for i in range(5)])
    report = w.cycle(subscriptions=serve(w, table))
    assert report.searches == 6
    assert report.queries == 1  # six searches, one distinct query: one priming request
    w.market.add_job(title="fresh audio job", category=AUDIO)
    w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    assert sorted(w.send.sent) == sorted(
        [("ops", "fresh")] + [(f"member s{i}", "fresh") for i in range(5)]
    )


def test_the_yaml_may_not_take_a_members_name(tmp_path: Path) -> None:
    from alertd.config import load_config

    path = config_file(tmp_path, "http://127.0.0.1:9", "searches:\n  - name: 'member:x'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "kept for members" in str(caught.value) and caught.value.line == 5


@dataclass
class CappedTable(Table):
    """Members whose every target counts against one daily cap of ``limit`` alerts."""

    limit: int = 3

    def cap(self, target: str) -> tuple[str, int] | None:
        members = {t.key for search in self.items for t in search.targets}
        return ("ana", self.limit) if target in members else None


def test_a_members_daily_cap_keeps_the_rest_for_later_and_loses_none(w: World) -> None:
    w.searches({"ops": {"category": "RLHF"}})
    table = CappedTable([member_search("s1", "Audio for Ana", category=AUDIO)])
    w.cycle(subscriptions=serve(w, table))
    for i in range(5):
        w.market.add_job(title=f"audio{i} job", category=AUDIO)
    report = w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    assert len(w.send.sent) == 3 and report.capped == 2
    assert report.oldest_owed is None  # kept by the cap, not late: health stays green
    assert "2 kept for later by members' daily caps" in report.summary()
    w.cycle(timedelta(hours=1), subscriptions=serve(w, table))
    assert len(w.send.sent) == 3  # still within the day
    w.cycle(timedelta(days=1), subscriptions=serve(w, table))
    assert sorted(t for _, t in w.send.sent) == [f"audio{i}" for i in range(5)]


def test_the_operators_own_targets_have_no_member_cap(w: World) -> None:
    w.searches({"ops": {"category": AUDIO}})
    table = CappedTable([], limit=1)
    w.cycle(subscriptions=serve(w, table))
    for i in range(4):
        w.market.add_job(title=f"audio{i} job", category=AUDIO)
    w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    assert len(w.send.sent) == 4


def test_an_unsubscribe_withdraws_what_the_member_was_still_owed(w: World) -> None:
    w.searches({"ops": {"category": "RLHF"}})
    table = Table([member_search("s1", "Audio for Ana", category=AUDIO)])
    w.cycle(subscriptions=serve(w, table))
    w.send.up = False  # the member's mail server is down: the alert stays owed
    w.market.add_job(title="fresh audio job", category=AUDIO)
    w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    table.items.clear()  # the member unsubscribes
    w.send.up = True
    report = w.cycle(timedelta(hours=2), subscriptions=serve(w, table))
    assert w.send.sent == [] and report.withdrawn == 1 and report.owed == 0


def test_an_unsubscribe_during_a_cycle_stops_that_cycles_sends(w: World) -> None:
    w.searches({"ops": {"category": "RLHF"}})
    table = Table([member_search(f"s{i}", f"audio {i}", category=AUDIO) for i in range(2)])
    w.cycle(subscriptions=serve(w, table))
    w.market.add_job(title="fresh audio job", category=AUDIO)
    sent: list[str] = []

    def send_then_the_other_leaves(target: Target, message: Message) -> Outcome:
        sent.append(target.label)
        table.items[:] = [s for s in table.items if s.targets[0].label == target.label]
        return Outcome(True)

    w.send = send_then_the_other_leaves  # type: ignore[assignment]
    report = w.cycle(timedelta(seconds=10), subscriptions=serve(w, table))
    assert len(sent) == 1 and report.withdrawn == 1, (sent, report.summary())
