"""The members table's journal: one line per change, appended beside ``members.json``.

A line is ``{"v": <the table's version after the change>, "ops": [[table, key, doc],
...]}``: each row the change touched, whole as it now is, or ``null`` for a row it
deleted. Applying a line is idempotent, and ``v`` orders lines against the snapshot: a
line whose ``v`` the snapshot already has is skipped, so a crash between writing the
snapshot and removing the journal leaves a consistent table.

Only ``alertd.members`` uses this module. It appends under the members lock (one
``write`` and an ``fsync`` per change) and reads without it: a reader takes the
complete lines only, and what follows the last newline is either a line being written
right now or one torn by a crash. Which of the two, only a writer holding the lock can
tell (nobody else can be writing then): ``append`` cuts a torn tail off, with a
warning, before its own line, so a torn line never swallows the next one.

The file is opened without following a symbolic link (``open_nofollow``), created
mode 0600: its lines hold members' addresses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alertd.errors import StoreError
from alertd.store.files import open_nofollow

log = logging.getLogger(__name__)

TABLES = ("members", "searches", "pending", "telegram")
_LINE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class Entry:
    """One journal line: the version it makes and the rows it sets (None: deleted)."""

    version: int
    ops: tuple[tuple[str, str, dict[str, Any] | None], ...]


@dataclass(frozen=True)
class Batch:
    """What a read found past the last one: whole entries, and how many lines could not
    be read (damaged: not JSON, or not an entry's shape)."""

    entries: tuple[Entry, ...]
    damaged: int


def encode(version: int, ops: list[tuple[str, str, dict[str, Any] | None]]) -> bytes:
    """One line for ``append``: ASCII JSON, so its only newline is the last byte."""
    return (_LINE.encode({"v": version, "ops": [list(op) for op in ops]}) + "\n").encode()


def _entry(line: bytes) -> Entry | None:
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if (
        not isinstance(doc, dict)
        or type(doc.get("v")) is not int
        or not isinstance(doc.get("ops"), list)
    ):
        return None
    ops: list[tuple[str, str, dict[str, Any] | None]] = []
    for op in doc["ops"]:
        if not (isinstance(op, list) and len(op) == 3):
            return None
        table, key, row = op
        if table not in TABLES or not isinstance(key, str):
            return None
        if row is not None and not isinstance(row, dict):
            return None
        ops.append((str(table), key, row))
    return Entry(doc["v"], tuple(ops))


class MemberLog:
    """``members.journal``: where this instance has read to (``offset``, always at the
    end of a complete line) in which file (``inode``), and how much it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inode: int | None = None  # of the file read; None: none read yet
        self.offset = 0  # bytes read: complete lines only
        self.lines = 0  # complete lines in the file up to ``offset``
        self.tail = 0  # bytes past ``offset`` at the last read: a line not (yet) whole

    def reset(self) -> None:
        """Read from the start again at the next ``read_new``."""
        self.inode, self.offset, self.lines, self.tail = None, 0, 0, 0

    def is_unchanged(self) -> bool:
        """Cheap (one ``lstat``): whether the file is the one read, and no longer."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return self.inode is None
        return st.st_ino == self.inode and st.st_size == self.offset + self.tail

    def read_new(self) -> Batch | None:
        """The complete lines past ``offset``; None when the file is no longer the one
        read (replaced, removed or shorter): the caller reads everything again."""
        try:
            fd = open_nofollow(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return Batch((), 0) if self.inode is None else None
        try:
            st = os.fstat(fd)
            if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset):
                return None
            if self.inode is None and self.offset:
                return None
            chunks = []
            os.lseek(fd, self.offset, os.SEEK_SET)
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        whole = data.rfind(b"\n") + 1
        entries: list[Entry] = []
        damaged = 0
        for line in data[:whole].splitlines():
            entry = _entry(line)
            if entry is None:
                damaged += 1
            else:
                entries.append(entry)
        self.inode = st.st_ino
        self.offset += whole
        self.lines += len(entries) + damaged
        self.tail = len(data) - whole
        return Batch(tuple(entries), damaged)

    def append(self, line: bytes) -> None:
        """Append one ``encode``d line and fsync it. The caller holds the members lock
        and has read the file to its end (``read_new``): bytes past ``offset`` are a
        line torn by a crash, cut off first. A failed write is cut off too, so the file
        still ends in a whole line. OSError for the caller to name."""
        fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            st = os.fstat(fd)
            if st.st_ino != self.inode:
                if st.st_size:  # not the file the caller read: never cut what it holds
                    raise StoreError(f"{self.path} changed while alertd held its lock")
                self.reset()  # made just now
            if st.st_size != self.offset:
                log.warning(
                    "%s ended in a torn line (%d bytes, a write cut short by a crash): "
                    "it is ignored and cut off",
                    self.path,
                    st.st_size - self.offset,
                )
                os.ftruncate(fd, self.offset)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):  # else: the next append cuts it off
                    os.ftruncate(fd, self.offset)
                raise
        finally:
            os.close(fd)
        self.inode = st.st_ino
        self.offset += len(line)
        self.lines += 1
        self.tail = 0

    def remove(self) -> None:
        """Delete the file once a snapshot holds all it said (OSError for the caller):
        the deleted rows' lines leave the disk with it. The next ``append`` makes a new
        one, which readers tell from the old by its inode and its lines' versions."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        else:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.reset()
