"""What alertd remembers: the only module that imports tinydb.

One JSON file, ``alertd.json`` in the state directory, holds four tables:

- ``meta``: the schema version;
- ``searches``: each saved search's filter fingerprint, written when it was primed
  (its first, silent run);
- ``seen``: per search, the job ids it has already matched;
- ``outbox``: one row per (target, job): which searches matched it, and whether it is
  ``pending``, ``sending`` or ``sent``. A row is written before anything is sent and
  updated with the outcome after, so a restart knows exactly what is still owed.

Every write replaces the file atomically (temp file, fsync, rename): a kill or a full
disk leaves the previous state whole. A lock file keeps two processes off one state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from tinydb import TinyDB, where
from tinydb.storages import MemoryStorage, Storage
from tinydb.table import Document

from alertd.errors import StoreError
from alertd.models import Alert, DeliveryStatus, Job, SavedSearch, format_time, parse_time

SCHEMA_VERSION = 1
STATE_FILE = "alertd.json"
LOCK_FILE = "alertd.lock"


def _is_tables(data: object) -> bool:
    """True for TinyDB's shape: tables of documents, each a JSON object."""
    return isinstance(data, dict) and all(
        isinstance(table, dict) and all(isinstance(doc, dict) for doc in table.values())
        for table in data.values()
    )


class AtomicJSONStorage(Storage):
    """TinyDB storage that keeps the document in memory and replaces the file atomically."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._cache: dict[str, Any] | None = None

    def read(self) -> dict[str, Any] | None:
        if self._cache is None:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
            if not text.strip():
                return None
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise StoreError(
                    f"state file {self.path} is not valid JSON ({exc}); "
                    "move it aside to start with an empty state"
                ) from exc
            if not _is_tables(data):
                raise StoreError(
                    f"state file {self.path} is JSON but not an alertd state; "
                    "move it aside to start with an empty state"
                )
            self._cache = data
        return self._cache

    def write(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".alertd-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError:
            self._cache = None  # memory may now be ahead of the disk: reload on next read
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._cache = data
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def close(self) -> None:
        self._cache = None


def _new_row(target_key: str, job: Job, search: str, stamp: str) -> dict[str, Any]:
    return {
        "target": target_key,
        "job_id": job.id,
        "job": job.to_record(),
        "searches": [search],
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "created_at": stamp,
        "next_attempt_at": stamp,
        "last_error": None,
        "sent_at": None,
    }


def _done_job(row: Mapping[str, Any]) -> dict[str, Any]:
    """A delivered or withdrawn row keeps only what ``status`` shows: the job's id and title."""
    return {"id": row["job_id"], "title": row.get("job", {}).get("title")}


def _add_search(name: str) -> Callable[[MutableMapping[str, Any]], None]:
    def add(row: MutableMapping[str, Any]) -> None:
        if name not in row["searches"]:
            row["searches"].append(name)

    return add


def _row_to_alert(row: Document) -> Alert:
    return Alert(
        row_id=row.doc_id,
        target_key=row["target"],
        job=Job.from_record(row["job"]),
        searches=tuple(row["searches"]),
        attempts=int(row.get("attempts", 0)),
        created_at=parse_time(row.get("created_at")),
    )


class Store:
    """Seen job ids, the outbox and per-search state, over one TinyDB."""

    def __init__(self, db: TinyDB, lock: TextIO | None = None, path: Path | None = None) -> None:
        self.db = db
        self.lock = lock
        self.path = path
        self.searches = db.table("searches")
        self.seen = db.table("seen")
        self.outbox = db.table("outbox")
        self.meta = db.table("meta")

    # -- opening and closing -------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        """Open (creating if needed) the store in ``state_dir``, holding its lock."""
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            lock = (state_dir / LOCK_FILE).open("a+", encoding="utf-8")
        except OSError as exc:
            raise StoreError(
                f"cannot use state directory {state_dir}: {exc.strerror or exc}; "
                "set state_dir (or ALERTD_STATE_DIR) to a writable directory"
            ) from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise StoreError(
                f"state directory {state_dir} is in use by alertd (pid {holder}); "
                "stop that one first or give this one another state_dir"
            ) from exc
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        path = state_dir / STATE_FILE
        try:
            store = cls(TinyDB(str(path), storage=AtomicJSONStorage), lock=lock, path=path)
            store._check_schema()
            store.recover_interrupted()
        except StoreError:
            lock.close()
            raise
        return store

    @classmethod
    def snapshot(cls, state_dir: Path) -> Store:
        """A private in-memory copy of the state, read without the lock.

        Safe while a daemon runs (every write is an atomic rename), so ``status`` and
        dry runs work beside ``alertd run``. Nothing done to the copy reaches the disk.
        """
        path = state_dir / STATE_FILE
        data = AtomicJSONStorage(str(path)).read() or {}
        db = TinyDB(storage=MemoryStorage)
        db.storage.write(data)
        store = cls(db, path=path)
        store._check_schema()
        return store

    def close(self) -> None:
        """Close the database and release the lock."""
        self.db.close()
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise StoreError(
                f"cannot write state file {self.path}: {exc.strerror or exc}; "
                "nothing was lost, it will be retried (free some disk space?)"
            ) from exc

    def _check_schema(self) -> None:
        rows = self.meta.all()
        if not rows:
            with self._writing():
                self.meta.insert({"schema_version": SCHEMA_VERSION})
            return
        version = rows[0].get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"state file {self.path} has schema version {version}, this alertd "
                f"understands {SCHEMA_VERSION}; run the alertd version that wrote it"
            )

    # -- saved searches ------------------------------------------------------

    def search_state(self, search: SavedSearch) -> dict[str, Any] | None:
        """What the store knows of this search with its current filters; None if nothing.

        ``{"primed": True, ...}`` once its first (silent) run is complete, otherwise
        ``{"primed": False, "priming_since": ISO}``. A search whose filters changed is
        unknown again, so an edited search starts silent too.
        """
        row = self.searches.get(where("name") == search.name)
        if row is None or row.get("fingerprint") != search.fingerprint():
            return None
        return dict(row)

    def begin_priming(self, search: SavedSearch, now: datetime) -> None:
        """Start a search's silent first run: jobs posted before ``now`` will never alert."""
        with self._writing():
            self.searches.upsert(
                {
                    "name": search.name,
                    "fingerprint": search.fingerprint(),
                    "priming_since": format_time(now),
                    "primed": False,
                    "config": search.source,
                },
                where("name") == search.name,
            )

    def seen_ids(self, search: str) -> set[str]:
        """Job ids this search has already matched."""
        row = self.seen.get(where("search") == search)
        return set() if row is None else set(row["ids"])

    def _add_seen(self, search: SavedSearch, job_ids: set[str]) -> None:
        # One document per search holding its ids: compact, and one write per search.
        if job_ids:
            merged = sorted(self.seen_ids(search.name) | job_ids)
            self.seen.upsert(
                {"search": search.name, "config": search.source, "ids": merged},
                where("search") == search.name,
            )

    def prime(self, search: SavedSearch, job_ids: Iterable[str], now: datetime) -> int:
        """Record jobs as seen by a search without owing any alert for them."""
        fresh = set(job_ids) - self.seen_ids(search.name)
        with self._writing():
            self._add_seen(search, fresh)
        return len(fresh)

    def mark_primed(self, search: SavedSearch, now: datetime) -> None:
        """From now on, this search's new matches are owed as alerts."""
        with self._writing():
            self.searches.upsert(
                {
                    "name": search.name,
                    "fingerprint": search.fingerprint(),
                    "primed": True,
                    "primed_at": format_time(now),
                    "config": search.source,
                },
                where("name") == search.name,
            )

    def record_matches(self, search: SavedSearch, jobs: Iterable[Job], now: datetime) -> int:
        """Owe an alert to each of the search's targets for each job it had not matched before.

        A target already owed (or already sent) a job gets no second row: a pending row
        gains this search's name instead, so one alert names every search that matched.
        The rows are written before the jobs are marked seen, so a crash in between only
        means the same rows are found again next cycle. Returns how many jobs were new.
        """
        seen = self.seen_ids(search.name)
        new_jobs = {job.id: job for job in jobs if job.id not in seen}
        if not new_jobs:
            return 0
        keys = {t.key for t in search.targets}
        existing = {
            (row["target"], row["job_id"]): row
            for row in self.outbox.search(where("job_id").one_of(list(new_jobs)))
            if row["target"] in keys
        }
        stamp = format_time(now)
        fresh_rows: list[dict[str, Any]] = []
        merges: list[int] = []
        for job in new_jobs.values():
            for key in keys:
                row = existing.get((key, job.id))
                if row is None:
                    fresh_rows.append(_new_row(key, job, search.name, stamp))
                elif row["status"] == DeliveryStatus.PENDING and search.name not in row["searches"]:
                    merges.append(row.doc_id)
        with self._writing():
            if fresh_rows:
                self.outbox.insert_multiple(fresh_rows)
            if merges:
                self.outbox.update(_add_search(search.name), doc_ids=merges)
            self._add_seen(search, set(new_jobs))
        return len(new_jobs)

    # -- the outbox ----------------------------------------------------------

    def recover_interrupted(self) -> int:
        """Rows left ``sending`` by a process that died mid-send are owed again."""
        sending = where("status") == DeliveryStatus.SENDING.value
        if not self.outbox.contains(sending):
            return 0
        with self._writing():
            changed = self.outbox.update({"status": DeliveryStatus.PENDING.value}, sending)
        return len(changed)

    def due(self, now: datetime, target_keys: Iterable[str] | None = None) -> list[Alert]:
        """Pending alerts whose next attempt is due, oldest first."""
        keys = None if target_keys is None else set(target_keys)
        stamp = format_time(now)
        rows = [
            r
            for r in self.outbox.search(where("status") == DeliveryStatus.PENDING.value)
            if r["next_attempt_at"] <= stamp
            and (keys is None or r["target"] in keys)
            and not r.get("check_after")  # held until the job is confirmed still open
        ]
        rows.sort(key=lambda r: (r["created_at"], r.doc_id))
        return [_row_to_alert(r) for r in rows]

    def mark_sending(self, alert: Alert, now: datetime) -> None:
        """Written just before the send, so a crash mid-send is visible after a restart."""
        with self._writing():
            self.outbox.update(
                {
                    "status": DeliveryStatus.SENDING.value,
                    "attempts": alert.attempts + 1,
                    "last_attempt_at": format_time(now),
                },
                doc_ids=[alert.row_id],
            )

    def mark_sent(self, alert: Alert, now: datetime) -> None:
        """The target accepted the alert: it will never be sent there again."""
        with self._writing():
            self.outbox.update(
                {
                    "status": DeliveryStatus.SENT.value,
                    "sent_at": format_time(now),
                    "last_error": None,
                    "job": {"id": alert.job.id, "title": alert.job.title},  # all status needs
                },
                doc_ids=[alert.row_id],
            )

    def mark_failed(self, alert: Alert, error: str, retry_at: datetime) -> None:
        """The target did not accept it: owed again from ``retry_at``."""
        with self._writing():
            self.outbox.update(
                {
                    "status": DeliveryStatus.PENDING.value,
                    "next_attempt_at": format_time(retry_at),
                    "last_error": error,
                },
                doc_ids=[alert.row_id],
            )

    def withdraw(self, job_ids: Iterable[str], reason: str, now: datetime) -> int:
        """Owed alerts for jobs that closed or expired are no longer owed (nor sent)."""
        ids = set(job_ids)
        if not ids:
            return 0
        owed = where("status").one_of([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value])
        rows = self.outbox.search(owed & where("job_id").one_of(sorted(ids)))
        if not rows:
            return 0
        stamp = format_time(now)

        def withdrawn(row: MutableMapping[str, Any]) -> None:
            row.update(
                status=DeliveryStatus.WITHDRAWN.value,
                last_error=reason,
                withdrawn_at=stamp,
                job=_done_job(row),
            )

        with self._writing():
            self.outbox.update(withdrawn, doc_ids=[row.doc_id for row in rows])
        return len(rows)

    def prune(self, now: datetime, keep: timedelta) -> int:
        """Forget delivered and withdrawn rows older than ``keep``; owed rows are never pruned."""
        cutoff = format_time(now - keep)
        old = ((where("status") == DeliveryStatus.SENT.value) & (where("sent_at") < cutoff)) | (
            (where("status") == DeliveryStatus.WITHDRAWN.value) & (where("withdrawn_at") < cutoff)
        )
        if not self.outbox.contains(old):
            return 0
        with self._writing():
            return len(self.outbox.remove(old))

    def owed_job_ids(self) -> set[str]:
        """Jobs that some target is still owed."""
        owed = where("status") == DeliveryStatus.PENDING.value
        return {row["job_id"] for row in self.outbox.search(owed)}

    def refresh_owed(self, jobs: Iterable[Job]) -> int:
        """Owed rows take the job as the API shows it now (a deadline moved, a title fixed)."""
        latest = {job.id: job.to_record() for job in jobs}
        rows = [
            row
            for row in self.outbox.search(where("status") == DeliveryStatus.PENDING.value)
            if row["job_id"] in latest and row["job"] != latest[row["job_id"]]
        ]
        if not rows:
            return 0

        def refresh(row: MutableMapping[str, Any]) -> None:
            row["job"] = latest[row["job_id"]]

        with self._writing():
            self.outbox.update(refresh, doc_ids=[row.doc_id for row in rows])
        return len(rows)

    def flag_for_check(self, edited: Mapping[str, datetime | None], now: datetime) -> int:
        """Hold owed rows of jobs edited since they matched until ``GET /jobs/{id}`` confirms
        them open: the change feed shows a job closed and then edited only as edited.

        An edit already confirmed is not held again; ``held_since`` records when the hold
        began and is never moved, so a hold can be bounded.
        """
        changes: dict[tuple[str, str], tuple[str, str]] = {}
        doc_ids: list[int] = []
        for row in self.outbox.search(where("status") == DeliveryStatus.PENDING.value):
            if row["job_id"] not in edited:
                continue
            at = edited[row["job_id"]]
            stamp = format_time(at) if at else "0"
            if stamp <= (row.get("confirmed_edit") or "") or stamp <= (
                row.get("check_after") or ""
            ):
                continue
            changes[(row["target"], row["job_id"])] = (
                stamp,
                row.get("held_since") or format_time(now),
            )
            doc_ids.append(row.doc_id)
        if not changes:
            return 0

        def flag(row: MutableMapping[str, Any]) -> None:  # TinyDB passes the row, not its id
            row["check_after"], row["held_since"] = changes[(row["target"], row["job_id"])]

        with self._writing():
            self.outbox.update(flag, doc_ids=doc_ids)
        return len(changes)

    def jobs_to_check(self) -> dict[str, tuple[datetime | None, datetime | None]]:
        """Held jobs: the edit an answer must not predate, and since when they are held."""
        held: dict[str, tuple[datetime | None, datetime | None]] = {}
        for row in self.outbox.search(where("status") == DeliveryStatus.PENDING.value):
            if row.get("check_after"):
                held[row["job_id"]] = (
                    parse_time(row["check_after"]),
                    parse_time(row.get("held_since")),
                )
        return held

    def clear_check(self, job_ids: Iterable[str]) -> None:
        """The jobs were confirmed open (or could not be checked for too long): due again."""
        ids = set(job_ids)
        pending = where("status") == DeliveryStatus.PENDING.value
        rows = [
            r for r in self.outbox.search(pending) if r["job_id"] in ids and r.get("check_after")
        ]
        if not rows:
            return

        def clear(row: MutableMapping[str, Any]) -> None:
            row["confirmed_edit"] = row["check_after"]
            row["check_after"] = row["held_since"] = None

        with self._writing():
            self.outbox.update(clear, doc_ids=[r.doc_id for r in rows])

    def count_owed(self, target_keys: Iterable[str]) -> tuple[int, int]:
        """(owed, of which held for a closure check) for the given targets."""
        keys = set(target_keys)
        rows = [
            r
            for r in self.outbox.search(where("status") == DeliveryStatus.PENDING.value)
            if r["target"] in keys
        ]
        return len(rows), sum(1 for r in rows if r.get("check_after"))

    def forget_searches_except(self, names: Iterable[str], source: str) -> int:
        """Drop what is remembered of searches that the config file ``source`` no longer has.

        A search removed and later added back under the same name then starts silent,
        like any new search, instead of alerting everything posted while it was gone.
        Searches another config file wrote to the same state directory are left alone.
        """
        keep = set(names)
        mine = (source, None)  # rows without a config came from before files were recorded
        gone = {r["name"] for r in self.searches.all() if r.get("config") in mine} - keep
        gone |= {r["search"] for r in self.seen.all() if r.get("config") in mine} - keep
        if not gone:
            return 0
        with self._writing():
            self.searches.remove(where("name").one_of(sorted(gone)))
            self.seen.remove(where("search").one_of(sorted(gone)))
        return len(gone)

    def changes_since(self) -> datetime | None:
        """Where the change feed was last read up to (its ``until``)."""
        rows = self.meta.all()
        return parse_time(rows[0].get("changes_until")) if rows else None

    def set_changes_since(self, until: datetime) -> None:
        """Remember the change feed's ``until``, to pass as the next ``since``."""
        with self._writing():
            self.meta.update(
                {"changes_until": format_time(until)}, doc_ids=[self.meta.all()[0].doc_id]
            )

    def counts(self) -> dict[str, int]:
        """Outbox rows per status, for the log line and ``alertd status``."""
        totals = {status.value: 0 for status in DeliveryStatus}
        for row in self.outbox.all():
            totals[row["status"]] = totals.get(row["status"], 0) + 1
        return totals

    def pending_rows(self) -> list[dict[str, Any]]:
        """Every owed row as stored (for status output)."""
        return [
            dict(r) for r in self.outbox.search(where("status") == DeliveryStatus.PENDING.value)
        ]
