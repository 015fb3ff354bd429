"""The members table: who signed themselves up, their searches, and their links' tokens.

It is its own pair of files in the state directory, apart from the store's: the page
writes it from its threads while the cycle runs, and the cycle only reads it
(``active``, re-read only when ``version`` changed).

- ``members.json``: the snapshot, the whole table at one ``version``.
- ``members.journal``: the changes since, one line each (``alertd.memberlog``): the
  rows a change touched, whole, and the version it makes. A change is appended and
  fsynced before the page answers, so a confirmed sign-up, an edit or an unsubscribe
  survives ``kill -9`` the instant after the member saw it done; it costs one short
  line, not a rewrite of a table of 10,000 members (7 MB, 100-300 ms).

Compaction writes the snapshot (temp file, fsync, rename, fsync of the directory),
then deletes the journal: at every start, at the first write of a new table, once the
journal holds ``COMPACT_CHANGES`` lines or ``COMPACT_BYTES``, and at once when a change
deleted an address (below). A
crash between the two leaves lines the snapshot already holds, skipped by their
version. A line torn by a crash (the last one: nothing is written after a torn line
before it is cut off) is ignored with a warning.

Writers in other processes (a second ``alertd`` on the same state) are kept apart by
an ``fcntl`` lock on ``members.lock``, and each write starts from the table as it is
on disk. Readers take no lock: ``refresh`` notices a new snapshot or a longer journal
with two ``stat`` calls and reads only the new lines.

The community bot (``alertd.telegram``) keeps its rows in a fourth table, ``telegram``:
its update offset, the single-use codes that link a chat (as their SHA-256), and where
each chat's /watch stands; a member's chat id is in their own row. Its offset is
written in the same journal line as the change an update made (``telegram_update``).

Tokens (in links only, never passwords):

- a member's manage link, their feed's link and each search's unsubscribe link are
  ``<id>.<mac>``: an HMAC-SHA256 of the id and a random nonce under this state's key
  (``members.key``, 256 random bits, mode 0600), so that a message can carry the link
  at any time without the file holding it. The file holds the nonce and the token's
  SHA-256 only; a presented token is hashed and compared in constant time. Revoking
  draws a new nonce: the old link stops working.
- a confirmation link is 192 random bits, kept only as its SHA-256 with the pending
  sign-up, and expires after ``CONFIRM_TTL``.

Deleting a member deletes their address, their searches and their tokens from both
files before the page answers: the deletion compacts at once (deletions are rare, and
the page tells the member everything about them is gone, which a line still in the
journal would make untrue). So does the write that drops a pending sign-up which was
never confirmed and expired: its address leaves the disk with it (at most one
compaction per sign-up started, and sign-ups are rate-limited). What other changes
drop (an unsubscribed search's terms, an edit's old terms, revoked links' hashes)
stays in the journal until the next compaction: at most ``COMPACT_CHANGES`` changes
or ``COMPACT_BYTES`` later, or at the next start. Times in the files are UTC.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from alertd.errors import AlertdError, StoreError
from alertd.memberlog import Batch, Entry, MemberLog, encode
from alertd.models import Filters, MinPay, format_time, parse_time
from alertd.store.files import (
    damaged,
    fix_for,
    is_trusted_link,
    json_pieces,
    link_error,
    open_nofollow,
    write_atomically,
)

log = logging.getLogger(__name__)

MEMBERS_FILE = "members.json"
JOURNAL_FILE = "members.journal"
COMPACT_CHANGES = 1000  # journal lines; about 0.2 ms of a 7 MB compaction per change
COMPACT_BYTES = 4 << 20  # a journal is never much larger than this (one line past it)
KEY_FILE = "members.key"
LOCK_FILE = "members.lock"
FORMAT = 1
CONFIRM_TTL = timedelta(hours=48)
ID_BYTES = 9  # 72 bits: an id names a row; the token's MAC is what authenticates
Pace = Literal["now", "daily"]


class TokenError(AlertdError):
    """A link's token is unknown, revoked or expired (the page says so, no more)."""


class LimitError(AlertdError):
    """A member already has as many searches as ``searches_per_member`` allows."""


@dataclass(frozen=True)
class SearchDraft:
    """A search as a member asked for it on the page, checked (``community.rules``)."""

    title: str
    q: str | None = None
    category: str | None = None
    language: str | None = None
    country: str | None = None
    pay_type: str | None = None
    filters: Filters = field(default_factory=Filters)
    pace: Pace = "now"
    digest_hour: int | None = None  # 0-23 in UTC, for a daily pace


@dataclass(frozen=True)
class MemberSearch:
    """One member's saved search, as the cycle takes it."""

    id: str
    member_id: str
    title: str
    q: str | None
    category: str | None
    language: str | None
    country: str | None
    pay_type: str | None
    filters: Filters
    pace: Pace
    digest_hour: int | None
    paused: bool
    created_at: datetime


@dataclass(frozen=True)
class Member:
    """A member: an address once confirmed (``None`` for a feed-only member)."""

    id: str
    email: str | None
    feed: bool
    created_at: datetime


@dataclass(frozen=True)
class Confirmed:
    """What a confirmation made: the member (new or known) and their new search."""

    member: Member
    search: MemberSearch


# -- tokens ---------------------------------------------------------------------------


def _new_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    """(id, rest) of ``<id>.<rest>``; None for anything else (of any length)."""
    if len(token) > 200:
        return None
    row, dot, rest = token.partition(".")
    return (row, rest) if dot and row and rest else None


def _matches(token: str, stored: object) -> bool:
    """Whether ``token`` hashes to ``stored``, compared in constant time."""
    return isinstance(stored, str) and hmac.compare_digest(_digest(token), stored)


# -- the file ---------------------------------------------------------------------------


def _empty() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": 0,
        "members": {},
        "searches": {},
        "pending": {},
        "telegram": {},
    }


Seen = tuple[int, int, int]  # (inode, mtime_ns, size) of the snapshot read


def _identity(path: Path) -> Seen | None:
    """What tells one snapshot from the next (a new one is a new file: a new inode)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read(path: Path) -> tuple[dict[str, Any], Seen | None]:
    """The snapshot on disk, and its identity; an empty table when there is no file yet.
    A link someone else planted is refused (``link_error``): its table's addresses
    would get our mail."""
    if path.is_symlink() and not is_trusted_link(path):
        raise link_error(path)
    try:
        with open(path, "rb") as handle:
            st = os.fstat(handle.fileno())
            raw = handle.read()
    except FileNotFoundError:
        return _empty(), None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}; {fix_for(exc)}") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise damaged(path, "is not UTF-8 text") from exc
    except (ValueError, RecursionError) as exc:
        raise damaged(path, "is not valid JSON") from exc
    shape = isinstance(data, dict) and data.get("format") == FORMAT
    if not shape or not all(isinstance(data.get(k), dict) for k in ("members", "searches")):
        raise damaged(path, "is not an alertd members table")
    if type(data.get("version", 0)) is not int:
        raise damaged(path, "is not an alertd members table")
    data.setdefault("pending", {})
    data.setdefault("telegram", {})  # the community bot's rows (alertd.telegram)
    data.setdefault("version", 0)
    if not isinstance(data["pending"], dict) or not isinstance(data["telegram"], dict):
        raise damaged(path, "is not an alertd members table")
    return dict(data), (st.st_ino, st.st_mtime_ns, st.st_size)


def _apply(data: dict[str, Any], entry: Entry) -> None:
    """Set the rows a journal line holds, and its version."""
    for table, key, row in entry.ops:
        if row is None:
            data[table].pop(key, None)
        else:
            data[table][key] = row
    data["version"] = entry.version


def _filters_doc(filters: Filters) -> dict[str, Any]:
    pay = filters.min_pay
    return {
        "min_pay": None if pay is None else dict(pay.__dict__),
        "pay_required": filters.pay_required,
        "exclude": list(filters.exclude),
        "experience": list(filters.experience),
        "countries": list(filters.countries),
        "label_types": list(filters.label_types),
        "data_types": list(filters.data_types),
        "employment_types": list(filters.employment_types),
    }


def _filters_from(doc: dict[str, Any]) -> Filters:
    pay = doc.get("min_pay")
    words = {
        k: tuple(doc.get(k) or ())
        for k in (
            "exclude",
            "experience",
            "countries",
            "label_types",
            "data_types",
            "employment_types",
        )
    }
    return Filters(
        min_pay=None if not pay else MinPay(**pay),
        pay_required=bool(doc.get("pay_required")),
        **words,
    )


def _draft_doc(draft: SearchDraft) -> dict[str, Any]:
    return {
        "title": draft.title,
        "q": draft.q,
        "category": draft.category,
        "language": draft.language,
        "country": draft.country,
        "pay_type": draft.pay_type,
        "filters": _filters_doc(draft.filters),
        "pace": draft.pace,
        "digest_hour": draft.digest_hour,
    }


def _search_from(search_id: str, doc: dict[str, Any]) -> MemberSearch:
    return MemberSearch(
        id=search_id,
        member_id=doc["member"],
        title=doc["title"],
        q=doc.get("q"),
        category=doc.get("category"),
        language=doc.get("language"),
        country=doc.get("country"),
        pay_type=doc.get("pay_type"),
        filters=_filters_from(doc.get("filters") or {}),
        pace="daily" if doc.get("pace") == "daily" else "now",
        digest_hour=doc.get("digest_hour"),
        paused=bool(doc.get("paused")),
        created_at=parse_time(doc.get("created_at")) or datetime.fromtimestamp(0, UTC),
    )


def _member_from(member_id: str, doc: dict[str, Any]) -> Member:
    return Member(
        id=member_id,
        email=doc.get("email"),
        feed=bool(doc.get("feed")),
        created_at=parse_time(doc.get("created_at")) or datetime.fromtimestamp(0, UTC),
    )


def normalise_email(email: str) -> str:
    """The form an address is compared in (one member per address, whatever its case)."""
    return email.strip().lower()


_NOTHING = Batch((), 0)


class Members:
    """The members table of one state directory, safe to share between threads."""

    def __init__(self, state_dir: Path, key: bytes) -> None:
        self.path = state_dir / MEMBERS_FILE
        self.lock_path = state_dir / LOCK_FILE
        self.journal = MemberLog(state_dir / JOURNAL_FILE)
        self.compact_changes = COMPACT_CHANGES
        self.compact_bytes = COMPACT_BYTES
        self._key = key
        self._lock = threading.RLock()
        self._data: dict[str, Any] = _empty()
        self._seen: Seen | None = None  # the snapshot read
        self._loaded = False
        self._touched: dict[tuple[str, str], None] | None = None  # rows the write changes
        # A compaction that was to take an address off the disk failed: the next write
        # tries again (not only once the journal is long).
        self._compaction_owed = False
        self._active: tuple[int, list[tuple[Member, MemberSearch]]] | None = None

    @classmethod
    def open(cls, state_dir: Path) -> Members:
        """The table in ``state_dir`` (made, with its key, if it is not there yet), its
        journal compacted into the snapshot."""
        state_dir.mkdir(parents=True, exist_ok=True)
        members = cls(state_dir, _load_key(state_dir / KEY_FILE))
        # Not required: the table reads whole from both files, and a disk too full for
        # a 7 MB snapshot must not keep the daemon from starting (the next write tries).
        members.compact(required=False)
        return members

    # -- reading --------------------------------------------------------------------

    def refresh(self) -> None:
        """Catch up with what another process (or a restore) wrote: two ``stat`` calls
        when nothing changed, the new journal lines when only those were added, the
        whole table when the snapshot is another."""
        with self._lock:
            stale = not self._loaded or _identity(self.path) != self._seen
            if stale or not (self.journal.is_unchanged() or self._catch_up()):
                self._reload()

    def _reload(self) -> None:
        for _ in range(3):  # a compaction between the two reads: read both again
            data, seen = _read(self.path)
            self.journal.reset()
            batch = self.journal.read_new() or _NOTHING
            if _identity(self.path) == seen:
                break
        if batch.damaged:
            log.warning(
                "%s: %d damaged line(s) skipped (their changes are lost)",
                self.journal.path,
                batch.damaged,
            )
        for entry in batch.entries:
            if entry.version > data["version"]:  # older: the snapshot has it
                _apply(data, entry)
        self._data, self._seen, self._loaded = data, seen, True
        self._active = None

    def _catch_up(self) -> bool:
        """Apply the lines added since the last read; False if they do not follow on
        (a new journal, a damaged line): then the whole table is read again."""
        batch = self.journal.read_new()
        if batch is None or batch.damaged:
            return False
        version = int(self._data["version"])
        for n, entry in enumerate(batch.entries, start=1):
            if entry.version != version + n:
                return False
        for entry in batch.entries:
            _apply(self._data, entry)
        return True

    def version(self) -> int:
        """Changes on every change (a journal line), so the cycle re-reads ``active``
        only when something changed; cheap when nothing did (``refresh``)."""
        self.refresh()
        with self._lock:
            return int(self._data.get("version", 0))

    def active(self) -> list[tuple[Member, MemberSearch]]:
        """Every search of a confirmed member that is not paused, oldest first."""
        self.refresh()
        with self._lock:
            version = int(self._data["version"])
            if self._active is None or self._active[0] != version:
                members = self._data["members"]
                pairs = [
                    (_member_from(doc["member"], members[doc["member"]]), _search_from(sid, doc))
                    for sid, doc in self._data["searches"].items()
                    if doc["member"] in members and not doc.get("paused")
                ]
                pairs.sort(key=lambda pair: (pair[1].created_at, pair[1].id))
                self._active = (version, pairs)
            return list(self._active[1])

    def member(self, member_id: str) -> Member | None:
        """The member with this id, or None."""
        self.refresh()
        with self._lock:
            doc = self._data["members"].get(member_id)
            return None if doc is None else _member_from(member_id, doc)

    def member_by_email(self, email: str) -> Member | None:
        """The confirmed member with this address (any case), or None."""
        wanted = normalise_email(email)
        self.refresh()
        with self._lock:
            for member_id, doc in self._data["members"].items():
                if doc.get("email") and normalise_email(doc["email"]) == wanted:
                    return _member_from(member_id, doc)
        return None

    def searches_of(self, member_id: str) -> list[MemberSearch]:
        """A member's searches, paused ones too, oldest first."""
        self.refresh()
        with self._lock:
            found = [
                _search_from(sid, doc)
                for sid, doc in self._data["searches"].items()
                if doc["member"] == member_id
            ]
        return sorted(found, key=lambda s: (s.created_at, s.id))

    def search(self, search_id: str) -> MemberSearch | None:
        """The search with this id, or None."""
        self.refresh()
        with self._lock:
            doc = self._data["searches"].get(search_id)
            return None if doc is None else _search_from(search_id, doc)

    def counts(self) -> tuple[int, int]:
        """(members, searches): what the public status page may say."""
        self.refresh()
        with self._lock:
            return len(self._data["members"]), len(self._data["searches"])

    def export(self, member_id: str) -> dict[str, Any]:
        """Everything the table holds about a member, without token material."""
        member = self.member(member_id)
        if member is None:
            raise TokenError("no such member")
        return {
            "member": {
                "id": member.id,
                "email": member.email,
                "feed": member.feed,
                "telegram_chat": self.telegram_chats().get(member.id),
                "created_at": format_time(member.created_at),
            },
            "searches": [
                {
                    "id": s.id,
                    **_draft_doc(_as_draft(s)),
                    "paused": s.paused,
                    "created_at": format_time(s.created_at),
                }
                for s in self.searches_of(member_id)
            ],
        }

    # -- links ----------------------------------------------------------------------

    def derive_key(self, purpose: str) -> bytes:
        """A key for ``purpose`` (the page's CSRF and session signing) from this state's
        key: stable across restarts, never the token key itself."""
        return hmac.new(self._key, f"derive\0{purpose}".encode(), hashlib.sha256).digest()

    def _token(self, kind: str, row_id: str, nonce: str) -> str:
        mac = hmac.new(self._key, f"{kind}\0{row_id}\0{nonce}".encode(), hashlib.sha256)
        return f"{row_id}.{base64.urlsafe_b64encode(mac.digest()).rstrip(b'=').decode()}"

    def manage_token(self, member_id: str) -> str:
        """The token of a member's manage link (TokenError for no such member)."""
        self.refresh()
        with self._lock:
            doc = self._data["members"].get(member_id)
            if doc is None:
                raise TokenError("no such member")
            return self._token("manage", member_id, doc["manage"]["nonce"])

    def feed_token(self, member_id: str) -> str:
        """The token of a member's personal feed link (TokenError for no such member)."""
        self.refresh()
        with self._lock:
            doc = self._data["members"].get(member_id)
            if doc is None:
                raise TokenError("no such member")
            return self._token("feed", member_id, doc["feed_token"]["nonce"])

    def unsubscribe_token(self, search_id: str) -> str:
        """The token of a search's one-click unsubscribe link (TokenError if it is gone)."""
        self.refresh()
        with self._lock:
            doc = self._data["searches"].get(search_id)
            if doc is None:
                raise TokenError("no such search")
            return self._token("unsub", search_id, doc["unsub"]["nonce"])

    def manage_url(self, member_id: str, public_url: str) -> str:
        """The member's manage page, for every message and feed: ``<public_url>/m/<token>``."""
        return f"{public_url.rstrip('/')}/m/{self.manage_token(member_id)}"

    def unsubscribe_url(self, search_id: str, public_url: str) -> str:
        """The search's one-click link (``List-Unsubscribe``): ``<public_url>/u/<token>``."""
        return f"{public_url.rstrip('/')}/u/{self.unsubscribe_token(search_id)}"

    def feed_url(self, member_id: str, public_url: str) -> str:
        """The member's personal Atom feed: ``<public_url>/feed/<token>.atom``."""
        return f"{public_url.rstrip('/')}/feed/{self.feed_token(member_id)}.atom"

    def _row_for(self, table: str, token: str, slot: str) -> str | None:
        parts = _split(token)
        if parts is None:
            return None
        self.refresh()
        with self._lock:
            doc = self._data[table].get(parts[0])
            stored = None if doc is None else (doc.get(slot) or {}).get("hash")
        return parts[0] if _matches(token, stored) else None

    def member_for_manage(self, token: str) -> Member | None:
        """The member whose manage link this is, or None (unknown, revoked)."""
        member_id = self._row_for("members", token, "manage")
        return None if member_id is None else self.member(member_id)

    def member_for_feed(self, token: str) -> Member | None:
        """The member whose feed link this is, or None (unknown, revoked)."""
        member_id = self._row_for("members", token, "feed_token")
        return None if member_id is None else self.member(member_id)

    def search_for_unsubscribe(self, token: str) -> MemberSearch | None:
        """The search this unsubscribe link is for, or None (unknown, already gone)."""
        search_id = self._row_for("searches", token, "unsub")
        return None if search_id is None else self.search(search_id)

    def revoke_links(self, member_id: str) -> None:
        """New manage and feed links for a member: the old ones stop working."""

        def change(data: dict[str, Any], now: datetime) -> None:
            doc = data["members"].get(member_id)
            if doc is None:
                raise TokenError("no such member")
            doc["manage"] = self._secret("manage", member_id)
            doc["feed_token"] = self._secret("feed", member_id)
            self._touch("members", member_id)

        self._write(change)

    def _secret(self, kind: str, row_id: str) -> dict[str, str]:
        nonce = secrets.token_urlsafe(16)  # 128 bits: a new one revokes the old link
        return {"nonce": nonce, "hash": _digest(self._token(kind, row_id, nonce))}

    # -- writing --------------------------------------------------------------------

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        fd = open_nofollow(self.lock_path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _touch(self, table: str, key: str) -> None:
        """Note a row the running write changed (or deleted): its line will hold it."""
        assert self._touched is not None, "a change outside _write"
        self._touched[(table, key)] = None

    def _write(
        self, change: Callable[[dict[str, Any], datetime], Any], *, compact: bool = False
    ) -> Any:
        """Apply ``change`` to the table as it is on disk and append the rows it touched
        (``_touch``) to the journal, fsynced; what ``change`` returned. Nothing is
        written (or kept) if it raises. ``compact``: a change that deleted an address,
        which leaves the disk before this returns."""
        with self._lock, self._file_lock():
            self.refresh()
            data = self._data  # changed in place (a copy of 10,000 members costs 100 ms)
            now = datetime.now(UTC)
            self._touched = {}
            try:
                expired = _drop_expired(data, now)
                for pending_id in expired:
                    self._touch("pending", pending_id)
                result = change(data, now)
                if self._touched:
                    data["version"] = int(data["version"]) + 1
                    ops = [(t, k, data[t].get(k)) for t, k in self._touched]
                    self.journal.append(encode(data["version"], ops))
            except BaseException as exc:
                # A change refused before it touched anything (a used link, a member at
                # their limit) left the table as read: reading 7 MB again for each of
                # those would let anyone cost the page 0.15 s a request.
                untouched = isinstance(exc, TokenError | LimitError) and not self._touched
                if not untouched:
                    self._forget()  # what is in memory may be half changed: the files win
                if isinstance(exc, OSError):
                    raise StoreError(
                        f"cannot write {self.journal.path}: {exc.strerror or exc}; {fix_for(exc)}"
                    ) from exc
                raise
            finally:
                self._touched = None
            forgets = compact or bool(expired) or self._compaction_owed  # an address
            if forgets or self._is_compaction_due():
                # Only the member deleting themselves is told of a failure: the change
                # is written either way, and an error would make a member whose write
                # merely dropped someone's expired sign-up do it again (twice).
                self._compact_now(required=compact, forgets=forgets)
            return result

    def _forget(self) -> None:
        self._loaded = False
        self._data = _empty()
        self._active = None
        self.journal.reset()

    def _is_compaction_due(self) -> bool:
        """Whether the journal is long enough to fold (or there is no snapshot yet: the
        first write makes one, so that a table is never a journal alone)."""
        journal = self.journal
        if self._seen is None:
            return True
        return journal.lines >= self.compact_changes or journal.offset >= self.compact_bytes

    def compact(self, *, required: bool = True) -> None:
        """Fold the journal into the snapshot (``members.open`` does, at every start;
        writes do when the journal is long, or a change deleted an address). A failure
        is a StoreError when ``required``, else a warning and owed to the next write."""
        with self._lock, self._file_lock():
            self.refresh()
            if self.journal.offset or self.journal.tail:
                self._compact_now(required=required)

    def _compact_now(self, *, required: bool, forgets: bool = True) -> None:
        """Write the snapshot, then delete the journal (under both locks). A failure is
        a StoreError when ``required`` (a deleted member's address must leave the disk);
        otherwise a warning, and the journal grows until a later write compacts it: the
        next one when ``forgets`` (the journal holds an address that must go)."""
        if self.journal.tail:
            log.warning(
                "%s ended in a torn line (a write cut short by a crash): it is ignored",
                self.journal.path,
            )
        try:
            write_atomically(self.path, json_pieces(self._data, depth=2))  # members, rows
            self._seen = _identity(self.path)
            self.journal.remove()
            self._compaction_owed = False
        except OSError as exc:
            message = f"cannot write {self.path}: {exc.strerror or exc}; {fix_for(exc)}"
            self._compaction_owed = self._compaction_owed or forgets
            self._forget()
            if required:
                raise StoreError(message) from exc
            log.warning("%s (the journal goes on growing until then)", message)

    def start_signup(self, email: str, draft: SearchDraft) -> tuple[str, str]:
        """Hold a sign-up until its address is confirmed: (pending id, confirmation
        token). The address is kept only with the pending row, which expires."""

        def change(data: dict[str, Any], now: datetime) -> tuple[str, str]:
            pending_id = _new_id()
            token = f"{pending_id}.{secrets.token_urlsafe(24)}"
            self._touch("pending", pending_id)
            data["pending"][pending_id] = {
                "email": email,
                "hash": _digest(token),
                "expires": format_time(now + CONFIRM_TTL),
                "created_at": format_time(now),
                "search": _draft_doc(draft),
            }
            return pending_id, token

        result: tuple[str, str] = self._write(change)
        return result

    def pending_for(self, token: str, now: datetime | None = None) -> SearchDraft | None:
        """The search a confirmation link would add, or None (unknown or expired)."""
        parts = _split(token)
        if parts is None:
            return None
        self.refresh()
        with self._lock:
            doc = self._data["pending"].get(parts[0])
        if doc is None or not _matches(token, doc.get("hash")):
            return None
        expires = parse_time(doc.get("expires"))
        if expires is None or expires <= (now or datetime.now(UTC)):
            return None
        return _draft_from(doc["search"])

    def confirm(self, token: str, limit: int) -> Confirmed:
        """Confirm a sign-up by its link: the address becomes a member (or the known
        member gains the search). TokenError if the link is unknown or expired,
        LimitError if the member already has ``limit`` searches."""

        def change(data: dict[str, Any], now: datetime) -> Confirmed:
            parts = _split(token)
            doc = None if parts is None else data["pending"].get(parts[0])
            if parts is None or doc is None or not _matches(token, doc.get("hash")):
                raise TokenError("this confirmation link is unknown, used or expired")
            expires = parse_time(doc.get("expires"))
            if expires is None or expires <= now:  # _drop_expired's rule, checked again here
                raise TokenError("this confirmation link is unknown, used or expired")
            del data["pending"][parts[0]]
            self._touch("pending", parts[0])
            member_id = _member_with(data, doc["email"]) or self._add_member(
                data, now, email=doc["email"], feed=False
            )
            search_id = self._add_search(data, now, member_id, doc["search"], limit)
            return Confirmed(
                _member_from(member_id, data["members"][member_id]),
                _search_from(search_id, data["searches"][search_id]),
            )

        confirmed: Confirmed = self._write(change)
        return confirmed

    def add_feed_member(self, draft: SearchDraft) -> Confirmed:
        """A member who reads a personal feed (no address) with their first search."""

        def change(data: dict[str, Any], now: datetime) -> Confirmed:
            member_id = self._add_member(data, now, email=None, feed=True)
            search_id = self._add_search(data, now, member_id, _draft_doc(draft), 1)
            return Confirmed(
                _member_from(member_id, data["members"][member_id]),
                _search_from(search_id, data["searches"][search_id]),
            )

        confirmed: Confirmed = self._write(change)
        return confirmed

    def add_search(self, member_id: str, draft: SearchDraft, limit: int) -> MemberSearch:
        """Another search for a member (from their manage page); LimitError past ``limit``."""

        def change(data: dict[str, Any], now: datetime) -> MemberSearch:
            if member_id not in data["members"]:
                raise TokenError("no such member")
            search_id = self._add_search(data, now, member_id, _draft_doc(draft), limit)
            return _search_from(search_id, data["searches"][search_id])

        search: MemberSearch = self._write(change)
        return search

    def edit_search(self, search_id: str, draft: SearchDraft) -> bool:
        """Replace a search's terms (it keeps its id and links); False if it is gone."""

        def change(data: dict[str, Any], now: datetime) -> bool:
            doc = data["searches"].get(search_id)
            if doc is None:
                return False
            doc.update(_draft_doc(draft))
            doc["edited_at"] = format_time(now)
            self._touch("searches", search_id)
            return True

        edited: bool = self._write(change)
        return edited

    def set_paused(self, search_id: str, paused: bool) -> bool:
        """Pause or resume a search; False if it is gone."""

        def change(data: dict[str, Any], now: datetime) -> bool:
            doc = data["searches"].get(search_id)
            if doc is None:
                return False
            if bool(doc.get("paused")) != paused:
                doc["paused"] = paused
                self._touch("searches", search_id)
            return True

        done: bool = self._write(change)
        return done

    def unsubscribe(self, search_id: str) -> bool:
        """Delete one search (its unsubscribe link with it); False if it was gone."""

        def change(data: dict[str, Any], now: datetime) -> bool:
            if data["searches"].pop(search_id, None) is None:
                return False
            self._touch("searches", search_id)
            return True

        done: bool = self._write(change)
        return done

    def remove_member(self, member_id: str) -> bool:
        """Delete a member: their address, searches and links leave the disk (the
        journal is compacted away) before this returns, and so do their sign-ups not
        yet confirmed (the address is in those too, and an old confirmation link must
        not bring the member back)."""

        def change(data: dict[str, Any], now: datetime) -> bool:
            doc = data["members"].pop(member_id, None)
            if doc is not None:
                self._touch("members", member_id)
            for search_id in [k for k, v in data["searches"].items() if v["member"] == member_id]:
                del data["searches"][search_id]
                self._touch("searches", search_id)
            if doc is not None and doc.get("email"):
                wanted = normalise_email(doc["email"])
                for pending_id, row in list(data["pending"].items()):
                    if normalise_email(str(row.get("email", ""))) == wanted:
                        del data["pending"][pending_id]
                        self._touch("pending", pending_id)
            return doc is not None

        done: bool = self._write(change, compact=True)
        return done

    def _add_member(
        self, data: dict[str, Any], now: datetime, *, email: str | None, feed: bool
    ) -> str:
        member_id = _new_id()
        self._touch("members", member_id)
        data["members"][member_id] = {
            "email": email,
            "feed": feed,
            "created_at": format_time(now),
            "manage": self._secret("manage", member_id),
            "feed_token": self._secret("feed", member_id),
        }
        return member_id

    def _add_search(
        self, data: dict[str, Any], now: datetime, member_id: str, draft: dict[str, Any], limit: int
    ) -> str:
        have = sum(1 for doc in data["searches"].values() if doc["member"] == member_id)
        if have >= limit:
            raise LimitError(f"a member may have {limit} searches")
        search_id = _new_id()
        self._touch("searches", search_id)
        data["searches"][search_id] = {
            "member": member_id,
            **draft,
            "paused": False,
            "created_at": format_time(now),
            "unsub": self._secret("unsub", search_id),
        }
        return search_id

    # -- Telegram (alertd.telegram) ------------------------------------------------------

    def telegram_offset(self) -> int:
        """The first Telegram update the bot has not acted on yet."""
        self.refresh()
        with self._lock:
            return int(_telegram(self._data).get(OFFSET_ROW, {}).get("offset", 0))

    def telegram_chats(self) -> dict[str, int]:
        """Each member's Telegram chat (member id → chat id), for those who have one."""
        self.refresh()
        with self._lock:
            return {
                mid: int(doc["telegram"])
                for mid, doc in self._data["members"].items()
                if isinstance(doc.get("telegram"), int)
            }

    def chat_of(self, member_id: str) -> int | None:
        """The member's Telegram chat with the community bot, or None."""
        self.refresh()
        with self._lock:
            chat = (self._data["members"].get(member_id) or {}).get("telegram")
        return chat if isinstance(chat, int) else None

    def member_for_chat(self, chat_id: int) -> Member | None:
        """The member (or group) whose Telegram chat this is, or None."""
        self.refresh()
        with self._lock:
            member_id = _chat_member(self._data, chat_id)
        return None if member_id is None else self.member(member_id)

    def chat_state(self, chat_id: int) -> dict[str, Any] | None:
        """Where the conversation in ``chat_id`` stands (a /watch half done), or None."""
        self.refresh()
        with self._lock:
            state = _telegram(self._data).get(f"{CHAT_ROW}{chat_id}")
            return None if state is None else json.loads(json.dumps(state))

    def telegram_code(self, member_id: str) -> str:
        """A short single-use code (``/start <code>``) that links a Telegram chat to this
        member; it expires after ``LINK_TTL``. Kept only as its SHA-256. A member has one
        live code: a new one replaces the last (a page's POST, repeated, piles up no rows),
        and expired codes go with it."""

        def change(data: dict[str, Any], now: datetime) -> str:
            if member_id not in data["members"]:
                raise TokenError("no such member")
            code = secrets.token_urlsafe(12)  # 96 bits, 16 characters: Telegram allows 64
            table = _telegram(data)
            for old in [k for k in table if k.startswith(CODE_ROW)]:  # one live code each
                expires = parse_time(table[old].get("expires"))
                if table[old].get("member") == member_id or expires is None or expires <= now:
                    del table[old]
                    self._touch(TELEGRAM, old)
            key = f"{CODE_ROW}{_digest(code)}"
            table[key] = {"member": member_id, "expires": format_time(now + LINK_TTL)}
            self._touch(TELEGRAM, key)
            return code

        code: str = self._write(change)
        return code

    def telegram_update(self, update_id: int | None, change: Callable[[ChatBook], Any]) -> Any:
        """Apply what Telegram updates asked (``change``, given a ``ChatBook``) and store
        the bot's update offset past ``update_id``, in the same durable write: an update
        is acted on once, even across ``kill -9``. What ``change`` returned."""

        def write(data: dict[str, Any], now: datetime) -> Any:
            result = change(ChatBook(self, data, now))
            if update_id is not None:
                table = _telegram(data)
                offset = max(int(table.get(OFFSET_ROW, {}).get("offset", 0)), update_id + 1)
                table[OFFSET_ROW] = {"offset": offset}
                self._touch(TELEGRAM, OFFSET_ROW)
            return result

        return self._write(write)

    def move_chat(self, chat_id: int, new_id: int) -> None:
        """A group's chat got a new id (Telegram made it a supergroup): its member's
        alerts, and a /watch half done in it, follow."""

        def change(data: dict[str, Any], now: datetime) -> None:
            member_id = _chat_member(data, chat_id)
            if member_id is not None and _chat_member(data, new_id) is None:
                data["members"][member_id]["telegram"] = new_id
                self._touch("members", member_id)
            table = _telegram(data)
            state = table.pop(f"{CHAT_ROW}{chat_id}", None)
            if state is not None:
                table.setdefault(f"{CHAT_ROW}{new_id}", state)
                self._touch(TELEGRAM, f"{CHAT_ROW}{chat_id}")
                self._touch(TELEGRAM, f"{CHAT_ROW}{new_id}")

        self._write(change)

    def block_chat(self, chat_id: int) -> int:
        """The member blocked the bot: pause their searches (not retried for ever); how
        many were paused. /resume in the chat brings them back. A member who has e-mail
        alerts keeps them: their chat is let go instead (none paused; the page's "Get it
        on Telegram" links it again)."""

        def change(data: dict[str, Any], now: datetime) -> int:
            member_id = _chat_member(data, chat_id)
            if member_id is None:
                return 0
            doc = data["members"][member_id]
            doc["telegram_blocked"] = format_time(now)
            self._touch("members", member_id)
            if doc.get("email"):  # their e-mail goes on: only the chat is let go
                doc.pop("telegram", None)
                return 0
            paused = 0
            for search_id, doc in data["searches"].items():
                if doc["member"] == member_id and not doc.get("paused"):
                    doc["paused"] = True
                    self._touch("searches", search_id)
                    paused += 1
            return paused

        paused: int = self._write(change)
        return paused


def _member_with(data: dict[str, Any], email: str) -> str | None:
    wanted = normalise_email(email)
    for member_id, doc in data["members"].items():
        if doc.get("email") and normalise_email(doc["email"]) == wanted:
            return str(member_id)
    return None


def _drop_expired(data: dict[str, Any], now: datetime) -> list[str]:
    """Forget sign-ups never confirmed in time (their address leaves the table); their
    ids."""
    dropped = []
    for pending_id, doc in list(data["pending"].items()):
        expires = parse_time(doc.get("expires"))
        if expires is None or expires <= now:
            del data["pending"][pending_id]
            dropped.append(pending_id)
    return dropped


def _as_draft(search: MemberSearch) -> SearchDraft:
    return SearchDraft(
        title=search.title,
        q=search.q,
        category=search.category,
        language=search.language,
        country=search.country,
        pay_type=search.pay_type,
        filters=search.filters,
        pace=search.pace,
        digest_hour=search.digest_hour,
    )


def _draft_from(doc: dict[str, Any]) -> SearchDraft:
    return _as_draft(_search_from("", {"member": "", **doc}))


def as_draft(search: MemberSearch) -> SearchDraft:
    """A search's terms as a draft (the manage page's edit form starts from them)."""
    return _as_draft(search)


def _load_key(path: Path) -> bytes:
    """This state's token key: 32 random bytes, made once (mode 0600, never a link)."""
    try:
        fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        fd = open_nofollow(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as handle:
            text = handle.read(200).strip()
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise StoreError(f"{path} vanished while it was made") from exc
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}; {fix_for(exc)}") from exc
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        key = b""
    if len(key) < 16:
        raise damaged(path, "is not a members key (64 hex digits)")
    return key


# -- Telegram's rows ----------------------------------------------------------------------

LINK_TTL = timedelta(hours=1)
TELEGRAM = "telegram"  # the bot's table: its offset, link codes, chats' conversations
OFFSET_ROW = "offset"  # {"offset": the first update not acted on}
CODE_ROW = "code:"  # code:<SHA-256 of a link code>: {"member", "expires"}
CHAT_ROW = "chat:"  # chat:<chat id>: where a /watch or /edit stands


def _telegram(data: dict[str, Any]) -> dict[str, Any]:
    """The bot's table (rows a journal line can hold, like the others)."""
    table: dict[str, Any] = data.setdefault(TELEGRAM, {})
    return table


def _chat_member(data: dict[str, Any], chat_id: int) -> str | None:
    for member_id, doc in data["members"].items():
        if doc.get("telegram") == chat_id:
            return str(member_id)
    return None


class ChatBook:
    """The members table as Telegram updates may change it, inside one write: every
    row changed is noted for the journal line (``Members._touch``)."""

    def __init__(self, members: Members, data: dict[str, Any], now: datetime) -> None:
        self._members = members
        self.data = data
        self.now = now

    def _touch(self, table: str, key: str) -> None:
        self._members._touch(table, key)

    def member_id(self, chat_id: int) -> str | None:
        """The member (or group) whose chat this is."""
        return _chat_member(self.data, chat_id)

    def code_owner(self, code: str) -> str | None:
        """The member whose live code this is (it is not used up), or None."""
        row = _telegram(self.data).get(f"{CODE_ROW}{_digest(code[:64])}")
        expires = parse_time(row.get("expires")) if isinstance(row, dict) else None
        if row is None or len(code) > 64 or expires is None or expires <= self.now:
            return None
        member_id = str(row.get("member"))
        return member_id if member_id in self.data["members"] else None

    def link(self, code: str, chat_id: int) -> str | None:
        """Link ``chat_id`` to the member whose code this is (used up); their id, or None
        for an unknown, used or expired code. A Telegram-only member this chat had
        before hands their searches over and goes."""
        table = _telegram(self.data)
        for key in [k for k in table if k.startswith(CODE_ROW)]:
            expires = parse_time(table[key].get("expires"))
            if expires is None or expires <= self.now:
                del table[key]
                self._touch(TELEGRAM, key)
        key = f"{CODE_ROW}{_digest(code[:64])}"
        row = table.pop(key, None)
        if row is None or len(code) > 64:
            return None
        self._touch(TELEGRAM, key)
        member_id = str(row["member"])
        if member_id not in self.data["members"]:
            return None
        self.attach(member_id, chat_id)
        return member_id

    def attach(self, member_id: str, chat_id: int) -> None:
        """``chat_id`` is now ``member_id``'s (what a code does, once checked)."""
        before = _chat_member(self.data, chat_id)
        if before is not None and before != member_id:
            old = self.data["members"][before]
            old.pop("telegram", None)
            self._touch("members", before)
            if not old.get("email") and not old.get("feed"):
                for search_id, doc in self.data["searches"].items():
                    if doc["member"] == before:
                        doc["member"] = member_id
                        self._touch("searches", search_id)
                del self.data["members"][before]
        doc = self.data["members"][member_id]
        doc["telegram"] = chat_id
        doc.pop("telegram_blocked", None)
        self._touch("members", member_id)

    def add_member(self, chat_id: int, group: bool) -> str:
        """A member known only by this chat (a group is one member of its own)."""
        member_id = self._members._add_member(self.data, self.now, email=None, feed=False)
        self.data["members"][member_id].update({"telegram": chat_id, "group": group})
        self._touch("members", member_id)
        return member_id

    def searches(self, member_id: str) -> list[MemberSearch]:
        """A member's searches, oldest first (the numbers /list shows)."""
        found = [
            _search_from(sid, doc)
            for sid, doc in self.data["searches"].items()
            if doc["member"] == member_id
        ]
        return sorted(found, key=lambda s: (s.created_at, s.id))

    def add_search(self, member_id: str, draft: SearchDraft, limit: int) -> MemberSearch:
        """Another search; LimitError past ``limit``."""
        search_id = self._members._add_search(
            self.data, self.now, member_id, _draft_doc(draft), limit
        )
        return _search_from(search_id, self.data["searches"][search_id])

    def edit_search(self, member_id: str, search_id: str, draft: SearchDraft) -> bool:
        """Replace one of the member's searches' terms; False if it is not theirs."""
        doc = self.data["searches"].get(search_id)
        if doc is None or doc["member"] != member_id:
            return False
        doc.update(_draft_doc(draft))
        doc["edited_at"] = format_time(self.now)
        self._touch("searches", search_id)
        return True

    def set_paused(self, member_id: str, search_ids: list[str], paused: bool) -> int:
        """Pause or resume these searches of the member; how many changed."""
        done = 0
        for search_id in search_ids:
            doc = self.data["searches"].get(search_id)
            if doc is not None and doc["member"] == member_id and bool(doc.get("paused")) != paused:
                doc["paused"] = paused
                self._touch("searches", search_id)
                done += 1
        member = self.data["members"][member_id]
        if not paused and member.pop("telegram_blocked", None) is not None:
            self._touch("members", member_id)
        return done

    def remove(self, member_id: str, search_ids: list[str]) -> int:
        """Delete these searches of the member; how many went."""
        done = 0
        for search_id in search_ids:
            doc = self.data["searches"].get(search_id)
            if doc is not None and doc["member"] == member_id:
                del self.data["searches"][search_id]
                self._touch("searches", search_id)
                done += 1
        return done

    def set_digest(self, member_id: str, hour: int | None) -> int:
        """Every search of the member daily at ``hour`` (None: as it happens); how many."""
        done = 0
        for search_id, doc in self.data["searches"].items():
            if doc["member"] == member_id:
                doc["pace"], doc["digest_hour"] = ("now", None) if hour is None else ("daily", hour)
                self._touch("searches", search_id)
                done += 1
        return done

    def state(self, chat_id: int) -> dict[str, Any] | None:
        """Where the conversation in ``chat_id`` stands, or None."""
        state = _telegram(self.data).get(f"{CHAT_ROW}{chat_id}")
        return None if state is None else dict(state)

    def set_state(self, chat_id: int, state: dict[str, Any] | None) -> None:
        """Remember (or with None, forget) where the conversation in ``chat_id`` stands."""
        table = _telegram(self.data)
        key = f"{CHAT_ROW}{chat_id}"
        if state is None:
            if table.pop(key, None) is not None:
                self._touch(TELEGRAM, key)
        else:
            table[key] = state
            self._touch(TELEGRAM, key)
