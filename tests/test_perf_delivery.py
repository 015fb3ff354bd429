"""What a busy cycle's deliveries cost the disk: a delivery step writes the outbox (and
the delivered rows), not searches.json's seen ids; sends that follow each other fast
share an fsync of the journal. Neither loses or repeats an alert across a kill."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alertd.api import OpenTrainClient
from alertd.pipeline import run_once
from alertd.store import Store
from tests.world import FAST, World

AUDIO = {"category": "Audio Annotation"}


class Killed(BaseException):
    pass


def test_two_delivery_steps_write_searches_json_once(tmp_path: Path) -> None:
    with World(tmp_path) as w:
        # 'german' is free text: only asking its query can tell, in the cycle's query
        # step, after the feed's matches went out (two delivery steps, one cycle).
        config = w.searches({"audio": AUDIO, "german": {"q": "german"}})
        w.cycle()
        w.advance(timedelta(minutes=1))
        w.market.add_job(id="A", title="Audio job", category="Audio Annotation")
        w.market.add_job(id="G", title="German review", category="Text Annotation")
        w.advance(timedelta(minutes=1))
        with (
            Store.open(config.state_dir) as store,
            OpenTrainClient(w.url, requests_per_minute=FAST, api_limit=FAST) as client,
        ):
            before = {name: store._storage(name).writes for name in ("searches", "outbox")}
            run_once(config, client, store, w.send, clock=w.clock)
            after = {name: store._storage(name).writes - n for name, n in before.items()}
    assert w.send.messages[0][0] == "audio" and w.send.messages[1][0] == "german"
    assert after["outbox"] >= 2  # before each delivery step, and at the end
    assert after["searches"] == 1  # at the end only


def test_fast_sends_share_fsyncs_and_a_kill_after_them_resends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = 60
    with World(tmp_path) as w:
        w.searches({f"s{i:02d}": AUDIO for i in range(targets)})
        w.cycle()
        w.advance(timedelta(minutes=1))
        w.market.add_job(id="X", title="X job", category="Audio Annotation")
        w.advance(timedelta(minutes=1))
        fsyncs: list[int] = []

        def killed(self: Store, *args: Any) -> int:  # kill -9 once every send is done
            fsyncs.append(self.journal.fsyncs)
            raise Killed

        with monkeypatch.context() as patch:
            patch.setattr(Store, "prune", killed)
            patch.setattr(Store, "close", lambda self: self.lock.close())  # writes nothing
            with pytest.raises(Killed):
                w.cycle()
        assert len(w.send.sent) == targets
        for _ in range(2):
            w.cycle(timedelta(minutes=5))
    assert sorted(w.send.sent) == sorted((f"s{i:02d}", "X") for i in range(targets))
    # One fsync per message (or two, sending and sent) before; each shares a window now.
    assert 1 <= fsyncs[0] < targets / 4, fsyncs
