"""A hostile world: an API that misbehaves, a state that breaks, operators that err.

Each test here was first written to show a bug an independent review found; each
fails without its fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import alertd.api
import alertd.market
from alertd.api import OpenTrainClient
from alertd.deliver import Outcome
from alertd.errors import StoreError
from alertd.market import Market
from alertd.models import Target
from alertd.pipeline import CycleReport, run_once
from alertd.render import Message
from alertd.settings import Config, load_config
from alertd.standin import Fault, StandInServer
from alertd.store import Store
from tests.test_community import FAST, community_config


class Sender:
    """Records (target label, job id); while ``up`` is False every send fails."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.up = True

    def __call__(self, target: Target, message: Message) -> Outcome:
        if not self.up:
            return Outcome(False, error="down")
        # every job a message carries (a burst over the cap is one message listing them)
        self.sent += [(target.label, item.job.title.split()[0]) for item in message.items]
        return Outcome(True)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def run(config: Config, url: str, send: Sender, clock: Clock | None = None) -> CycleReport:
    with (
        Store.open(config.state_dir) as store,
        OpenTrainClient(url, requests_per_minute=FAST, api_limit=FAST) as client,
    ):
        return run_once(config, client, store, send, **({"clock": clock} if clock else {}))


def _log(*args: object) -> None:
    """Shown with ``pytest -s`` when a test here fails."""
    print(*args)


def cfg(tmp_path: Path, url: str, searches: dict[str, dict[str, str]], extra: str = "") -> Config:
    config = community_config(tmp_path, url, searches)
    path = Path(config.source)
    path.write_text(extra + path.read_text())
    return load_config(path)


class World:
    """A clocked market behind a fast stand-in, one 'audio' search, a recording target."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.market = Market(clock=self.clock, seed=1)
        self.server = StandInServer(self.market, cache_ttl=0, rate_limit=FAST).start()
        self.config = cfg(tmp_path, self.server.url, {"audio": {"category": "Audio Annotation"}})
        self.send = Sender()

    def cycle(self, after: timedelta = timedelta(0)) -> CycleReport:
        """One cycle (a restart: the store is opened anew), ``after`` from the last."""
        self.clock.now += after
        return run(self.config, self.server.url, self.send, self.clock)

    def owe_x(self) -> None:
        """Prime, then publish job X while the target is down: X is owed."""
        self.cycle()
        self.clock.now += timedelta(minutes=1)
        self.market.add_job(id="X", title="X job", category="Audio Annotation")
        self.send.up = False
        self.cycle(timedelta(minutes=1))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.server.stop()


def test_a_tight_budget_still_goes_round_every_owed_query(tmp_path: Path) -> None:
    market = Market(seed=1)
    server = StandInServer(market, cache_ttl=0, rate_limit=FAST).start()
    try:
        searches = {"a": {"q": "alpha"}, "b": {"q": "beta"}, "g": {"q": "gamma"}}
        config = cfg(tmp_path, server.url, searches)
        path = Path(config.source)
        text = path.read_text().replace("requests_per_minute: 120", "requests_per_minute: 3")
        path.write_text(text.replace("poll_interval: 5m", "poll_interval: 60"))
        config = load_config(path)
        send = Sender()
        for _ in range(4):
            r = run(config, server.url, send)
        _log(r.summary())
        market.add_job(id="G1", title="G1 gamma job", descriptionText="gamma")
        for i in range(12):
            market.add_job(id=f"n{i}", title=f"n{i} noise", descriptionText="noise")
            r = run(config, server.url, send)
            _log(r.summary())
        assert ("g", "G1") in send.sent, send.sent
    finally:
        server.stop()


def test_a_404_that_does_not_say_closed_does_not_withdraw_an_alert(world: World) -> None:
    world.owe_x()
    world.clock.now += timedelta(minutes=1)
    world.market.update_job("X", title="X job (edited)")
    world.server.add_fault(Fault(kind="status", path="/jobs/X", status=404, count=1))
    _log(world.cycle().summary())
    world.send.up = True
    for _ in range(3):
        _log(world.cycle(timedelta(minutes=5)).summary())  # not healed hours later
    assert ("audio", "X") in world.send.sent, world.send.sent


def test_a_cached_read_of_an_edited_job_without_updated_at_is_not_trusted(
    tmp_path: Path,
) -> None:
    market = Market(seed=1)
    server = StandInServer(market, cache_ttl=1.0, rate_limit=FAST).start()
    try:
        config = cfg(tmp_path, server.url, {"audio": {"category": "Audio Annotation"}})
        send, clock = Sender(), Clock()
        run(config, server.url, send, clock)
        market.add_job(id="X", title="X job", category="Text Annotation")
        market.jobs["X"].pop("updatedAt")
        run(config, server.url, send, clock)  # reads /jobs/X: now cached
        market.update_job("X", category="Audio Annotation")  # edited into the search
        market.jobs["X"].pop("updatedAt")
        stale = run(config, server.url, send, clock)  # the cached, pre-edit /jobs/X
        assert stale.waiting == 1  # not judged on an answer that cannot show the edit
        for _ in range(4):  # the cache turns over; past the hold bound the answer is taken
            time.sleep(0.6)
            clock.now += timedelta(minutes=4)
            run(config, server.url, send, clock)
        assert send.sent == [("audio", "X")]
    finally:
        server.stop()


def test_countries_of_a_shape_we_cannot_read_are_left_to_the_api(tmp_path: Path) -> None:
    market = Market(seed=1)
    server = StandInServer(market, cache_ttl=0, rate_limit=FAST).start()
    try:
        config = cfg(tmp_path, server.url, {"us": {"country": "US"}})
        send = Sender()
        run(config, server.url, send)
        market.add_job(id="D", title="D job", countries=[{"code": "DE"}])
        run(config, server.url, send)
        listed = [
            j["id"]
            for j in httpx.get(f"{server.url}/jobs", params={"country": "US"}).json()["jobs"]
        ]
        assert "D" not in listed
        assert send.sent == [], send.sent
    finally:
        server.stop()


def test_two_configs_sharing_a_state_directory_each_get_their_alerts(tmp_path: Path) -> None:
    market = Market(seed=1)
    server = StandInServer(market, cache_ttl=0, rate_limit=FAST).start()
    try:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        state = tmp_path / "state"
        a = community_config(tmp_path / "a", server.url, {"a-rlhf": {"category": "RLHF"}})
        b = community_config(
            tmp_path / "b",
            server.url,
            {
                "b-audio": {"category": "Audio Annotation"},
                "b-image": {"category": "Image Annotation"},
                "b-text": {"category": "Text Annotation"},
            },
        )
        for c in (a, b):
            p = Path(c.source)
            p.write_text(p.read_text().replace(str(Path(c.source).parent / "state"), str(state)))
        a, b = load_config(Path(a.source)), load_config(Path(b.source))
        assert a.state_dir == b.state_dir
        send = Sender()
        for _ in range(2):
            run(a, server.url, send)
            run(b, server.url, send)
        market.add_job(id="T", title="T job", category="Text Annotation")
        for _ in range(6):
            run(a, server.url, send)
            rb = run(b, server.url, send)
        _log(rb.summary())
        assert ("b-text", "T") in send.sent, send.sent
    finally:
        server.stop()


def test_a_send_whose_outcome_could_not_be_recorded_is_retried_next_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = Market(seed=1)
    server = StandInServer(market, cache_ttl=0, rate_limit=FAST).start()
    try:
        config = cfg(tmp_path, server.url, {"audio": {"category": "Audio Annotation"}})
        send = Sender()
        clock = Clock()
        with (
            Store.open(config.state_dir) as store,
            OpenTrainClient(server.url, requests_per_minute=FAST, api_limit=FAST) as client,
        ):
            run_once(config, client, store, send, clock=clock)
            market.add_job(id="X", title="X job", category="Audio Annotation")
            send.up = False
            real = store._journal

            def full(entry: dict[str, Any]) -> None:  # the disk fills up mid-send
                if entry["op"] == "failed":
                    raise StoreError("disk full")
                real(entry)

            monkeypatch.setattr(store, "_journal", full)
            _log(run_once(config, client, store, send, clock=clock).summary())
            monkeypatch.setattr(store, "_journal", real)  # disk freed
            send.up = True
            for _ in range(5):
                clock.now += timedelta(hours=2)
                _log(run_once(config, client, store, send, clock=clock).summary())
            _log({k: r.status for k, r in store.owed.items()})
            assert ("audio", "X") in send.sent
    finally:
        server.stop()


def test_sends_cost_journal_lines_not_file_rewrites(tmp_path: Path) -> None:
    market = Market(seed=1)
    server = StandInServer(market, cache_ttl=0, rate_limit=FAST).start()
    try:
        config = cfg(tmp_path, server.url, {"audio": {"category": "Audio Annotation"}})
        send = Sender()
        with (
            Store.open(config.state_dir) as store,
            OpenTrainClient(server.url, requests_per_minute=FAST, api_limit=FAST) as client,
        ):
            run_once(config, client, store, send)
            for i in range(10):
                market.add_job(id=f"X{i}", title=f"X{i}", category="Audio Annotation")
            before = {n: store._storage(n).writes for n in ("done", "outbox")}
            run_once(config, client, store, send)
            after = {n: store._storage(n).writes - before[n] for n in ("done", "outbox")}
            assert len(send.sent) == 10
            assert after == {"done": 1, "outbox": 2}  # before the sends, and once after
    finally:
        server.stop()


def test_a_lost_feed_position_misses_nothing(tmp_path: Path) -> None:
    market = Market(seed=1)
    server = StandInServer(market, cache_ttl=0, rate_limit=FAST).start()
    try:
        config = cfg(tmp_path, server.url, {"audio": {"category": "Audio Annotation"}})
        send = Sender()
        run(config, server.url, send)
        run(config, server.url, send)
        market.add_job(id="X", title="X", category="Audio Annotation")
        (config.state_dir / "feed.json").unlink()
        for _ in range(3):
            r = run(config, server.url, send)
        _log(r.summary())
        assert ("audio", "X") in send.sent, send.sent
    finally:
        server.stop()


def test_more_changes_at_one_instant_than_the_feed_lists_do_not_stall_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alertd.market, "CHANGES_CAP", 5)
    monkeypatch.setattr(alertd.api, "CHANGES_CAP", 5)
    clock = Clock()
    market = Market(clock=clock, seed=1)
    server = StandInServer(market, cache_ttl=0, rate_limit=FAST).start()
    try:
        config = cfg(tmp_path, server.url, {"audio": {"category": "Audio Annotation"}})
        send = Sender()
        run(config, server.url, send, clock)
        clock.now += timedelta(seconds=10)
        for i in range(6):  # a bulk edit: 6 jobs stamped the same millisecond
            market.add_job(id=f"B{i}", title=f"B{i}", category="Text Annotation")
        for _ in range(3):
            clock.now += timedelta(minutes=5)
            market.add_job(id=f"N{_}", title=f"N{_}", category="Audio Annotation")
            _log(run(config, server.url, send, clock).summary())
        assert {j for _, j in send.sent} >= {"N0", "N1"}, send.sent
    finally:
        server.stop()


def test_an_alert_owed_again_after_a_withdrawal_survives_a_restart(world: World) -> None:
    world.owe_x()
    world.clock.now += timedelta(minutes=1)
    world.market.close_job("X")
    world.cycle()  # withdrawn
    world.cycle(timedelta(hours=2))  # its seen id is forgotten
    world.clock.now += timedelta(minutes=1)
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

    def killed(target: Path, text: str) -> None:
        if writes[0] == crash_after:
            raise SystemExit("kill -9")
        writes[0] += 1
        real(target, text)

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
    tmp_path: Path,
) -> None:
    clock = Clock()
    market = Market(clock=clock, seed=1)
    server = StandInServer(market, cache_ttl=0, rate_limit=FAST).start()
    try:
        both = {"audio": {"category": "Audio Annotation"}, "text": {"category": "Text Annotation"}}
        (tmp_path / "old").mkdir()
        (tmp_path / "new").mkdir()
        old = cfg(tmp_path / "old", server.url, both)
        state = old.state_dir
        send = Sender()
        run(old, server.url, send, clock)

        def moved(searches: dict[str, dict[str, str]]) -> Config:
            config = cfg(tmp_path / "new", server.url, searches)
            path = Path(config.source)
            path.write_text(path.read_text().replace(str(tmp_path / "new" / "state"), str(state)))
            return load_config(path)

        Path(old.source).unlink()  # e.g. /etc/alertd.yaml → /etc/alertd/alerts.yaml
        new = moved({"audio": both["audio"]})
        clock.now += timedelta(minutes=5)
        quiet = run(new, server.url, send, clock)
        assert quiet.requests == 1  # its feed position came along
        market.add_job(id="T", title="T job", category="Text Annotation")  # 'text' is gone
        clock.now += timedelta(minutes=5)
        run(new, server.url, send, clock)
        new = moved(both)  # added back: silent, like any new search
        for _ in range(2):
            clock.now += timedelta(minutes=5)
            run(new, server.url, send, clock)
        assert send.sent == []
    finally:
        server.stop()
