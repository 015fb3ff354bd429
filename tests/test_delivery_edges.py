"""What a hostile review of delivery found: each test reproduced a bug, now fixed.

Pay-raised and reopened alerts that could erase the record of a send, filters that
forgot a dropped job at priming, one refused job holding back a batch for good, a kill
while a list message was being recorded, memory that grew for months, and smaller
rendering and filter edges.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alertd.config import load_config
from alertd.deliver import Outcome
from alertd.errors import ConfigError
from alertd.match import why_dropped
from alertd.models import Filters, Job, MinPay, Pay, Target
from alertd.render import Item, Message, render_discord, render_plain, render_telegram
from tests.world import FAST, Recorder, World

PAY = {"paymentType": "PAY_PER_HOUR", "currency": "USD", "hourlyMin": 12, "hourlyMax": 18}
STEP = timedelta(minutes=1)  # each cycle here is a minute after the one before
NINE = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def world(tmp_path: Path, body: str, start: datetime | None = None) -> World:
    """A clocked world with the config ``body``."""
    made = World(tmp_path, seed=3, start=start)
    made.body(body)
    return made


def test_a_job_dropped_by_a_filter_while_priming_alerts_when_it_comes_to_fit(
    tmp_path: Path,
) -> None:
    w = world(tmp_path, "searches:\n  - name: mine\n    min_pay: {hourly: 20}\n")
    try:
        w.market.add_job(id="J", title="Audio review", pay=PAY)  # $18 top: dropped
        w.cycle(STEP)  # priming
        w.cycle(STEP)
        w.market.update_job("J", pay={**PAY, "hourlyMax": 25})  # comes to fit
        w.cycle(STEP)
        w.cycle(STEP)
    finally:
        w.stop()
    assert w.send.titles() == ["New OpenTrain job: Audio review"]


def test_a_job_dropped_by_a_filter_after_priming_alerts_when_it_comes_to_fit(
    tmp_path: Path,
) -> None:
    w = world(tmp_path, "searches:\n  - name: mine\n    min_pay: {hourly: 20}\n")
    try:
        w.cycle(STEP)  # priming
        w.market.add_job(id="J", title="Audio review", pay=PAY)
        w.cycle(STEP)
        w.market.update_job("J", pay={**PAY, "hourlyMax": 25})
        w.cycle(STEP)
        w.cycle(STEP)
    finally:
        w.stop()
    assert w.send.titles() == ["New OpenTrain job: Audio review"]


def test_a_withdrawn_pay_raised_alert_keeps_the_record_that_the_job_was_sent(
    tmp_path: Path,
) -> None:
    w = world(
        tmp_path,
        "searches:\n  - name: a\n    also: [pay_raised]\n  - name: b\n    min_pay: {hourly: 30}\n",
    )
    try:
        w.cycle(STEP)  # priming both
        w.market.add_job(id="J", title="Audio review", pay=PAY)
        w.cycle(STEP)  # a: New (b drops it: $18 < 30)
        w.send.up = False
        w.market.update_job("J", pay={**PAY, "hourlyMax": 25})
        w.cycle(STEP)  # pay raised owed, the target is down
        w.market.close_job("J")
        w.cycle(STEP)  # withdrawn: the job closed
        w.send.up = True
        w.market.update_job("J", status="OPEN", pay={**PAY, "hourlyMax": 35})
        w.cycle(STEP)
        w.cycle(STEP)
    finally:
        w.stop()
    # The target was told J once ("New"), and the job now pays more than it was told.
    assert w.send.titles() == [
        "New OpenTrain job: Audio review",
        "Pay raised: Audio review",
    ]


class Killed(BaseException):
    pass


def test_a_kill_while_recording_an_accepted_list_message_resends_none_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alertd.store import Store

    w = world(tmp_path, "searches:\n  - name: mine\n", start=NINE)
    try:
        w.cycle(STEP)  # priming, 09:01
        for i in range(30):
            w.market.add_job(id=f"J{i}", title=f"Job {i}")
        real = Store._finish
        calls = {"n": 0}

        def dying(self: Store, *args: Any) -> None:  # kill -9 after 10 rows are recorded
            if calls["n"] == 10:
                raise Killed
            calls["n"] += 1
            real(self, *args)

        monkeypatch.setattr(Store, "_finish", dying)
        monkeypatch.setattr(Store, "close", lambda self: self.lock.close())  # writes nothing
        with pytest.raises(Killed):
            w.cycle(STEP)
        monkeypatch.undo()
        w.cycle(STEP)
    finally:
        w.stop()
    # One message listing all 30 was accepted; the journal says so for all 30 at once.
    assert w.send.titles() == ["30 new OpenTrain jobs since 09:02"]


def test_a_long_running_store_keeps_only_owed_jobs_and_no_descriptions(tmp_path: Path) -> None:
    from alertd.api import OpenTrainClient
    from alertd.pipeline import run_once
    from alertd.store import Store

    w = world(tmp_path, "searches:\n  - name: mine\n")
    config, clock = w.config, w.clock
    assert config is not None
    try:
        with (
            Store.open(config.state_dir) as store,
            OpenTrainClient(w.server.url, requests_per_minute=FAST, api_limit=FAST) as client,
        ):
            run_once(config, client, store, w.send, clock=clock)  # priming
            for batch in range(5):
                for i in range(10):
                    w.market.add_job(id=f"J{batch}-{i}", descriptionText="x" * 50_000)
                clock.now += STEP
                run_once(config, client, store, w.send, clock=clock)
            owed = len(store.owed)
            kept = sum(len(j.description or "") for j in store.jobs.values())
    finally:
        w.stop()
    assert len(w.send.sent) == 50 and owed == 0  # every job delivered
    # Nothing is owed, yet the daemon's memory holds all 50 jobs with 2.5 MB of descriptions.
    assert (len(store.jobs), kept) == (0, 0)


class Picky(Recorder):
    """A service that answers 400 to any message holding job BAD (say, a field it cannot take)."""

    def __call__(self, target: Target, message: Message) -> Outcome:
        if any(item.job.id == "BAD" for item in message.items):
            return Outcome(False, "error=400 bad request", refused_message=True)
        return super().__call__(target, message)


def test_one_job_a_service_refuses_does_not_hold_back_a_batch_for_good(tmp_path: Path) -> None:
    w = world(
        tmp_path,
        "retry_schedule: [60]\nchannels:\n  team:\n    url: json://localhost/hook\n    batch: 5m\n"
        "searches:\n  - name: mine\n    notify: team\n",
    )
    w.send = Picky()
    try:
        w.cycle(STEP)  # priming
        w.market.add_job(id="BAD", title="bad")
        w.cycle(STEP)
        for i in range(24):  # two hours, a job every 5 minutes
            w.market.add_job(id=f"J{i}", title=f"good {i}")
            w.cycle(5 * STEP)
    finally:
        w.stop()
    delivered = [title for message in w.send.to("team") for title in message]
    assert delivered == [f"good {i}" for i in range(24)]  # each once, in order; "bad" never


def test_no_pay_raised_alert_for_a_job_edited_out_of_a_free_text_search(tmp_path: Path) -> None:
    w = world(
        tmp_path, "searches:\n  - name: mine\n    q: german\n    also: [pay_raised, reopened]\n"
    )
    try:
        w.cycle(STEP)  # priming
        w.market.add_job(id="J", title="German audio", descriptionText="", pay=PAY)
        w.cycle(STEP)
        w.market.update_job("J", title="French audio", pay={**PAY, "hourlyMax": 40})
        w.cycle(STEP)
        w.cycle(STEP)
    finally:
        w.stop()
    # The search no longer lists J (q: german); its members are told its pay went up anyway.
    assert w.send.titles() == ["New OpenTrain job: German audio"]


def test_a_kill_between_the_state_files_loses_no_record_of_a_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alertd.store import Store
    from alertd.store.files import BufferedJSONStorage

    w = world(
        tmp_path,
        "searches:\n  - name: a\n    also: [pay_raised]\n  - name: b\n    min_pay: {hourly: 30}\n",
    )
    try:
        w.cycle(STEP)
        w.market.add_job(id="J", title="Audio review", pay=PAY)
        w.cycle(STEP)  # a: New
        real_flush, real_close = BufferedJSONStorage.flush, Store.close

        def flush(
            self: BufferedJSONStorage,
        ) -> None:  # kill -9 right after done.json was replaced, before outbox.json
            if self.path.name == "outbox.json" and self.dirty:
                raise Killed
            real_flush(self)

        def close(self: Store) -> None:  # a killed process writes nothing more
            self.lock.close()
            self.lock = None

        monkeypatch.setattr(BufferedJSONStorage, "flush", flush)
        monkeypatch.setattr(Store, "close", close)
        w.market.update_job("J", pay={**PAY, "hourlyMax": 25})
        with pytest.raises(Killed):
            w.cycle(STEP)
        monkeypatch.setattr(BufferedJSONStorage, "flush", real_flush)
        monkeypatch.setattr(Store, "close", real_close)
        w.cycle(STEP)
        w.market.update_job("J", pay={**PAY, "hourlyMax": 35})  # now b matches too
        w.cycle(STEP)
        w.cycle(STEP)
    finally:
        w.stop()
    titles = w.send.titles()
    assert titles.count("New OpenTrain job: Audio review") == 1, titles


# -- rendering, config and filter edges ------------------------------------------


def test_plain_text_breaks_a_posters_links_and_drops_their_invisible_characters() -> None:
    j = Job(id="J", title="Apply at https://evil.example/login or evil.example", summary="x\u200by")
    for message in (Message((Item(j, ("s",)),)), Message((Item(j, ("s",)), Item(j, ("s",))))):
        title, body = render_plain(message, UTC)
        assert "https://evil" not in title + body and "evil.example" not in title + body
        assert "x\u200by" not in body  # the poster's zero-width space: gone
    assert "\nxy\n" in render_plain(Message((Item(j, ("s",)),)), UTC)[1]  # summary, joined up


def test_a_reopened_or_raised_job_in_a_list_message_says_so() -> None:
    a = Item(Job(id="A", title="Audio review"), ("s",), "reopened")
    b = Item(Job(id="B", title="Image boxes"), ("s",))
    m = Message((a, b), heading="2 OpenTrain jobs since 08:00")
    assert "Reopened" in render_plain(m, UTC)[1]
    assert "Reopened" in render_telegram(m, UTC)
    assert "Reopened" in str(render_discord(m, UTC)["embeds"][0])


def test_two_channels_with_one_url_and_two_paces_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(
        f"state_dir: {tmp_path}/s\nchannels:\n  now:\n    url: json://localhost/hook\n"
        "  morning:\n    url: json://localhost/hook\n    digest: ['08:00']\n"
        "searches:\n  - name: s\n    notify: [morning]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "a.yaml:6: channels.morning.url: the same URL as channel 'now'" in str(
        caught.value.describe()
    )


def test_exclude_sees_through_case_folding_width_and_invisible_joiners() -> None:
    def dropped(word: str, text: str) -> bool:
        return why_dropped(Job(id="J", title=text), Filters(exclude=(word,))) is not None

    assert dropped("straße", "STRASSE cleanup")  # full case folding
    assert dropped("medical", "ｍｅｄｉｃａｌ notes")  # NFKC
    assert dropped("medical", "med\u034fical notes")  # combining grapheme joiner


def test_min_pay_reads_a_range_written_backwards_by_its_top() -> None:
    job = Job(id="J", pay=Pay("PAY_PER_HOUR", "USD", None, 50, 5))
    assert why_dropped(job, Filters(min_pay=MinPay(20, None, None))) is None
