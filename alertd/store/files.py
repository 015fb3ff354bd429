"""The state files: TinyDB's storage for them, atomic writes, and each row's JSON shape.

Only the ``store`` package reads or writes these files, and only this module knows what
a row looks like on disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from alertd.errors import StateDamagedError, StoreError
from alertd.models import (
    DeliveryStatus,
    OutboxRow,
    Pay,
    SearchState,
    SeenIds,
    format_time,
    parse_time,
)

EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def _is_tables(data: object) -> bool:
    """True for TinyDB's shape: tables of documents, each a JSON object."""
    return isinstance(data, dict) and all(
        isinstance(table, dict) and all(isinstance(doc, dict) for doc in table.values())
        for table in data.values()
    )


def fix_for(exc: OSError) -> str:
    """What the operator can do about a failed state write, by its cause."""
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return "free some space on that disk (or raise the quota), then start alertd again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            "the state directory and its files must be writable by the user alertd runs "
            f"as (uid {os.geteuid()}): chown -R it, or set state_dir (ALERTD_STATE_DIR) "
            "to one that is"
        )
    return "set state_dir (or ALERTD_STATE_DIR) to a directory this user can write"


START_OVER = (
    "alertd will not start over silently: restore it from a backup, or move it aside "
    "with the other state files to start over (every search then re-primes silently and "
    "what was owed is lost; broken_state: move_aside does this at start)"
)


def damaged(path: Path, what: str) -> StateDamagedError:
    """The one-line error for a state file that cannot be taken as it is."""
    return StateDamagedError(f"state file {path} {what}; {START_OVER}")


def read_json_file(path: Path) -> dict[str, Any] | None:
    """A state file's tables; None when it does not exist.

    An empty file is an error, not a new state: alertd writes whole files only, so an
    empty one was damaged, and starting over silently would lose what it owed and
    repeat what it sent.
    """
    if path.is_symlink() and not path.exists():  # e.g. a volume that is not mounted
        raise StoreError(
            f"state file {path} is a link to {os.readlink(path)}, which is missing; "
            "alertd will not start over silently: mount or restore it, or remove the link"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(
            f"cannot read state file {path}: {exc.strerror or exc}; {fix_for(exc)}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise damaged(path, "is not UTF-8 text") from exc
    if not text.strip():
        raise damaged(path, "is empty (damaged?)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise damaged(path, f"is not valid JSON ({exc})") from exc
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, 100,000 '['
        raise damaged(path, f"cannot be read as JSON ({type(exc).__name__})") from exc
    if not _is_tables(data):
        raise damaged(path, "is JSON but not an alertd state")
    return dict(data)


TEMP_PREFIX = ".alertd-"


def link_error(path: Path) -> StoreError:
    """The one line for a symbolic link alertd will not write through."""
    try:
        to = f" (to {os.readlink(path)})"
    except OSError:
        to = ""
    return StoreError(
        f"{path} is a symbolic link{to}; alertd never writes through a link it did not "
        "make in its state directory: remove the link (alertd then makes the file)"
    )


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (``link_error``) instead of
    writing (or creating, or truncating) whatever it points to."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_error(path) from exc
        raise


def is_trusted_link(path: Path) -> bool:
    """Whether a symbolic link at ``path`` was made by alertd's own user or root (an
    operator who moved a state file to another volume), not by anyone else who can
    write the directory. Like the kernel's ``protected_symlinks``, by the link's owner."""
    owner = os.lstat(path).st_uid
    return owner in (0, os.geteuid())


WRITE_SLICE = 1 << 20  # characters encoded and written at a time
COMPACT = (",", ":")
PIECE_ROWS = 100  # rows of a table encoded at a time (about 70 KB of members, 100 KB of searches)


class LazyRows(Mapping[str, Any]):
    """A table's rows numbered from "1", each document made only when it is written:
    ``searches.json`` at 10,000 searches is 11 MB of documents that need not all exist
    at once (``json_pieces`` asks for ``PIECE_ROWS`` at a time)."""

    def __init__(self, sources: Sequence[Any], make: Callable[[Any], dict[str, Any]]) -> None:
        self.sources = sources
        self.make = make

    def __getitem__(self, key: str) -> dict[str, Any]:
        number = int(key)
        if not 1 <= number <= len(self.sources):
            raise KeyError(key)
        return self.make(self.sources[number - 1])

    def __iter__(self) -> Iterator[str]:
        return (str(number) for number in range(1, len(self.sources) + 1))

    def __len__(self) -> int:
        return len(self.sources)


def json_pieces(doc: Any, *, sort_keys: bool = False, depth: int = 2) -> Iterator[str]:
    """``json.dumps(doc, separators=(",", ":"), sort_keys=sort_keys)`` in pieces: a
    dict's values each on their own down to ``depth`` levels, the last level's entries
    ``PIECE_ROWS`` at a time. A table of 10,000 rows (an 11 MB searches.json, a 7 MB
    members table) is written without its whole text in memory, which at the write's
    peak was twice its size (the pieces the encoder joins, then the joined text)."""
    if depth <= 0 or not isinstance(doc, Mapping) or not all(isinstance(k, str) for k in doc):
        yield json.dumps(doc, separators=COMPACT, sort_keys=sort_keys)
        return
    keys = sorted(doc) if sort_keys else list(doc)
    yield "{"
    if depth == 1:  # rows: a batch at a time, each written whole by the C encoder
        for start in range(0, len(keys), PIECE_ROWS):
            rows = {key: doc[key] for key in keys[start : start + PIECE_ROWS]}
            text = json.dumps(rows, separators=COMPACT, sort_keys=sort_keys)[1:-1]
            yield f"{',' if start else ''}{text}"
    else:
        for n, key in enumerate(keys):
            yield f"{',' if n else ''}{json.dumps(key)}:"
            yield from json_pieces(doc[key], sort_keys=sort_keys, depth=depth - 1)
    yield "}"


def write_atomically(path: Path, text: str | Iterable[str]) -> int:
    """Replace ``path`` with ``text`` (or the pieces of one), and say how many bytes it
    wrote: temp file, fsync, rename, fsync of the directory.

    A symlinked state file the operator made stays a symlink: the file it points to is
    replaced. One made by another user is refused (``link_error``): whoever can write
    the state directory must not be able to aim alertd's writes at another file. The
    temp file is made with ``O_EXCL`` (``mkstemp``): a link planted in its name is never
    followed.
    """
    if path.is_symlink() and not is_trusted_link(path):
        raise link_error(path)
    path = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # A text in slices: encoded at once, it would be a second copy at the peak.
            pieces = (
                (text[start : start + WRITE_SLICE] for start in range(0, len(text), WRITE_SLICE))
                if isinstance(text, str)
                else text
            )
            for piece in pieces:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
            written = os.fstat(handle.fileno()).st_size
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return written


class BufferedJSONStorage(Storage):
    """TinyDB storage that keeps its document in memory until ``flush`` writes it.

    TinyDB rewrites its whole document on every change; buffering lets the store make
    many changes and write each file once per step. ``bytes_written`` counts what
    ``flush`` wrote (the benchmark reads it).
    """

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._data: dict[str, Any] | None = None
        self._loaded = False
        self.dirty = False
        self.bytes_written = 0
        self.writes = 0

    def read(self) -> dict[str, Any] | None:
        if not self._loaded:
            self._data = read_json_file(self.path)
            self._loaded = True
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        self._data = data
        self._loaded = True
        self.dirty = True

    def flush(self) -> None:
        """Write the document if it changed (never, for a read-only copy)."""
        if not self.dirty or self.read_only:
            self.dirty = False
            return
        pieces = json_pieces(self._data or {}, sort_keys=True, depth=2)  # tables, rows
        self.bytes_written += write_atomically(self.path, pieces)
        self.dirty = False
        self.writes += 1

    def release(self) -> None:
        """Forget the parsed document once the store holds it as typed rows (memory)."""
        if not self.dirty:
            self._data = {}
            self._loaded = True

    def close(self) -> None:
        pass


# -- the JSON shape of each row: only this module knows it ------------------


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def time_or(value: object, default: datetime) -> datetime:
    return parse_time(value) or default


def row_doc(row: OutboxRow) -> dict[str, Any]:
    return {
        "target": row.target,
        "job_id": row.job_id,
        "searches": list(row.searches),
        "status": row.status.value,
        "created_at": format_time(row.created_at),
        "next_attempt_at": format_time(row.next_attempt_at),
        "attempts": row.attempts,
        "last_error": row.last_error,
        "held_since": iso(row.held_since),
        "done_at": iso(row.done_at),
        "title": row.title,
        "refused_by": row.refused_by,
        "change": row.change,
        "old_pay": _pay_doc(row.old_pay),
        "pay": _pay_doc(row.pay),
    }


def _pay_doc(pay: Pay | None) -> dict[str, Any] | None:
    return None if pay is None else dict(pay.__dict__)


def _pay_from(doc: object) -> Pay | None:
    return Pay(**doc) if isinstance(doc, dict) else None


def row_from_doc(doc: Mapping[str, Any], epoch: datetime) -> OutboxRow:
    created = time_or(doc.get("created_at"), epoch)
    return OutboxRow(
        target=str(doc["target"]),
        job_id=str(doc["job_id"]),
        searches=tuple(str(s) for s in doc.get("searches") or ()),
        status=DeliveryStatus(doc.get("status", DeliveryStatus.PENDING.value)),
        created_at=created,
        next_attempt_at=time_or(doc.get("next_attempt_at"), created),
        attempts=int(doc.get("attempts") or 0),
        last_error=doc.get("last_error"),
        held_since=parse_time(doc.get("held_since")),
        done_at=parse_time(doc.get("done_at")),
        title=doc.get("title"),
        refused_by=doc.get("refused_by"),
        change=doc.get("change"),
        old_pay=_pay_from(doc.get("old_pay")),
        pay=_pay_from(doc.get("pay")),
    )


def search_doc(state: SearchState) -> dict[str, Any]:
    return {
        "name": state.name,
        "fingerprint": state.fingerprint,
        "owner": state.owner,
        "since": format_time(state.since),
        "primed": state.primed,
        "seen": pack_ids(state.seen),
        "targets": list(state.targets),
    }


def pack_ids(ids: Iterable[str]) -> str | list[str]:
    """Seen ids as one space-separated string: loading a list of 500,000 strings costs
    several times the memory of the ids themselves. A list when an id has white space."""
    ordered = sorted(ids)
    packed = " ".join(ordered)
    if len(packed.split()) != len(ordered):  # an id with white space, or an empty one
        return ordered
    return packed


def unpack_ids(value: object) -> SeenIds:
    """The seen ids ``pack_ids`` wrote (or a plain list), interned: searches sharing a
    query hold the same ids, once in memory."""
    items: Iterable[object] = value.split() if isinstance(value, str) else ()
    if isinstance(value, list):
        items = value
    return SeenIds(str(i) for i in items)


def search_from_doc(doc: Mapping[str, Any], epoch: datetime) -> SearchState:
    return SearchState(
        name=str(doc["name"]),
        fingerprint=str(doc.get("fingerprint", "")),
        owner=str(doc.get("owner") or ""),
        since=time_or(doc.get("since"), epoch),
        primed=bool(doc.get("primed")),
        seen=unpack_ids(doc.get("seen")),
        targets=tuple(str(t) for t in doc.get("targets") or ()),
    )
