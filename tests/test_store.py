"""The state store on its own: crash mid-send, schema guard, silent priming."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alertd.errors import StoreError
from alertd.market import Market
from alertd.models import Job, SavedSearch, Target
from alertd.store import Store
from tests.conftest import RunCli, WriteConfig
from tests.webhook import WebhookCollector

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
HOOK = Target.for_url("json://127.0.0.1:9/hook", "hook")
SEARCH = SavedSearch(name="all", targets=(HOOK,))


def state_files(state_dir: Path) -> dict[str, bytes]:
    """Every file in the state directory but the lock, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(state_dir.iterdir()) if p.suffix != ".lock"}


def test_a_send_interrupted_by_a_crash_is_owed_again_after_restart(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.mark_primed(SEARCH, NOW)
    store.record_matches(SEARCH, [Job(id="j1", title="One", status="OPEN")], NOW)
    (alert,) = store.due(NOW)
    store.mark_sending(alert, NOW)
    assert store.due(NOW) == []  # in flight: not offered twice within one process
    store.close()  # the process dies here, before the outcome is written

    again = Store.open(tmp_path)
    (owed,) = again.due(NOW)
    assert owed.job.id == "j1" and owed.attempts == 1
    again.close()


def test_sent_alerts_stay_sent_and_failed_ones_wait_their_turn(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.mark_primed(SEARCH, NOW)
        store.record_matches(SEARCH, [Job(id="a", status="OPEN"), Job(id="b", status="OPEN")], NOW)
        first, second = store.due(NOW)
        store.mark_sending(first, NOW)
        store.mark_sent(first, NOW)
        store.mark_sending(second, NOW)
        store.mark_failed(second, "503", NOW + timedelta(minutes=5))
        assert store.due(NOW + timedelta(minutes=4)) == []
        assert [a.job.id for a in store.due(NOW + timedelta(minutes=5))] == ["b"]
        # the same job matched again later is not owed again
        assert store.record_matches(SEARCH, [Job(id="a", status="OPEN")], NOW) == 0
    with Store.open(tmp_path) as store:
        assert store.counts() == {"pending": 1, "held": 0, "sending": 0, "sent": 1, "withdrawn": 0}


def test_priming_records_without_owing(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        assert store.search_state(SEARCH) is None
        store.begin_priming(SEARCH, NOW)
        store.prime(SEARCH, ["x", "y"], NOW)
        state = store.search_state(SEARCH)
        assert state is not None and state.seen == {"x", "y"} and not state.primed
        assert state.since == NOW and state.fingerprint == SEARCH.fingerprint()
        store.mark_primed(SEARCH, NOW)
        assert store.search_state(SEARCH).primed is True  # type: ignore[union-attr]
        edited = SavedSearch(name="all", q="audio", targets=(HOOK,))
        assert store.search_state(edited) is None  # new filters: silent again
        assert store.due(NOW) == []
        assert store.record_matches(SEARCH, [Job(id="x"), Job(id="z")], NOW) == 1


def test_a_state_from_a_newer_alertd_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "alertd.json"
    path.write_text(json.dumps({"meta": {"1": {"schema_version": 99}}}))
    before = path.read_text()
    with pytest.raises(StoreError, match="schema version 99"):
        Store.open(tmp_path)
    assert path.read_text() == before


def test_a_snapshot_reads_beside_the_lock_holder_and_never_writes(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.mark_primed(SEARCH, NOW)
        store.commit()
        before = state_files(tmp_path)
        copy = Store.snapshot(tmp_path)  # while `store` holds the lock
        copy.record_matches(SEARCH, [Job(id="new", status="OPEN")], NOW)
        (alert,) = copy.due(NOW)
        copy.mark_sending(alert, NOW)
        copy.commit()
        assert store.due(NOW) == []
    assert state_files(tmp_path) == before


def test_old_delivered_rows_are_pruned_but_owed_rows_never(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.mark_primed(SEARCH, NOW)
        store.record_matches(SEARCH, [Job(id="old"), Job(id="owed")], NOW)
        sent, _owed = store.due(NOW)
        store.mark_sending(sent, NOW)
        store.mark_sent(sent, NOW)
        later = NOW + timedelta(days=200)
        assert store.prune(later, timedelta(days=180)) == 1
        assert store.counts()["sent"] == 0
        assert [a.job.id for a in store.due(later)] == ["owed"]
        assert store.prune(later, timedelta(days=180)) == 0


def test_withdrawn_rows_are_not_owed_and_keep_only_a_title(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.mark_primed(SEARCH, NOW)
        store.record_matches(SEARCH, [Job(id="gone", title="Gone", summary="long text")], NOW)
        assert store.withdraw(["gone", "unknown"], "closed", NOW) == 1
        assert store.due(NOW) == []
    done = json.loads((tmp_path / "done.json").read_text())
    (row,) = done["rows"].values()
    assert row["status"] == "withdrawn" and row["title"] == "Gone"
    assert "long text" not in json.dumps(done)
    assert json.loads((tmp_path / "outbox.json").read_text()) == {"rows": {}, "jobs": {}}


def test_a_state_from_alertd_0_1_is_migrated_losing_and_repeating_nothing(
    market: Market,
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    state_dir: Path,
) -> None:
    # Written by alertd 0.1's own store: 'audio' primed with seen-1, seen-2; sent-1
    # delivered; owed-1 owed after a failed send; held-1 held for a closure check;
    # 'priming' not primed yet.
    state_dir.mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "data" / "state-v1.json", state_dir / "alertd.json")
    for job_id in ("seen-1", "seen-2", "sent-1", "owed-1", "held-1"):
        market.add_job(id=job_id, title=job_id, category="Audio Annotation")
    # Posted before 'priming' began: silent. Posted since: it alerts, as in 0.1.
    market.add_job(id="rlhf-1", title="rlhf-1", category="RLHF", datePosted="2026-11-01T00:00:00Z")
    market.add_job(id="rlhf-2", title="rlhf-2", category="RLHF")
    market.add_job(id="new-1", title="new-1", category="Audio Annotation")
    config = write_config(
        f"channels:\n  hook: {webhook.url}\nsearches:\n"
        "  - name: audio\n    category: Audio Annotation\n    notify: [hook]\n"
        "  - name: priming\n    category: RLHF\n    notify: [hook]\n"
    )
    first = run_cli("once", "-c", config)
    assert first.exit_code == 0, first.output
    assert "state migrated to the new layout: 2 searches, 2 owed, 1 delivered" in first.output
    assert sorted(str(item["title"]) for item in webhook.received) == [
        "New OpenTrain job: held-1",
        "New OpenTrain job: new-1",
        "New OpenTrain job: owed-1",
        "New OpenTrain job: rlhf-2",
    ]
    assert (state_dir / "alertd.json.migrated").exists()
    assert not (state_dir / "alertd.json").exists()
    again = run_cli("once", "-c", config)
    assert again.exit_code == 0, again.output
    assert len(webhook.received) == 4


def test_seen_ids_round_trip_whatever_their_characters(tmp_path: Path) -> None:
    odd = SavedSearch(name="odd", targets=(HOOK,))
    with Store.open(tmp_path) as store:
        store.prime(SEARCH, ["a", "b"], NOW)
        store.prime(odd, ["with space", "tab\there", "x"], NOW)
    with Store.open(tmp_path) as store:
        assert store.seen_ids("all") == {"a", "b"}
        assert store.seen_ids("odd") == {"with space", "tab\there", "x"}


OLD = Target.for_url("json://127.0.0.1:9/old", "old")
NEW = Target.for_url("json://127.0.0.1:9/new", "new")
OTHER = Target.for_url("json://127.0.0.1:9/other", "other")


def owing_old(tmp_path: Path) -> Store:
    """A store where search 'all' (notifying OLD and OTHER) owes OLD job j1; OTHER had it."""
    store = Store.open(tmp_path)
    search = SavedSearch(name="all", targets=(OLD, OTHER))
    store.mark_primed(search, NOW)
    assert store.retarget(search, {OLD.key, OTHER.key}, NOW) == 0  # first sight: recorded
    store.record_matches(search, [Job(id="j1", title="One", status="OPEN")], NOW)
    sent = next(a for a in store.due(NOW) if a.target_key == OTHER.key)
    store.mark_sending(sent, NOW)
    store.mark_sent(sent, NOW)
    return store


def test_a_replaced_url_hands_what_it_was_owed_to_the_new_one_once(tmp_path: Path) -> None:
    store = owing_old(tmp_path)
    replaced = SavedSearch(name="all", targets=(NEW, OTHER))
    assert store.retarget(replaced, {NEW.key, OTHER.key}, NOW) == 1
    assert [(a.target_key, a.job.id) for a in store.due(NOW)] == [(NEW.key, "j1")]  # not OTHER
    store.close()
    with Store.open(tmp_path) as again:  # the move was written, and is not repeated
        assert again.retarget(replaced, {NEW.key, OTHER.key}, NOW) == 0
        assert [(a.target_key, a.job.id) for a in again.due(NOW)] == [(NEW.key, "j1")]
        assert again.counts()["withdrawn"] == 1


def test_a_url_another_search_still_uses_keeps_what_it_is_owed(tmp_path: Path) -> None:
    store = owing_old(tmp_path)
    replaced = SavedSearch(name="all", targets=(NEW, OTHER))
    assert store.retarget(replaced, {OLD.key, NEW.key, OTHER.key}, NOW) == 0  # OLD in use
    assert [(a.target_key, a.job.id) for a in store.due(NOW)] == [(OLD.key, "j1")]
    store.close()


def test_a_url_only_removed_moves_nothing(tmp_path: Path) -> None:
    store = owing_old(tmp_path)
    fewer = SavedSearch(name="all", targets=(OTHER,))
    assert store.retarget(fewer, {OTHER.key}, NOW) == 0
    assert store.due(NOW, {OTHER.key}) == []  # OTHER is not sent j1 a second time
    store.close()


def test_a_crash_between_the_two_steps_of_a_move_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = owing_old(tmp_path)
    store.commit()
    replaced = SavedSearch(name="all", targets=(NEW, OTHER))

    def die(*args: object) -> None:
        raise KeyboardInterrupt  # the process stops once the new rows are written

    monkeypatch.setattr(store, "_finish", die)
    with pytest.raises(KeyboardInterrupt):
        store.retarget(replaced, {NEW.key, OTHER.key}, NOW)
    store.lock.close()  # type: ignore[union-attr]
    monkeypatch.undo()
    with Store.open(tmp_path) as again:
        assert again.retarget(replaced, {NEW.key, OTHER.key}, NOW) == 1
        assert [(a.target_key, a.job.id) for a in again.due(NOW)] == [(NEW.key, "j1")]


def test_every_state_file_is_a_tinydb_database_anyone_can_open(tmp_path: Path) -> None:
    """README: each state file is a TinyDB database that ``tinydb.TinyDB`` opens and reads."""
    from tinydb import Query, TinyDB

    with Store.open(tmp_path) as store:
        store.mark_primed(SEARCH, NOW)
        store.record_matches(SEARCH, [Job(id="j1", title="One", status="OPEN")], NOW)
        store.commit()
    with TinyDB(tmp_path / "outbox.json", access_mode="r") as db:
        (row,) = db.table("rows").search(Query().job_id == "j1")
        assert row["status"] == "pending" and row["target"] == HOOK.key
    for name in ("feed", "queries", "done", "searches"):
        with TinyDB(tmp_path / f"{name}.json", access_mode="r") as db:
            assert db.tables(), name
    with TinyDB(tmp_path / "searches.json", access_mode="r") as db:
        assert [doc["name"] for doc in db.table("searches").all()] == ["all"]
