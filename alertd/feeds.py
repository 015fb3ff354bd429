"""Atom feeds as delivery targets: each feed's recent matches, kept in the state directory.

A feed is keyed by a string: ``member:<id>`` for a member's personal feed,
``search:<name>`` for an operator search's opt-in public feed (``feed: true``).
Delivering to a feed is ``Feeds.add``: when it returns, the entries are on disk, so
the delivery can be recorded as sent; adding the same job again (a retry after a crash
between the add and that record) changes nothing. Each feed is its own small file
under ``feeds/``, so one job matching 10,000 members rewrites 10,000 small files, not
one large file 10,000 times, and reading one member's feed reads only theirs.

A feed keeps what a reader polling it daily or weekly needs: at most ``KEEP_ENTRIES``
entries, none older than ``KEEP_DAYS``. It is a view of recent matches, not a ledger:
the store's seen ids still decide that a job is alerted once.

Entry text is the job poster's, cleaned and bounded by ``alertd.render`` exactly as an
alert message's is (``facts_of``), so a feed entry says what a message says.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from alertd.errors import StoreError
from alertd.models import format_time, parse_time
from alertd.outcome import Outcome
from alertd.render import Item, Message, facts_of
from alertd.store.files import EPOCH, damaged, fix_for, open_nofollow, write_atomically

FEEDS_DIR = "feeds"
KEEP_ENTRIES = 200  # per feed: what a weekly reader of a busy search still finds
KEEP_DAYS = 30
SCHEMA = 1
LOCK_STRIPES = 64
MAX_FILE = 8 * 1024 * 1024  # bytes of one feed file read at all (200 entries are < 0.5 MB)


@dataclass(frozen=True)
class FeedEntry:
    """One job in a feed, as its alert said it: cleaned and bounded, not yet escaped.

    ``published`` is when the job was posted (or first seen); ``updated`` when the feed
    last changed this entry (a raise replaces the entry and moves it up).
    """

    job_id: str
    title: str
    url: str
    summary: str  # plain text: the job's own summary
    published: datetime
    updated: datetime
    search_title: str  # the searches that matched, as a message's "Matched:" line
    pay: str = ""
    company: str = ""
    category: str = ""
    languages: str = ""
    headline: str = "New OpenTrain job"  # what happened: new, pay raised, reopened


def entry_of(item: Item, now: datetime) -> FeedEntry:
    """The feed entry for one item of an alert message, said as the message says it."""
    facts = facts_of(item)
    return FeedEntry(
        job_id=item.job.id,
        title=facts.title,
        url=facts.link,
        summary=facts.summary,
        published=facts.posted or now,
        updated=now,
        search_title=facts.matched,
        pay=facts.pay,
        company=facts.company,
        category=facts.category,
        languages=facts.languages,
        headline=facts.headline,
    )


def entries_of(message: Message, now: datetime) -> list[FeedEntry]:
    """Every job of a message as a feed entry. A feed lists them all: a summary's
    "+N more" are in ``message.more`` only as a count, so a feed target should be
    handed its alerts as items, never summarised."""
    return [entry_of(item, now) for item in message.items]


@dataclass(frozen=True)
class FeedRef:
    """What a feed URL resolves to: the feed's key, its title, and the page it belongs
    to (a member's manage page; a search's public feed: the community page)."""

    key: str
    title: str = "OpenTrain job alerts"
    alternate_url: str | None = None


def deliver_to_feed(feeds: Feeds, feed_key: str, message: Message, now: datetime) -> Outcome:
    """Deliver an alert message to a feed, as a sender does to any target: every job of
    it, on disk when this answers accepted (record the alert as sent then). A file that
    cannot be written is a failed outcome, retried like any other, never an exception;
    the retry adds nothing twice."""
    try:
        feeds.add(feed_key, entries_of(message, now), now)
    except StoreError as exc:
        return Outcome(False, str(exc))
    return Outcome(True)


# -- the store -----------------------------------------------------------------------


class Feeds:
    """Every feed's recent entries, one file per feed in ``<state>/feeds/``.

    Thread-safe: a write (``add``, ``drop``) holds its feed's lock, so the cycle's adds
    and a member's deletion on the web page never lose each other's change; reads take
    none (each file is replaced whole by a rename, so a reader sees the old or the new
    one). Writes to different feeds run at once (``add_many``): most of a write is its
    fsync, and the file system commits concurrent fsyncs together. Only one process
    writes a state directory (the store's lock file sees to that).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # Striped: a lock per feed would grow with every member ever seen.
        self._locks = tuple(threading.Lock() for _ in range(LOCK_STRIPES))

    @classmethod
    def open(cls, state_dir: Path) -> Feeds:
        """The feeds of a state directory (``feeds/`` is made at the first add)."""
        return cls(Path(state_dir) / FEEDS_DIR)

    def add(self, feed_key: str, jobs: Sequence[FeedEntry], now: datetime) -> int:
        """Put ``jobs`` in the feed and write it; how many entries were new or changed.

        A job is in a feed once: an entry for a job already there replaces it when it
        says something new (a raised pay; it keeps its ``published``) and changes nothing
        when it does not (a retry). Returns only once the file is on disk.
        """
        with self._lock_for(feed_key):
            # Entries stay JSON documents here: building 200 typed entries to add one
            # was most of an add's time (one job into 1,000 full feeds: 7 s of CPU, now 4).
            stored, _ = self._read_docs(feed_key)
            merged, changed = _merge(stored, [_entry_doc(job) for job in jobs])
            kept = _prune(merged, format_time(now - timedelta(days=KEEP_DAYS)))
            if changed or len(kept) != len(merged):
                self._write(feed_key, kept, now)
            return changed

    def add_many(
        self, additions: Mapping[str, Sequence[FeedEntry]], now: datetime, workers: int = 8
    ) -> dict[str, int]:
        """``add`` to several feeds at once (one job matching many members): each feed's
        count, once every file is on disk. A feed that cannot be written raises after
        the others are written (those are kept: adding them again changes nothing)."""
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feeds") as pool:
            futures = {
                key: pool.submit(self.add, key, jobs, now) for key, jobs in additions.items()
            }
        return {key: future.result() for key, future in futures.items()}

    def entries(self, feed_key: str) -> tuple[list[FeedEntry], datetime | None]:
        """The feed's entries, newest first, and when it last changed (None: never)."""
        docs, changed = self._read_docs(feed_key)
        return [_entry_from(doc) for doc in docs], parse_time(changed)

    def version(self, feed_key: str) -> str:
        """What changes whenever the feed's file is replaced (its inode, time and size),
        read without reading the file: a reader's repeat is answered from it alone."""
        try:
            info = os.stat(self.path_for(feed_key), follow_symlinks=False)
        except FileNotFoundError:
            return "none"
        except OSError as exc:
            raise StoreError(f"cannot read feed file: {exc.strerror}") from exc
        return f"{info.st_ino}-{info.st_mtime_ns}-{info.st_size}"

    def drop(self, feed_key: str) -> None:
        """Delete a feed and its file (a member deleted, a search that no longer has one)."""
        path = self.path_for(feed_key)
        with self._lock_for(feed_key):
            try:
                path.unlink()
            except FileNotFoundError:
                return
            except OSError as exc:
                raise StoreError(f"cannot delete feed file {path}: {exc.strerror}") from exc
            _sync_dir(self.folder)

    def path_for(self, feed_key: str) -> Path:
        """The file of a feed: named by a digest, since a key is any text."""
        return self.folder / (hashlib.sha256(feed_key.encode()).hexdigest()[:32] + ".json")

    def _lock_for(self, feed_key: str) -> threading.Lock:
        return self._locks[hash(feed_key) % LOCK_STRIPES]

    def _read_docs(self, feed_key: str) -> tuple[list[dict[str, str]], str | None]:
        path = self.path_for(feed_key)
        try:
            fd = open_nofollow(path, os.O_RDONLY)
        except FileNotFoundError:
            return [], None
        except OSError as exc:
            raise StoreError(f"cannot read feed file {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(MAX_FILE + 1)
        return _load(path, raw, feed_key)

    def _write(self, feed_key: str, entries: list[dict[str, str]], now: datetime) -> None:
        doc = {"schema": SCHEMA, "key": feed_key, "changed": format_time(now), "entries": entries}
        try:
            self._make_folder()
            write_atomically(self.path_for(feed_key), json.dumps(doc, separators=(",", ":")))
        except OSError as exc:
            raise StoreError(
                f"cannot write feed file in {self.folder}: {exc.strerror or exc}; {fix_for(exc)}"
            ) from exc

    def _make_folder(self) -> None:
        if self.folder.is_dir():
            return
        self.folder.mkdir(mode=0o700, exist_ok=True)
        _sync_dir(self.folder.parent)  # the new folder's name is on disk before its files


def _merge(
    stored: list[dict[str, str]], jobs: Iterable[dict[str, str]]
) -> tuple[list[dict[str, str]], int]:
    """(the feed's entries with ``jobs`` in, newest first; how many were new or changed)."""
    by_id = {doc["job_id"]: doc for doc in stored}
    changed = 0
    for job in jobs:
        old = by_id.get(job["job_id"])
        if old is not None and _news(old) == _news(job):
            continue
        by_id[job["job_id"]] = job if old is None else {**job, "published": old["published"]}
        changed += 1
    return _newest_first(by_id.values()), changed


def _news(doc: Mapping[str, str]) -> dict[str, str]:
    """What an entry tells, its times aside: the same news added again is a retry."""
    return {k: v for k, v in doc.items() if k not in ("published", "updated")}


def _newest_first(docs: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """Newest change first, then newest posted, then by job id (stable sorts; the times
    are ``format_time``'s, which sort as text)."""
    ordered = sorted(docs, key=lambda doc: doc["job_id"])
    return sorted(ordered, key=lambda doc: (doc["updated"], doc["published"]), reverse=True)


def _prune(docs: list[dict[str, str]], oldest: str) -> list[dict[str, str]]:
    """The newest ``KEEP_ENTRIES`` of ``docs`` (newest first) changed since ``oldest``."""
    return [doc for doc in docs if doc["updated"] >= oldest][:KEEP_ENTRIES]


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- the file's JSON shape -----------------------------------------------------------

_TEXT_FIELDS: tuple[str, ...] = ("title", "url", "summary", "search_title", "pay", "company")
_TEXT_FIELDS += ("category", "languages", "headline")


def _entry_doc(entry: FeedEntry) -> dict[str, str]:
    # Text whatever a caller passed: a null written here would make the file unreadable.
    doc = {name: str(getattr(entry, name) or "") for name in _TEXT_FIELDS}
    doc["job_id"] = str(entry.job_id)
    doc["published"] = format_time(entry.published)
    doc["updated"] = format_time(entry.updated)
    return doc


_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_DOC_FIELDS = {*_TEXT_FIELDS, "job_id", "published", "updated"}


def _checked_doc(doc: object) -> dict[str, str]:
    """One entry as written by ``_entry_doc``: every field a string, times as
    ``format_time`` writes them (they are compared as text)."""
    if not isinstance(doc, dict) or set(doc) != _DOC_FIELDS:
        raise ValueError("an entry without the fields alertd writes")
    if set(map(type, doc.values())) != {str}:  # a quarter of an add's time as all(...)
        raise ValueError("an entry with a field that is not text")
    if not (_TIME.fullmatch(doc["updated"]) and _TIME.fullmatch(doc["published"])):
        raise ValueError("an entry with a time alertd does not write")
    return doc


def _entry_from(doc: Mapping[str, str]) -> FeedEntry:
    texts = {name: doc[name] for name in _TEXT_FIELDS}
    return FeedEntry(
        job_id=doc["job_id"],
        published=parse_time(doc["published"]) or EPOCH,
        updated=parse_time(doc["updated"]) or EPOCH,
        **texts,
    )


def _load(path: Path, raw: bytes, feed_key: str) -> tuple[list[dict[str, str]], str | None]:
    """A feed file's entries, newest first, and when it changed; a file alertd did not
    write whole is an error that names it (never read as an empty feed, which would be
    written back over it)."""
    if len(raw) > MAX_FILE:
        raise damaged(path, f"is over {MAX_FILE} bytes, more than any feed alertd writes")
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("key") != feed_key:
            raise ValueError("not this feed's file")
        docs = [_checked_doc(entry) for entry in doc["entries"]]
        changed = doc.get("changed")
        if changed is not None and not (isinstance(changed, str) and _TIME.fullmatch(changed)):
            raise ValueError("a change time alertd does not write")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise damaged(path, f"is not a feed alertd wrote ({exc}); move it aside") from exc
    return _newest_first(docs), changed


# -- public feeds of operator searches -----------------------------------------------

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
MAX_SLUG = 60


def public_feed_slug(search_name: str) -> str:
    """The name of a search's public feed in its URL (``/feeds/<slug>.atom``): stable,
    and distinct for distinct names. A name that is already a slug (``go-jobs``) is its
    own; any other gets a short digest of the name after its readable part, so "Go
    jobs" and "go-jobs" never share a feed."""
    ascii_name = unicodedata.normalize("NFKD", search_name).encode("ascii", "ignore").decode()
    readable = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")[:MAX_SLUG].strip("-")
    if readable == search_name:
        return readable
    digest = hashlib.sha256(search_name.encode()).hexdigest()[:8]
    return f"{readable or 'search'}-{digest}"


def public_feed_key(search_name: str) -> str:
    """The feed key of an operator search's public feed."""
    return f"search:{search_name}"


def public_feeds(search_names: Iterable[str]) -> Callable[[str], str | None]:
    """A resolver for ``/feeds/<slug>.atom``: slug → feed key of the searches that
    opted in (``feed: true``), None for any other slug."""
    known = {public_feed_slug(name): public_feed_key(name) for name in search_names}
    return known.get
