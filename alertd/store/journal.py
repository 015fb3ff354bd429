"""The delivery journal: each send's ``sending`` and its outcome, one line each.

Appended and fsynced before the send goes on (a message listing 500 jobs is one write,
not 500), so "written before the send, outcome after" costs a line, not a file. The
store folds the journal into its files at the next commit and empties it; at start it
replays what is left. A line torn by a crash is skipped: its send had not happened yet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alertd.errors import StoreError
from alertd.store.files import damaged, open_nofollow

JOURNAL_FILE = "journal.jsonl"


class Journal:
    """``journal.jsonl`` in a state directory; ``lines`` counts what a commit must empty."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL_FILE
        self.lines = 0
        self.bytes_written = 0

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
        """Append ``entries`` and fsync them once (OSError for the caller to name)."""
        text = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)
        fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.lines += len(entries)
        self.bytes_written += len(text)

    def empty(self) -> None:
        """Empty the journal once the files hold what it said (OSError for the caller)."""
        if self.lines:
            os.close(open_nofollow(self.path, os.O_WRONLY | os.O_TRUNC))
            self.lines = 0
