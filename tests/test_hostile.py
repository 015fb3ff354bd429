"""A hostile world: an API that misbehaves, a state that breaks, operators that err.

Each test here was first written to show a bug an independent review found; each
fails without its fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import alertd.api
import alertd.market
from alertd.api import OpenTrainClient
from alertd.config import Config, load_config
from alertd.errors import StoreError
from alertd.pipeline import CycleReport
from alertd.standin import Fault
from alertd.store import Store
from tests.world import FAST, Clock, World, community_config, run


def _log(*args: object) -> None:
    """Shown with ``pytest -s`` when a test here fails."""
    print(*args)


AUDIO = {"audio": {"category": "Audio Annotation"}}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A clocked world with one 'audio' search."""
    with World(tmp_path) as made:
        made.searches(AUDIO)
        yield made


@pytest.fixture
def real_time(tmp_path: Path) -> Iterator[World]:
    """A world on real time (its market's clock and the cycle's alike)."""
    with World(tmp_path, frozen=False) as made:
        yield made


def owe_x(world: World) -> None:
    """Prime, then publish job X while the target is down: X is owed."""
    world.cycle()
    world.advance(timedelta(minutes=1))
    world.market.add_job(id="X", title="X job", category="Audio Annotation")
    world.send.up = False
    world.cycle(timedelta(minutes=1))


def test_a_tight_budget_still_goes_round_every_owed_query(real_time: World) -> None:
    searches = {"a": {"q": "alpha"}, "b": {"q": "beta"}, "g": {"q": "gamma"}}
    real_time.searches(searches, poll="60", extra="requests_per_minute: 3\n")
    for _ in range(4):
        r = real_time.cycle()
    _log(r.summary())
    real_time.market.add_job(id="G1", title="G1 gamma job", descriptionText="gamma")
    for i in range(12):
        real_time.market.add_job(id=f"n{i}", title=f"n{i} noise", descriptionText="noise")
        _log(real_time.cycle().summary())
    assert real_time.send.sent == [("g", "G1")]


def test_a_404_that_does_not_say_closed_does_not_withdraw_an_alert(world: World) -> None:
    owe_x(world)
    world.advance(timedelta(minutes=1))
    world.market.update_job("X", title="X job (edited)")
    world.server.add_fault(Fault(kind="status", path="/jobs/X", status=404, count=1))
    _log(world.cycle().summary())
    # read when published, then the edit: the 404 that does not say closed
    assert [r.status for r in world.server.requests("/jobs/X")] == [200, 404]
    world.send.up = True
    for _ in range(3):
        _log(world.cycle(timedelta(minutes=5)).summary())  # not healed hours later
    assert world.send.sent == [("audio", "X")]


@pytest.mark.slow
def test_a_cached_read_of_an_edited_job_without_updated_at_is_not_trusted(
    tmp_path: Path,
) -> None:
    # the market on real time (the edge cache ages in real seconds); alertd's clock moved
    with World(tmp_path, cache_ttl=1.0, frozen=False) as w:
        config, clock = w.searches(AUDIO), Clock()

        def cycle() -> CycleReport:
            return run(config, w.url, w.send, clock)

        cycle()
        w.market.add_job(id="X", title="X job", category="Text Annotation")
        w.market.jobs["X"].pop("updatedAt")
        cycle()  # reads /jobs/X: now cached
        w.market.update_job("X", category="Audio Annotation")  # edited into the search
        w.market.jobs["X"].pop("updatedAt")
        stale = cycle()  # the cached, pre-edit /jobs/X
        assert stale.waiting == 1  # not judged on an answer that cannot show the edit
        for _ in range(4):  # the cache turns over; past the hold bound the answer is taken
            time.sleep(0.6)
            clock.now += timedelta(minutes=4)
            cycle()
        assert w.send.sent == [("audio", "X")]


def test_countries_of_a_shape_we_cannot_read_are_left_to_the_api(real_time: World) -> None:
    real_time.searches({"us": {"country": "US"}})
    real_time.cycle()
    real_time.market.add_job(id="D", title="D job", countries=[{"code": "DE"}])
    report = real_time.cycle()
    listed = [
        j["id"] for j in httpx.get(f"{real_time.url}/jobs", params={"country": "US"}).json()["jobs"]
    ]
    assert "D" not in listed
    assert report.asked == 1  # the job's countries could not rule it out: the API was asked
    assert real_time.send.sent == []


def test_two_configs_sharing_a_state_directory_each_get_their_alerts(real_time: World) -> None:
    tmp_path = real_time.directory
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    state = tmp_path / "state"
    url = real_time.url
    a = community_config(tmp_path / "a", url, {"a-rlhf": {"category": "RLHF"}}, state=state)
    b = community_config(
        tmp_path / "b",
        url,
        {
            "b-audio": {"category": "Audio Annotation"},
            "b-image": {"category": "Image Annotation"},
            "b-text": {"category": "Text Annotation"},
        },
        state=state,
    )
    assert a.state_dir == b.state_dir
    for _ in range(2):
        real_time.cycle(config=a)
        real_time.cycle(config=b)
    real_time.market.add_job(id="T", title="T job", category="Text Annotation")
    for _ in range(6):
        real_time.cycle(config=a)
        rb = real_time.cycle(config=b)
    _log(rb.summary())
    assert real_time.send.sent == [("b-text", "T")]


def test_a_send_whose_outcome_could_not_be_recorded_is_retried_next_cycle(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alertd.pipeline import run_once

    config, send, clock = world.config, world.send, world.clock
    assert config is not None
    with (
        Store.open(config.state_dir) as store,
        OpenTrainClient(world.url, requests_per_minute=FAST, api_limit=FAST) as client,
    ):
        run_once(config, client, store, send, clock=clock)
        world.market.add_job(id="X", title="X job", category="Audio Annotation")
        send.up = False
        real = store._journal
        failed: list[str] = []

        def full(entry: dict[str, Any]) -> None:  # the disk fills up mid-send
            if entry["op"] == "failed":
                failed.append(entry["op"])
                raise StoreError("disk full")
            real(entry)

        monkeypatch.setattr(store, "_journal", full)
        _log(run_once(config, client, store, send, clock=clock).summary())
        assert failed  # the path under test: the failure could not be written
        monkeypatch.setattr(store, "_journal", real)  # disk freed
        send.up = True
        for _ in range(5):
            clock.now += timedelta(hours=2)
            _log(run_once(config, client, store, send, clock=clock).summary())
        _log({k: r.status for k, r in store.owed.items()})
        assert send.sent == [("audio", "X")]


def test_sends_cost_journal_lines_not_file_rewrites(real_time: World) -> None:
    from alertd.pipeline import run_once

    config = real_time.searches(AUDIO)
    send = real_time.send
    with (
        Store.open(config.state_dir) as store,
        OpenTrainClient(real_time.url, requests_per_minute=FAST, api_limit=FAST) as client,
    ):
        run_once(config, client, store, send)
        for i in range(10):
            real_time.market.add_job(id=f"X{i}", title=f"X{i}", category="Audio Annotation")
        before = {n: store._storage(n).writes for n in ("done", "outbox")}
        run_once(config, client, store, send)
        after = {n: store._storage(n).writes - before[n] for n in ("done", "outbox")}
        assert sorted(send.sent) == sorted(("audio", f"X{i}") for i in range(10))
        assert after == {"done": 1, "outbox": 2}  # before the sends, and once after


def test_a_lost_feed_position_misses_nothing(real_time: World) -> None:
    config = real_time.searches(AUDIO)
    real_time.cycle()
    real_time.cycle()
    real_time.market.add_job(id="X", title="X", category="Audio Annotation")
    (config.state_dir / "feed.json").unlink()
    for _ in range(3):
        r = real_time.cycle()
    _log(r.summary())
    assert real_time.send.sent == [("audio", "X")]


def test_more_changes_at_one_instant_than_the_feed_lists_do_not_stall_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alertd.market, "CHANGES_CAP", 5)
    monkeypatch.setattr(alertd.api, "CHANGES_CAP", 5)
    world.cycle()
    world.cycle(timedelta(seconds=10))
    for i in range(6):  # a bulk edit: 6 jobs stamped the same millisecond
        world.market.add_job(id=f"B{i}", title=f"B{i}", category="Text Annotation")
    for n in range(3):
        world.advance(timedelta(minutes=5))
        world.market.add_job(id=f"N{n}", title=f"N{n}", category="Audio Annotation")
        _log(world.cycle().summary())
    assert world.send.sent == [("audio", "N0"), ("audio", "N1"), ("audio", "N2")]


def test_an_alert_owed_again_after_a_withdrawal_survives_a_restart(world: World) -> None:
    owe_x(world)
    world.advance(timedelta(minutes=1))
    world.market.close_job("X")
    world.cycle()  # withdrawn
    world.cycle(timedelta(hours=2))  # its seen id is forgotten
    world.advance(timedelta(minutes=1))
    world.market.update_job("X", status="OPEN")  # reopened; the target is still down
    for _ in range(3):  # each cycle is a restart
        world.cycle(timedelta(minutes=5))
    world.send.up = True
    for _ in range(3):
        world.cycle(timedelta(hours=2))
    assert world.send.sent == [("audio", "X")]


@pytest.mark.parametrize("crash_after", range(6))
def test_owing_again_after_a_withdrawal_is_safe_at_every_crash_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after: int
) -> None:
    import alertd.store.files
    from alertd.models import Job

    path = tmp_path / "alerts.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\nchannels:\n  t: json://127.0.0.1:9/t\n"
        "searches:\n  - name: s\n    category: RLHF\n    notify: [t]\n"
    )
    config = load_config(path)
    search, now, job = config.searches[0], datetime.now(UTC), Job(id="J", title="J")
    with Store.open(config.state_dir) as store:
        store.mark_primed(search, now)
        store.record_matches(search, [job], now)
        store.withdraw(["J"], "closed", now)
    with Store.open(config.state_dir) as store:
        store.forget_seen(["J"])  # closed for longer than the edge cache: forgotten
    real = alertd.store.files.write_atomically
    writes = [0]

    def killed(target: Path, text: str | Iterable[str]) -> int:
        if writes[0] == crash_after:
            raise SystemExit("kill -9")
        writes[0] += 1
        return real(target, text)

    store = Store.open(config.state_dir)
    store.record_matches(search, [job], now + timedelta(hours=2))  # reopened: owed again
    monkeypatch.setattr(alertd.store.files, "write_atomically", killed)
    with pytest.raises(SystemExit):
        store.commit()
        raise SystemExit("all written")
    assert store.lock is not None
    store.lock.close()
    monkeypatch.setattr(alertd.store.files, "write_atomically", real)
    with Store.open(config.state_dir) as again:  # owed, or to be found again: never lost
        assert ("channel:t", "J") in again.owed or "J" not in again.seen_ids("s")


def test_a_moved_config_file_keeps_its_searches_and_forgets_a_removed_one(
    world: World,
) -> None:
    tmp_path, url, clock = world.directory, world.url, world.clock
    both = {"audio": {"category": "Audio Annotation"}, "text": {"category": "Text Annotation"}}
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = community_config(tmp_path / "old", url, both)
    state = old.state_dir
    run(old, url, world.send, clock)

    def moved(searches: dict[str, dict[str, str]]) -> Config:
        return community_config(tmp_path / "new", url, searches, state=state)

    Path(old.source).unlink()  # e.g. /etc/alertd.yaml → /etc/alertd/alerts.yaml
    new = moved({"audio": both["audio"]})
    quiet = world.cycle(timedelta(minutes=5), config=new)
    assert quiet.requests == 1  # its feed position came along
    world.market.add_job(id="T", title="T job", category="Text Annotation")  # 'text' is gone
    world.cycle(timedelta(minutes=5), config=new)
    new = moved(both)  # added back: silent, like any new search
    back = world.cycle(timedelta(minutes=5), config=new)
    assert back.primed == ["text"] and back.error is None
    world.cycle(timedelta(minutes=5), config=new)
    assert world.send.sent == []
