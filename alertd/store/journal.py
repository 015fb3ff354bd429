"""The delivery journal: each send's ``sending`` and its outcome, one line each.

Appended at once (a message listing 500 jobs is one write, not 500), so "written before
the send, outcome after" costs a line, not a file, and a kill loses no line. ``sync``
makes them durable; the store calls it before a send unless the last fsync is younger
than ``SYNC_WINDOW`` (sends that follow each other fast share one), and at the end of
each delivery. The store folds the journal into its files at the next commit and
empties it; at start it replays what is left. A line torn by a crash is skipped: its
send had not happened yet.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alertd.errors import StoreError
from alertd.store.files import damaged, open_nofollow

JOURNAL_FILE = "journal.jsonl"
# Seconds: lines written within this of the last fsync wait for the next one.
SYNC_WINDOW = 0.1
_LINE = json.JSONEncoder(separators=(",", ":"))  # one line's encoder: made once, not per line


class Journal:
    """``journal.jsonl`` in a state directory; ``lines`` counts what a commit must empty."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL_FILE
        self.lines = 0
        self.bytes_written = 0
        self.fsyncs = 0  # what deliveries cost the disk beyond their writes
        self.unsynced = False  # lines written since the last fsync
        self.synced_at = -SYNC_WINDOW  # time.monotonic() of that fsync

    def entries(self) -> Iterator[dict[str, Any]]:
        """The entries left by the last run, torn lines skipped (each still counted)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:  # alertd writes ASCII lines: not a torn write
            raise damaged(self.path, "is not alertd's journal (not text)") from exc
        for line in lines:
            self.lines += 1  # torn or not, the next commit empties the journal
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry

    def append(self, *entries: dict[str, Any]) -> None:
        """Append ``entries`` in one write, not fsynced (OSError for the caller to name)."""
        text = "".join(_LINE.encode(e) + "\n" for e in entries)
        fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        self.unsynced = True
        self.lines += len(entries)
        self.bytes_written += len(text)

    def is_sync_due(self) -> bool:
        """Whether the last fsync is ``SYNC_WINDOW`` old or more."""
        return time.monotonic() - self.synced_at >= SYNC_WINDOW

    def sync(self) -> None:
        """fsync the lines written since the last fsync, if any (OSError for the caller)."""
        if not self.unsynced:
            return
        fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.unsynced = False
        self.synced_at = time.monotonic()
        self.fsyncs += 1

    def empty(self) -> None:
        """Empty the journal once the files hold what it said (OSError for the caller)."""
        if self.lines:
            os.close(open_nofollow(self.path, os.O_WRONLY | os.O_TRUNC))
            self.lines = 0
            self.unsynced = False  # the files just written hold what its lines said
