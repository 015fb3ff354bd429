"""What alertd remembers: the only package that imports tinydb.

The state lives in the state directory as a few TinyDB files, split by how often they
change, so that what a write costs follows the change and not the size of the state:

- ``feed.json``: the change feed's position (``until``), events not yet resolved and
  recent closures. A quiet cycle writes this small file and nothing else.
- ``queries.json``: per distinct API query, when it was last fetched whole and whether
  it still owes an answer for an event.
- ``outbox.json``: owed alerts (``pending``, ``held``, ``sending``) and the jobs they are
  about, one record per job.
- ``done.json``: delivered and withdrawn alerts, kept ``KEEP_DONE`` so that no target is
  sent a job twice and ``alertd status`` can tell what happened.
- ``searches.json``: per saved search, its filter fingerprint, its priming and every
  job id it has matched (the large, slow-changing part).
- ``journal.jsonl``: each delivery's ``sending`` and its outcome, appended a line at a
  time, so "written before the send, outcome after" costs a line, not a file. Lines are
  written at once (a kill loses none) and fsynced before the next send, except that
  sends within ``SYNC_WINDOW`` of an fsync share it. The journal is folded into the
  files at the next commit and replayed at start.

Everything is held in memory; ``commit`` writes the files that changed, each atomically
(temp file, fsync, rename), in an order that makes every crash safe: delivered rows
before the outbox that no longer holds them, owed rows before the seen ids that stop
them being found again, the feed position last. The lock (``lock.py``, one process per
state directory), the delivery journal (``journal.py``) and the files' format
(``files.py``) are modules of their own. A state from alertd 0.1 (``alertd.json``) is
migrated on first open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

from tinydb import TinyDB

from alertd.errors import StateDamagedError, StoreError
from alertd.models import (
    OWED,
    Alert,
    DeliveryStatus,
    Event,
    Job,
    OutboxRow,
    Pay,
    QueryState,
    SavedSearch,
    SearchState,
    format_time,
    parse_time,
)
from alertd.store.files import (
    EPOCH,
    TEMP_PREFIX,
    BufferedJSONStorage,
    LazyRows,
    damaged,
    fix_for,
    is_trusted_link,
    iso,
    link_error,
    row_doc,
    row_from_doc,
    search_doc,
    search_from_doc,
    time_or,
)
from alertd.store.journal import JOURNAL_FILE, Journal
from alertd.store.legacy import LEGACY_FILE, migrate_legacy
from alertd.store.lock import LOCK_FILE as LOCK_FILE
from alertd.store.lock import DirectoryLock

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
# Written in this order by ``commit``: see the module docstring for why.
FILES = ("done", "outbox", "searches", "queries", "feed")
# Each file's own tables; every one is written, even empty (an alertd before 0.3 left
# an empty table, or a file with nothing in it, unwritten).
TABLES = {
    "done": ("rows",),
    "outbox": ("rows", "jobs"),
    "searches": ("searches",),
    "queries": ("queries",),
    "feed": ("meta", "positions", "events", "closed"),
}
QUARANTINE = "quarantine"
BROKEN_PREFIX = "broken-"

Key = tuple[str, str]
ONE = timedelta(seconds=1)
# Owed rows oldest first; rows made in the same instant by target, then job.
OWED_ORDER = attrgetter("created_at", "target", "job_id")
T = TypeVar("T")


def refuse_planted_links(state_dir: Path) -> None:
    """StoreError (one line) for a link alertd would write through: the journal as a
    link at all (it is appended and emptied in place), a state file linked by someone
    other than alertd's user or root. Said at start, not at the first write."""
    journal = state_dir / JOURNAL_FILE
    if journal.is_symlink():
        raise link_error(journal)
    for name in FILES:
        path = state_dir / f"{name}.json"
        if path.is_symlink() and not is_trusted_link(path):
            raise link_error(path)


def move_aside(state_dir: Path, why: StateDamagedError) -> Path:
    """Move a damaged state's files into ``broken-<UTC time>/`` in ``state_dir`` (the
    operator opted in: ``broken_state: move_aside``), with one WARNING saying what it
    costs. Returns the folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = state_dir / f"{BROKEN_PREFIX}{stamp}"
    try:
        for extra in range(1, 100):  # two moves in one second keep both
            try:
                folder.mkdir()
                break
            except FileExistsError:
                folder = state_dir / f"{BROKEN_PREFIX}{stamp}-{extra}"
        for name in [f"{file}.json" for file in FILES] + [JOURNAL_FILE]:
            path = state_dir / name
            if path.exists() or path.is_symlink():
                os.rename(path, folder / name)
    except OSError as exc:
        raise StoreError(
            f"cannot move the damaged state in {state_dir} aside into {folder}: "
            f"{exc.strerror or exc}; {fix_for(exc)}"
        ) from exc
    log.warning(
        "%s; broken_state is move_aside: the state's files are now in %s and alertd starts "
        "over: every search re-primes silently and the alerts that were owed are lost",
        str(why).partition("; ")[0],
        folder,
    )
    return folder


def _kept(job: Job) -> Job:
    """A job as the store keeps it: without its description (filters only need it once;
    it may be 50,000 characters, and a daemon runs for months)."""
    return job if job.description is None else replace(job, description=None)


def _move(table: dict[str, T], old: str, new: str) -> None:
    """``table[old]`` becomes ``table[new]``, unless ``new`` has its own already."""
    value = table.pop(old, None)
    if value is not None and new not in table:
        table[new] = value


STALE_TEMP = 600.0  # seconds: a temp file older than this is a write a kill interrupted


def remove_stale_temps(state_dir: Path) -> None:
    """Remove the temp files of writes a kill interrupted. One written to in the last
    ``STALE_TEMP`` s may be another thread's or process's write in progress (the bot's
    members.json, the heartbeat): it stays. A link planted there goes at once; what it
    points to stays."""
    now = time.time()
    for temp in state_dir.glob(TEMP_PREFIX + "*.tmp"):
        with contextlib.suppress(OSError):
            info = temp.lstat()
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime > STALE_TEMP:
                temp.unlink()


class Store:
    """Searches and their seen ids, the outbox, the feed position: in memory, committed
    to disk in batches (see the module docstring)."""

    def __init__(
        self, state_dir: Path, *, lock: DirectoryLock | None = None, read_only: bool = False
    ):
        self.state_dir = state_dir
        self.lock = lock
        self.read_only = read_only
        self.dbs = {
            name: TinyDB(
                str(state_dir / f"{name}.json"), storage=BufferedJSONStorage, read_only=read_only
            )
            for name in FILES
        }
        self.journal = Journal(state_dir)
        self.searches: dict[str, SearchState] = {}
        self.owed: dict[Key, OutboxRow] = {}
        self.jobs: dict[str, Job] = {}
        self.done: dict[Key, OutboxRow] = {}
        # Per config file (its owner key): two configs may share a state directory, and
        # each reads the feed for, and judges changes against, its own searches.
        self.positions: dict[str, datetime] = {}
        self.events: dict[str, dict[str, Event]] = {}
        self.queries: dict[str, dict[str, QueryState]] = {}
        self.closed: dict[str, datetime] = {}
        self.quarantine: dict[str, list[dict[str, Any]]] = {}  # rows that could not be read
        self._dirty: set[str] = set()
        self._unsaved: set[Key] = set()  # owed rows not yet in outbox.json

    # -- opening and closing -------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path, *, move_broken: bool = False) -> Store:
        """Open (creating if needed) the store in ``state_dir``, holding its lock.

        A damaged state (``StateDamagedError``) stops here, unless ``move_broken``: then
        its files are moved into a ``broken-<UTC time>`` folder and alertd starts over.
        """
        lock = DirectoryLock.take(state_dir)
        remove_stale_temps(state_dir)
        try:
            refuse_planted_links(state_dir)
            try:
                return cls._read(state_dir, lock)
            except StateDamagedError as exc:
                if not move_broken:
                    raise
                move_aside(state_dir, exc)
                return cls._read(state_dir, lock)
        except BaseException:
            lock.close()
            raise

    @classmethod
    def _read(cls, state_dir: Path, lock: DirectoryLock | None) -> Store:
        """Load the state; any damage nobody foresaw is one ``StateDamagedError`` line."""
        store = cls(state_dir, lock=lock, read_only=lock is None)
        try:
            store._load()
            if lock is not None:
                store.recover_interrupted()
                store.commit()
            store._release()
        except StoreError:
            raise
        except Exception as exc:  # a state damaged in a way nobody foresaw: one line
            raise StateDamagedError(
                f"cannot read the state in {state_dir} ({type(exc).__name__}: "
                f"{str(exc)[:200]}); move the damaged file aside, or restore it from a backup"
            ) from exc
        return store

    @classmethod
    def snapshot(cls, state_dir: Path) -> Store:
        """A private in-memory copy of the state, read without the lock.

        Safe while a daemon runs (every file is replaced by an atomic rename), so
        ``status`` and dry runs work beside ``alertd run``. Nothing done to the copy
        reaches the disk.
        """
        return cls._read(state_dir, None)

    def _release(self) -> None:
        for name in FILES:
            self._storage(name).release()

    def close(self) -> None:
        """Write what changed, then release the lock."""
        try:
            if not self.read_only and self.lock is not None:
                self.commit()
        finally:
            if self.lock is not None:
                self.lock.close()
                self.lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _writing(self, what: Path) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise StoreError(
                f"cannot write state file {what}: {exc.strerror or exc}; nothing was "
                f"lost and it will be retried, but {fix_for(exc)}"
            ) from exc

    def _table(self, file: str, table: str) -> Any:
        return self.dbs[file].table(table)

    def _storage(self, file: str) -> BufferedJSONStorage:
        storage = self.dbs[file].storage
        assert isinstance(storage, BufferedJSONStorage)
        return storage

    @property
    def bytes_written(self) -> int:
        """Bytes this store has written to its files (journal lines included)."""
        return sum(self._storage(name).bytes_written for name in FILES) + self.journal.bytes_written

    # -- loading ---------------------------------------------------------------

    def _load(self) -> None:
        legacy = self.state_dir / LEGACY_FILE
        if self._storage("feed").read() is None and legacy.exists():
            migrate_legacy(self, legacy)
            return
        self._check_files()
        self._each("feed", "positions", self._load_position)
        self._each("feed", "events", self._load_event)
        self._each("feed", "closed", self._load_closure)
        self._each("queries", "queries", self._load_query)
        self._each("searches", "searches", self._load_search)
        self._storage("searches").release()  # its parsed copy goes before the next file's
        self._each("outbox", "jobs", self._load_job)
        self._each("done", "rows", self._load_done)
        self._each("outbox", "rows", self._load_owed)
        self._replay_journal()

    def _check_files(self) -> None:
        """Every file there with its own tables, or StateDamagedError: a state is never
        taken for a new one because a file went missing or lost its tables."""
        found = {name: self._storage(name).read() for name in FILES}
        meta = self._table("feed", "meta").all()
        if found["feed"] is None:
            # A new state; or feed.json alone was lost, which the next cycle heals by
            # asking every query again (the position lost, nothing owed): either way,
            # every file is written whole at the first commit.
            self._dirty.update(FILES)
        elif not meta:
            raise damaged(self.state_dir / "feed.json", "has no schema version")
        version = meta[0].get("schema_version") if meta else SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"state in {self.state_dir} has schema version {version}, this alertd "
                f"understands {SCHEMA_VERSION}; run the alertd version that wrote it"
            )
        # A state this alertd wrote lists its files: each must be there, whole. One an
        # older alertd wrote may lack a file or a table it had nothing to put in.
        whole = bool(meta) and "files" in meta[0]
        for name in FILES:
            path, data = self.state_dir / f"{name}.json", found[name]
            if data is None:
                if whole:
                    raise damaged(path, "is missing, though feed.json says it was written")
                continue
            foreign = sorted(set(data) - {*TABLES[name], QUARANTINE})
            lacking = [table for table in TABLES[name] if table not in data]
            if foreign:
                raise damaged(path, f"has tables alertd never writes ({', '.join(foreign)})")
            if whole and lacking:
                raise damaged(path, f"lacks its own tables ({', '.join(lacking)}): emptied?")
        if not whole:
            self._dirty.update(FILES)  # written once in full: from now on it is whole

    def _each(self, file: str, table: str, load: Callable[[Mapping[str, Any]], None]) -> None:
        """Load each document of a table; one that cannot be read is quarantined (kept in
        its file's ``quarantine`` table, counted by ``alertd status``), never a stop."""
        self.quarantine.setdefault(file, [dict(d) for d in self._table(file, "quarantine").all()])
        for doc in self._table(file, table).all():
            try:
                load(doc)
            except Exception as exc:  # whatever is wrong with one row, the others go on
                self.quarantine[file].append({"table": table, "row": dict(doc)})
                self._dirty.add(file)
                log.warning(
                    "%s: a malformed %s row (%s: %s) was set aside in its quarantine table",
                    self.state_dir / f"{file}.json",
                    table,
                    type(exc).__name__,
                    exc,
                )

    def _load_position(self, doc: Mapping[str, Any]) -> None:
        until = parse_time(doc.get("until"))
        if until is not None:
            self.positions[str(doc.get("owner") or "")] = until

    def _load_event(self, doc: Mapping[str, Any]) -> None:
        at = time_or(doc.get("at"), EPOCH)
        event = Event(str(doc["job_id"]), str(doc["kind"]), at, time_or(doc.get("noticed"), at))
        self.events.setdefault(str(doc.get("owner") or ""), {})[event.job_id] = event

    def _load_closure(self, doc: Mapping[str, Any]) -> None:
        self.closed[str(doc["job_id"])] = time_or(doc.get("at"), EPOCH)

    def _load_query(self, doc: Mapping[str, Any]) -> None:
        state = QueryState(
            parse_time(doc.get("fetched_at")),
            parse_time(doc.get("owed_since")),
            parse_time(doc.get("failed_at")),
        )
        self.queries.setdefault(str(doc.get("owner") or ""), {})[str(doc["key"])] = state

    def _load_search(self, doc: Mapping[str, Any]) -> None:
        state = search_from_doc(doc, EPOCH)
        self.searches[state.name] = state

    def _load_job(self, doc: Mapping[str, Any]) -> None:
        job = Job.from_record(doc)
        self.jobs[job.id] = _kept(job)

    def _load_done(self, doc: Mapping[str, Any]) -> None:
        row = row_from_doc(doc, EPOCH)
        self.done[row.key] = row

    def _load_owed(self, doc: Mapping[str, Any]) -> None:
        row = row_from_doc(doc, EPOCH)  # without its job record it is sent by its title
        done = self.done.get(row.key)
        # A row in both files: a crash between writing done.json and outbox.json. The
        # newer one wins (a withdrawn job may have been owed again since).
        if done is None or row.created_at > (done.done_at or done.created_at):
            self.done.pop(row.key, None)
            self.owed[row.key] = row

    def _replay_journal(self) -> None:
        for entry in self.journal.entries():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self._apply(entry)  # a line without its fields: torn, its send not done

    def _apply(self, entry: Mapping[str, Any]) -> None:
        """One journal entry applied to the owed rows; applying it twice changes nothing."""
        key = (str(entry["target"]), str(entry["job"]))
        row = self.owed.get(key)
        at = parse_time(entry.get("at"))
        if row is None or at is None:
            return
        op = entry["op"]
        if op == "sending":
            self.owed[key] = row.but(status=DeliveryStatus.SENDING, attempts=entry["attempts"])
        elif op == "sent":
            self._finish(row, DeliveryStatus.SENT, at, None)
        elif op == "failed":
            self.owed[key] = row.but(
                status=DeliveryStatus.PENDING,
                attempts=entry["attempts"],
                next_attempt_at=parse_time(entry.get("retry")) or at,
                last_error=entry.get("error"),
                refused_by=entry.get("refused_by"),
            )
        self._dirty.add("outbox")

    # -- writing ---------------------------------------------------------------

    def commit(self) -> None:
        """Write every file that changed, in crash-safe order, then empty the journal."""
        self._write(FILES)

    def commit_owed(self) -> None:
        """Write what a send needs on disk: the delivered and the owed rows (``done`` and
        ``outbox``). They head the commit order, so stopping after them is as safe as a
        crash mid-``commit``; the seen ids, the queries and the feed position wait for the
        cycle's ``commit``, and a delivery step does not rewrite ``searches.json``."""
        self._write(FILES[:2])

    def _write(self, files: Sequence[str]) -> None:
        """Write those of ``files`` (a head of ``FILES``) that changed, in order; then
        empty the journal, whose every line is about rows in the first two."""
        if self.read_only:
            self._dirty.difference_update(files)
            return
        for name in files:
            if name not in self._dirty:
                continue
            self._serialize(name)
            storage = self._storage(name)
            with self._writing(storage.path):
                storage.flush()
            storage.release()  # the typed rows are the store's copy (11 MiB of seen ids)
            self._dirty.discard(name)
            if name == "outbox":
                self._unsaved.clear()
        with self._writing(self.journal.path):
            self.journal.empty()

    def rewrite(self) -> None:
        """Write every file, changed or not (a migrated state)."""
        self._dirty.update(FILES)
        self.commit()

    def _serialize(self, name: str) -> None:
        tables: dict[str, list[dict[str, Any]] | LazyRows]
        if name == "feed":
            tables = {
                "meta": [{"schema_version": SCHEMA_VERSION, "files": list(FILES)}],
                "positions": [
                    {"owner": owner, "until": format_time(until)}
                    for owner, until in self.positions.items()
                ],
                "events": [
                    {
                        "owner": owner,
                        "job_id": e.job_id,
                        "kind": e.kind,
                        "at": format_time(e.occurred_at),
                        "noticed": format_time(e.noticed_at),
                    }
                    for owner, events in self.events.items()
                    for e in events.values()
                ],
                "closed": [{"job_id": k, "at": format_time(v)} for k, v in self.closed.items()],
            }
        elif name == "queries":
            tables = {
                "queries": [
                    {
                        "owner": owner,
                        "key": k,
                        "fetched_at": iso(q.fetched_at),
                        "owed_since": iso(q.owed_since),
                        "failed_at": iso(q.failed_at),
                    }
                    for owner, queries in self.queries.items()
                    for k, q in queries.items()
                ]
            }
        elif name == "searches":
            tables = {"searches": LazyRows(list(self.searches.values()), search_doc)}
        elif name == "outbox":
            tables = {
                "rows": [row_doc(r) for r in self.owed.values()],
                "jobs": [self.jobs[j].to_record() for j in self._owed_job_ids() if j in self.jobs],
            }
        else:
            tables = {"rows": LazyRows(list(self.done.values()), row_doc)}
        if self.quarantine.get(name):
            tables[QUARANTINE] = self.quarantine[name]
        # Every table, even an empty one: a file without its tables is damage, not "empty".
        self._storage(name).write(
            {
                table: (
                    docs
                    if isinstance(docs, LazyRows)
                    else {str(number): doc for number, doc in enumerate(docs, 1)}
                )
                for table, docs in tables.items()
            }
        )

    def _journal(self, *entries: dict[str, Any]) -> None:
        """Append delivery outcomes, at once: a kill loses none. The fsync that makes
        them durable comes with the next send's ``sending`` line, or with
        ``sync_journal`` at the end of the delivery (see ``_note``)."""
        if self.read_only or not entries:
            return
        with self._writing(self.journal.path):
            self.journal.append(*entries)

    def _note(self, *entries: dict[str, Any]) -> None:
        """Append ``sending`` lines just before a send, and fsync every line not yet on
        disk, unless the last fsync is younger than ``SYNC_WINDOW``: sends that follow
        each other fast share an fsync (a busy cycle's 5,884 messages cost 11,768 before).

        Only a power loss or an OS crash can undo a written line. What it then costs is
        a repeat, never a loss: an outcome lost that way (at most ``SYNC_WINDOW`` of
        sends, and the one in flight) leaves its row owed, and it is sent again, as a
        crash between a target's answer and the fsync always could."""
        self._journal(*entries)
        if self.journal.is_sync_due():
            self.sync_journal()

    def sync_journal(self) -> None:
        """fsync the journal's lines written since the last fsync (a delivery's end)."""
        with self._writing(self.journal.path):
            self.journal.sync()

    # -- saved searches ------------------------------------------------------

    def search_state(self, search: SavedSearch) -> SearchState | None:
        """What the store knows of this search with its current filters; None if nothing.

        A search whose filters changed is unknown again, so an edited search starts silent.
        """
        state = self.searches.get(search.name)
        if state is None or state.fingerprint != search.fingerprint():
            return None
        return state

    def begin_priming(self, search: SavedSearch, since: datetime) -> SearchState:
        """Start a search's silent first run: jobs posted before ``since`` never alert."""
        state = SearchState(search.name, search.fingerprint(), search.source, since)
        self.searches[search.name] = state
        self._dirty.add("searches")
        return state

    def seen_ids(self, search: str) -> set[str]:
        """Job ids this search has already matched (a copy)."""
        state = self.searches.get(search)
        return set() if state is None else set(state.seen)

    def has_seen(self, search: str, job_id: str) -> bool:
        """Whether this search has matched the job before (no copy of its seen set: this
        is asked per job, per event, and a search may have seen thousands)."""
        state = self.searches.get(search)
        return state is not None and job_id in state.seen

    def prime(self, search: SavedSearch, job_ids: Iterable[str], now: datetime) -> int:
        """Record jobs as seen by a search without owing any alert for them."""
        state = self.searches.get(search.name) or self.begin_priming(search, now)
        fresh = state.seen.update(job_ids)
        if fresh:
            self._dirty.add("searches")
        return fresh

    def mark_primed(self, search: SavedSearch, now: datetime) -> None:
        """From now on, this search's new matches are owed as alerts."""
        state = self.search_state(search) or self.begin_priming(search, now)
        state.primed = True
        self._dirty.add("searches")

    def record_matches(self, search: SavedSearch, jobs: Iterable[Job], now: datetime) -> int:
        """Owe an alert to each of the search's targets for each job it had not matched before.

        A target already owed (or already sent) a job gets no second row: an owed row
        gains this search's name instead, so one alert names every search that matched.
        Returns how many jobs were new to the search.
        """
        state = self.searches.get(search.name) or self.begin_priming(search, now)
        new_jobs = {job.id: job for job in jobs if job.id not in state.seen}
        if not new_jobs:
            return 0
        for job in new_jobs.values():
            for target in search.targets:
                self._owe(target.key, job, search.name, now)
        state.seen.update(new_jobs)
        self._dirty.update(("outbox", "searches"))
        return len(new_jobs)

    def _owe(self, target: str, job: Job, search: str, now: datetime) -> None:
        key = (target, job.id)
        done = self.done.get(key)
        if done is not None and done.status == DeliveryStatus.SENT:
            return  # once per job per target
        row = self.owed.get(key)
        if row is None:  # new, or withdrawn earlier and matched again (the job reopened)
            if self.done.pop(key, None) is not None:
                self._dirty.add("done")  # written before the outbox: see ``commit``
            self.owed[key] = OutboxRow(
                target, job.id, (search,), DeliveryStatus.PENDING, now, now, title=job.title
            )
            self.jobs[job.id] = _kept(job)
            self._unsaved.add(key)
        elif search not in row.searches:
            self.owed[key] = row.but(searches=(*row.searches, search))

    def sent_row(self, target: str, job_id: str) -> OutboxRow | None:
        """The row of a job ``target`` was sent (and is not owed again), if any."""
        done = self.done.get((target, job_id))
        if done is None or done.status != DeliveryStatus.SENT or (target, job_id) in self.owed:
            return None
        return done

    def owe_change(
        self, target: str, job: Job, search: str, change: str, old_pay: Pay | None, now: datetime
    ) -> bool:
        """Owe ``target`` an alert that a job it was sent changed (``change``); False when
        it is owed that job already (the owed alert will show the job as it is now)."""
        key = (target, job.id)
        if key in self.owed:
            return False
        # The sent row stays in done.json until this one is sent: a crash between the two
        # files' writes must not lose the record that the target had the job.
        sent = self.done.get(key)
        self.owed[key] = OutboxRow(
            target,
            job.id,
            (search,),
            DeliveryStatus.PENDING,
            now,
            now,
            title=job.title,
            change=change,
            old_pay=old_pay,
            pay=None if sent is None else sent.pay,
        )
        self.jobs[job.id] = _kept(job)
        self._unsaved.add(key)
        self._dirty.add("outbox")
        return True

    def forget_searches_except(self, names: Iterable[str], source: str) -> int:
        """Drop what is remembered of searches that the config file ``source`` no longer has.

        A search removed and later added back under the same name then starts silent,
        like any new search. Searches of another config file sharing the state directory
        are left alone.
        """
        keep = set(names)
        gone = [n for n, s in self.searches.items() if s.owner in (source, "") and n not in keep]
        for name in gone:
            del self.searches[name]
        if gone:
            self._dirty.add("searches")
        return len(gone)

    def forget_seen(self, job_ids: Iterable[str]) -> int:
        """Drop job ids from every search's seen set (jobs closed long enough ago)."""
        ids = set(job_ids)
        if not ids:
            return 0
        dropped = 0
        for state in self.searches.values():
            dropped += state.seen.discard_all(ids)
        if dropped:
            self._dirty.add("searches")
        return dropped

    # -- the change feed and the queries -------------------------------------

    def changes_since(self, owner: str) -> datetime | None:
        """Where the config file ``owner`` last read the change feed up to (its ``until``)."""
        return self.positions.get(owner)

    def kept_for_others(self, names: Iterable[str], owner: str) -> dict[str, str]:
        """Of ``names``, those kept here for another config file that still exists, each
        with that file (its owner key): a search ``adopt`` would take from it."""
        held = {}
        for name in names:
            state = self.searches.get(name)
            if state is not None and state.owner not in (owner, "") and Path(state.owner).exists():
                held[name] = state.owner
        return held

    def adopt(self, names: Iterable[str], owner: str) -> int:
        """The config file ``owner`` has these searches: any kept under another owner become
        its own (names are unique in a state directory). An owner whose file is gone (the
        config was moved or renamed) hands over everything: its other searches (which the
        new file then forgets, as removed), its feed position, events and queries."""
        mine = [s for n in names if (s := self.searches.get(n)) is not None and s.owner != owner]
        moved = {state.owner for state in mine}
        if not moved:
            return 0
        gone = {old for old in moved if not old or not Path(old).exists()}
        for state in self.searches.values():
            if state in mine or state.owner in gone:
                state.owner = owner
        for old in gone:
            _move(self.positions, old, owner)
            _move(self.events, old, owner)
            _move(self.queries, old, owner)
        self._dirty.update(("searches", "feed", "queries"))
        return len(moved)

    def set_changes_since(self, owner: str, until: datetime) -> None:
        """Remember the change feed's ``until``, to pass as the next ``since``."""
        if until != self.positions.get(owner):
            self.positions[owner] = until
            self._dirty.add("feed")

    def events_of(self, owner: str) -> dict[str, Event]:
        """The feed events ``owner`` has not resolved yet, by job id (a copy)."""
        return dict(self.events.get(owner, {}))

    def set_events(self, owner: str, events: Mapping[str, Event]) -> None:
        """The feed events not yet resolved (replacing the previous set)."""
        if dict(events) != self.events.get(owner, {}):
            self.events[owner] = dict(events)
            self._dirty.add("feed")

    def set_closed(self, closed: Mapping[str, datetime]) -> None:
        """Jobs that closed recently, with when (pages from the edge cache may still list them)."""
        if dict(closed) != self.closed:
            self.closed = dict(closed)
            self._dirty.add("feed")

    def queries_of(self, owner: str) -> Mapping[str, QueryState]:
        """What ``owner``'s distinct queries last answered, or still owe."""
        return self.queries.get(owner, {})

    def set_query(self, owner: str, key: str, state: QueryState) -> None:
        """Record what a distinct query last answered, or still owes."""
        queries = self.queries.setdefault(owner, {})
        if queries.get(key) != state:
            queries[key] = state
            self._dirty.add("queries")

    def forget_queries_except(self, owner: str, keys: Iterable[str]) -> None:
        """Drop the state of ``owner``'s queries that no search asks any more."""
        keep = set(keys)
        queries = self.queries.get(owner, {})
        gone = [k for k in queries if k not in keep]
        for key in gone:
            del queries[key]
        if gone:
            self._dirty.add("queries")

    # -- the outbox ----------------------------------------------------------

    def recover_interrupted(self) -> int:
        """Rows left ``sending`` by a process that died mid-send are owed again."""
        stuck = [r for r in self.owed.values() if r.status == DeliveryStatus.SENDING]
        for row in stuck:
            self.owed[row.key] = row.but(status=DeliveryStatus.PENDING)
        if stuck:
            self._dirty.add("outbox")
        return len(stuck)

    def owed_rows(self) -> list[OutboxRow]:
        """Every owed row (pending, held or sending), oldest first."""
        return sorted(self.owed.values(), key=OWED_ORDER)

    def alert_for(self, row: OutboxRow) -> Alert:
        """The alert an owed row stands for: the job as last seen, and its searches."""
        job = self.jobs.get(row.job_id) or Job(id=row.job_id, title=row.title or row.job_id)
        return Alert(
            row.target, job, row.searches, row.attempts, row.created_at, row.change, row.old_pay
        )

    def due(self, now: datetime, target_keys: Iterable[str] | None = None) -> list[Alert]:
        """Pending alerts whose next attempt is due, oldest first (held rows wait)."""
        keys = None if target_keys is None else set(target_keys)
        # Chosen first, then sorted: a cycle delivers after each query step, and sorting
        # every owed row each time (held, not yet due, other targets') was most of this.
        rows = [
            row
            for row in self.owed.values()
            if row.status == DeliveryStatus.PENDING
            and row.next_attempt_at <= now
            and (keys is None or row.target in keys)
        ]
        rows.sort(key=OWED_ORDER)
        return [self.alert_for(row) for row in rows]

    def sent_since(self, target_keys: Collection[str], since: datetime) -> dict[str, int]:
        """Alerts each of ``target_keys`` was sent since ``since`` (a daily cap's count)."""
        counts: dict[str, int] = {}
        for row in self.done.values():
            if (
                row.target in target_keys
                and row.status == DeliveryStatus.SENT
                and row.done_at is not None
                and row.done_at >= since
            ):
                counts[row.target] = counts.get(row.target, 0) + 1
        return counts

    def mark_sending(self, alert: Alert, now: datetime) -> None:
        """Written (a journal line) just before the send, so a crash mid-send is visible
        after a restart: the row is owed again, its attempt counted."""
        self.mark_sending_all([alert], now)

    def mark_sending_all(self, alerts: Sequence[Alert], now: datetime) -> None:
        """``mark_sending`` for every alert one message carries, in one write (with the
        fsync of what came before, see ``_note``)."""
        keys = [(a.target_key, a.job.id) for a in alerts]
        if any(key in self._unsaved for key in keys):
            self.commit_owed()  # the rows must be on disk before their journal lines mean anything
        at = format_time(now)
        self._note(
            *(
                {
                    "op": "sending",
                    "target": key[0],
                    "job": key[1],
                    "at": at,
                    "attempts": alert.attempts + 1,
                }
                for key, alert in zip(keys, alerts, strict=True)
            )
        )
        for key, alert in zip(keys, alerts, strict=True):
            row = self.owed[key]
            self.owed[key] = row.but(status=DeliveryStatus.SENDING, attempts=alert.attempts + 1)
        self._dirty.add("outbox")

    def mark_sent(self, alert: Alert, now: datetime) -> None:
        """The target accepted the alert: it will never be sent there again."""
        self.mark_sent_all([alert], now)

    def mark_sent_all(self, alerts: Sequence[Alert], now: datetime) -> None:
        """``mark_sent`` for every alert one accepted message carried, in one write: a
        kill cannot fall between them and resend part of the message."""
        keys = [(a.target_key, a.job.id) for a in alerts]
        at = format_time(now)
        self._journal(*({"op": "sent", "target": k[0], "job": k[1], "at": at} for k in keys))
        for key in keys:
            self._finish(self.owed[key], DeliveryStatus.SENT, now, None)

    def mark_failed(
        self, alert: Alert, error: str, retry_at: datetime, refused_by: str | None = None
    ) -> None:
        """The target did not accept it: owed again from ``retry_at``. ``refused_by`` is the
        digest of the URL that refused it for good (a revoked token, a deleted webhook)."""
        row = self.owed[(alert.target_key, alert.job.id)]
        again = row.but(
            status=DeliveryStatus.PENDING,
            next_attempt_at=retry_at,
            last_error=error,
            refused_by=refused_by,
        )
        self._owed_again([again], retry_at)

    def mark_unsent_all(self, alerts: Sequence[Alert], now: datetime) -> None:
        """The message for these alerts never left (alertd was stopping while it waited
        its turn): owed again as before ``mark_sending``, due at once, no attempt counted."""
        rows = [self.owed[(a.target_key, a.job.id)] for a in alerts]
        again = [
            row.but(
                status=DeliveryStatus.PENDING,
                attempts=max(0, row.attempts - 1),
                next_attempt_at=now,
            )
            for row in rows
        ]
        self._owed_again(again, now)

    def _owed_again(self, rows: Sequence[OutboxRow], retry_at: datetime) -> None:
        """``rows``, owed again from ``retry_at`` as they now are, in the journal (one
        "failed" line each, in one write) and in the owed rows."""
        at = format_time(retry_at)
        self._journal(
            *(
                {
                    "op": "failed",
                    "target": row.target,
                    "job": row.job_id,
                    "at": at,
                    "retry": at,
                    "attempts": row.attempts,
                    "error": row.last_error,
                    "refused_by": row.refused_by,
                }
                for row in rows
            )
        )
        for row in rows:
            self.owed[(row.target, row.job_id)] = row
        self._dirty.add("outbox")

    def retry_fixed_targets(self, digests: Mapping[str, str], now: datetime) -> int:
        """Rows a target refused for good are due at once when its URL has changed since
        (a person fixed the token or the webhook): no waiting out the long retry step."""
        fixed = [
            r
            for r in self.owed.values()
            if r.refused_by is not None
            and r.target in digests
            and digests[r.target] != r.refused_by
        ]
        for row in fixed:
            self.owed[row.key] = row.but(next_attempt_at=now, refused_by=None)
        if fixed:
            self._dirty.add("outbox")
        return len(fixed)

    def retry_refused(self, target_keys: Iterable[str], now: datetime) -> int:
        """Rows these targets refused for good are due at once, URL changed or not: the
        daemon was started again or told to reload, and the operator may have fixed the
        target on the service's side (a token re-enabled, a webhook re-created)."""
        keys = set(target_keys)
        refused = [r for r in self.owed.values() if r.refused_by is not None and r.target in keys]
        for row in refused:
            self.owed[row.key] = row.but(next_attempt_at=now, refused_by=None)
        if refused:
            self._dirty.add("outbox")
        return len(refused)

    def retarget(self, search: SavedSearch, configured: Collection[str], now: datetime) -> int:
        """A search whose URL was replaced: what the old URL was still owed goes to the new.

        Compares the search's targets with those it had last cycle. A target it no longer
        has, that no search of the config (``configured``) has, while it gained one: its
        owed rows for this search are owed to each gained target that has not had the job,
        then withdrawn. New rows are written first, so a crash between the two steps
        repeats the move rather than losing the alert. Returns how many rows moved.
        """
        state = self.searches.get(search.name)
        current = tuple(sorted({t.key for t in search.targets}))
        if state is None or state.targets == current:
            return 0
        gone = set(state.targets) - set(current) - set(configured)
        gained = [key for key in current if key not in state.targets]
        moving = [
            row
            for row in self.owed.values()
            if row.target in gone
            and search.name in row.searches
            and row.status in (DeliveryStatus.PENDING, DeliveryStatus.HELD)
        ]
        moved = len(moving) if state.targets and gained else 0
        if moved:
            for row in moving:
                for key in gained:
                    new = (key, row.job_id)
                    if new in self.owed or new in self.done:
                        continue  # owed already, or had it: never twice
                    self.owed[new] = row.but(
                        target=key,
                        next_attempt_at=now,
                        attempts=0,
                        last_error=None,
                        refused_by=None,
                    )
                    self._unsaved.add(new)
            self._dirty.add("outbox")
            self.commit()
            for row in moving:
                self._finish(row, DeliveryStatus.WITHDRAWN, now, "its URL was replaced")
        state.targets = current
        self._dirty.add("searches")
        return moved

    def refusing_targets(self, target_keys: Iterable[str]) -> set[str]:
        """Targets (of these) that refused an owed alert for good."""
        keys = set(target_keys)
        return {r.target for r in self.owed.values() if r.refused_by and r.target in keys}

    def _finish(
        self, row: OutboxRow, status: DeliveryStatus, now: datetime, reason: str | None
    ) -> None:
        job = self.jobs.get(row.job_id)
        title = job.title if job is not None else row.title
        pay = job.pay if job is not None and status == DeliveryStatus.SENT else row.pay
        if row.change is not None and status != DeliveryStatus.SENT:
            # A pay-raised or reopened alert withdrawn: the target still had the job.
            status, reason = DeliveryStatus.SENT, f"its {row.change} alert: {reason}"
        self.done[row.key] = row.but(
            status=status,
            done_at=now,
            title=title,
            last_error=reason,
            held_since=None,
            pay=pay,
            old_pay=None,
        )
        del self.owed[row.key]
        self._dirty.update(("outbox", "done"))

    def withdraw(self, job_ids: Iterable[str], reason: str, now: datetime) -> int:
        """Owed alerts for jobs that closed or expired are no longer owed (nor sent)."""
        ids = set(job_ids)
        rows = [r for r in self.owed.values() if r.job_id in ids]
        for row in rows:
            self._finish(row, DeliveryStatus.WITHDRAWN, now, reason)
        return len(rows)

    def withdraw_rows(self, keys: Iterable[Key], reason: str, now: datetime) -> int:
        """These owed rows (target, job) are no longer owed: their searches are gone."""
        rows = [row for key in keys if (row := self.owed.get(key)) is not None]
        for row in rows:
            self._finish(row, DeliveryStatus.WITHDRAWN, now, reason)
        return len(rows)

    def hold(self, job_ids: Iterable[str], now: datetime) -> int:
        """Owed rows of these jobs wait until the job is confirmed open (``release``)."""
        ids = set(job_ids)
        rows = [r for r in self.owed.values() if r.job_id in ids and r.status in OWED]
        for row in rows:
            if row.status != DeliveryStatus.HELD:
                held = row.but(status=DeliveryStatus.HELD, held_since=row.held_since or now)
                self.owed[row.key] = held
                self._dirty.add("outbox")
        return len(rows)

    def release(self, job_ids: Iterable[str]) -> int:
        """Held rows of these jobs are due again."""
        ids = set(job_ids)
        released = 0
        for row in list(self.owed.values()):
            if row.job_id in ids and row.status == DeliveryStatus.HELD:
                self.owed[row.key] = row.but(status=DeliveryStatus.PENDING, held_since=None)
                released += 1
        if released:
            self._dirty.add("outbox")
        return released

    def refresh_owed(self, jobs: Iterable[Job]) -> int:
        """Owed rows take the job as the API shows it now (a deadline moved, a title fixed)."""
        changed = 0
        for job in jobs:
            if job.id in self.jobs and self.jobs[job.id] != _kept(job):
                self.jobs[job.id] = _kept(job)
                changed += 1
        if changed:
            self._dirty.add("outbox")
        return changed

    def prune(self, now: datetime, keep: timedelta) -> int:
        """Forget delivered and withdrawn rows older than ``keep``; owed rows never are."""
        cutoff = now - keep
        old = [k for k, r in self.done.items() if (r.done_at or r.created_at) < cutoff]
        for key in old:
            del self.done[key]
        if old:
            self._dirty.add("done")
        owed = self.owed_job_ids()  # a job record is kept only while it is owed
        self.jobs = {job_id: job for job_id, job in self.jobs.items() if job_id in owed}
        return len(old)

    def owed_job_ids(self) -> set[str]:
        """Jobs that some target is still owed."""
        return {row.job_id for row in self.owed.values()}

    def _owed_job_ids(self) -> list[str]:
        return sorted(self.owed_job_ids())

    def count_owed(self, target_keys: Iterable[str]) -> tuple[int, int]:
        """(owed, of which held for a closure check) for the given targets."""
        keys = set(target_keys)
        rows = [r for r in self.owed.values() if r.target in keys]
        return len(rows), sum(1 for r in rows if r.status == DeliveryStatus.HELD)

    def oldest_owed(self, target_keys: Iterable[str]) -> dict[str, datetime]:
        """Per target (of these) that is owed anything: when its oldest owed alert
        became owed."""
        keys = set(target_keys)
        oldest: dict[str, datetime] = {}
        for row in self.owed.values():
            if row.target in keys and row.created_at < oldest.get(row.target, row.created_at + ONE):
                oldest[row.target] = row.created_at
        return oldest

    def counts(self) -> dict[str, int]:
        """Rows per status, for the log line and ``alertd status``."""
        totals = {status.value: 0 for status in DeliveryStatus}
        for row in (*self.owed.values(), *self.done.values()):
            totals[row.status.value] += 1
        return totals
