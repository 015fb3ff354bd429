"""The page's per-address mail limit, kept across restarts: ``mail_quota.jsonl``.

Anyone can make the page mail any address (a confirmation, a lost link): the limit per
mailbox (``Limits.mail_per_address``, 3 a day) is what keeps it from mailing a victim
more. Held in memory only, a restart of alertd would hand out 3 more; a mail-bomber
only had to wait for one. So each mail the limit lets through appends one line,
``{"k": key, "t": unix time}``; at start the lines younger than the window are counted
again and the file is rewritten with those only (and again past ``COMPACT_LINES``).

The key is an HMAC, under a key derived from the members key, of the mailbox
(``rules.address_key``): the file names no address, and an address cannot be checked
against it without the state's key. A line older than the window counts for nothing and
leaves the file at the next rewrite (the next start, or ``COMPACT_LINES`` mails on).
Lines are not fsynced: a power cut may forget the
last few mails, which errs towards one more mail, never towards refusing someone for
good; a torn or damaged line is skipped. The file is mode 0600 and never read or
written through a symbolic link. The clock is the wall clock (``time.time``), since a
restart must compare with it; a clock set back counts the events it left in the future
as made now (running, as at a start): the limit lasts longer then, never less, and
never as long as the clock jumped.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from alertd.community.rules import RateLimiter
from alertd.errors import StoreError
from alertd.store.files import fix_for, open_nofollow, write_atomically

log = logging.getLogger(__name__)

QUOTA_FILE = "mail_quota.jsonl"
COMPACT_LINES = 10_000


class KeptRateLimiter(RateLimiter):
    """A ``RateLimiter`` whose counted events outlive the process, in ``path``."""

    def __init__(
        self,
        path: Path,
        limit: int,
        window: float,
        secret: bytes,
        *,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(limit, window, max_keys=max_keys, clock=clock)
        self.path = path
        self._secret = secret
        self._writing = threading.Lock()
        self._lines = 0
        self._rewrite_at = COMPACT_LINES  # lines; twice what the last rewrite kept
        self._load()

    def allow(self, key: str) -> bool:
        """``RateLimiter.allow`` for ``key``, the event counted in the file too."""
        kept = hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()
        now = self.clock()
        with self._lock:  # the clock went back: its events count from now, as at a start
            events = self._events.get(kept)
            if events and events[-1] > now:
                self._events[kept] = deque(min(moment, now) for moment in events)
        if not super().allow(kept):
            return False
        line = json.dumps({"k": kept, "t": round(self.clock(), 3)}) + "\n"
        with self._writing:
            try:
                fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
                self._lines += 1
                if self._lines > self._rewrite_at:
                    self._rewrite()
            except (OSError, StoreError) as exc:  # the limit still holds until a restart
                log.warning("community: cannot keep the mail limit in %s: %s", self.path, exc)
        return True

    def _load(self) -> None:
        """Count again the events younger than the window; rewrite the file with them."""
        try:
            fd = open_nofollow(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}; {fix_for(exc)}") from exc
        with os.fdopen(fd, "rb") as handle:
            lines = handle.read().splitlines()
        now = self.clock()
        events = []
        for line in lines:
            with contextlib.suppress(ValueError, TypeError, AttributeError, RecursionError):
                doc = json.loads(line)
                key, moment = str(doc["k"]), float(doc["t"])
                if moment > now - self.window:
                    events.append((min(moment, now), key))  # from the future: counted now
        for moment, key in sorted(events):
            self.restore(key, moment)
        with self._writing:
            try:
                self._rewrite()
            except OSError as exc:  # counted all the same: the file is rewritten later
                log.warning(
                    "community: cannot rewrite the mail limit's %s: %s; %s",
                    self.path,
                    exc.strerror or exc,
                    fix_for(exc),
                )

    def _rewrite(self) -> None:
        """The file again, with the events the window still holds (OSError to the caller)."""
        if self.path.is_symlink():
            open_nofollow(self.path, os.O_RDONLY)  # raises link_error: never through a link
        text = "".join(json.dumps({"k": key, "t": moment}) + "\n" for key, moment in self.events())
        write_atomically(self.path, text)
        self._lines = len(text.splitlines())
        # Not again at the next mail when the window still holds more than
        # COMPACT_LINES events: a rewrite at every mail would be quadratic.
        self._rewrite_at = max(COMPACT_LINES, 2 * self._lines)
