"""One pacer for everything the bot sends: Telegram's limits, kept before it asks.

Telegram refuses (429) more than 30 messages a second in all, more than about one a
second to one chat and 20 a minute to one group. Every send takes a slot here first,
replies and alerts alike, from whichever thread. A slot is stamped when its answer
ends, not when it was asked for: Telegram saw the message at some moment in between,
so counting from the end can only leave more room than Telegram counts, whatever the
network's jitter. A member's reply goes before any alert waiting for a slot (``urgent``):
a fan-out of one job to 10,000 members never keeps a member typing waiting.

A 429's ``retry_after`` holds every send for that long (``hold``): the limits are the
bot's, not one chat's, and a storm of 429s must not be met with more requests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PER_SECOND = 30
CHAT_GAP = 1.0
GROUP_PER_MINUTE = 20


def is_group(chat_id: int) -> bool:
    """Groups and channels have negative ids; a private chat is the member's own id."""
    return chat_id < 0


class StoppedError(Exception):
    """The daemon is stopping: the slot was not taken."""


class Pacer:
    """Slots for sends, within Telegram's limits; safe to share between threads."""

    def __init__(
        self,
        per_second: int = PER_SECOND,
        chat_gap: float = CHAT_GAP,
        group_per_minute: int = GROUP_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.chat_gap = chat_gap
        self.group_per_minute = group_per_minute
        self.clock = clock
        self._cond = threading.Condition()
        self._ends: deque[float] = deque()  # when recent sends' answers ended
        self._flying = 0  # sends asked and not answered yet: they count too
        self._chat_end: dict[int, float] = {}
        self._chat_flying: set[int] = set()
        self._group_ends: dict[int, deque[float]] = {}
        self._held_until = 0.0
        self._urgent = 0  # replies waiting for a slot: alerts wait behind them

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (what a 429 asked)."""
        with self._cond:
            self._held_until = max(self._held_until, self.clock() + seconds)
            self._cond.notify_all()

    def _wait_for(self, chat_id: int | None, now: float) -> float:
        """How long before a send to ``chat_id`` may go (0: now); the lock is held."""
        while self._ends and self._ends[0] <= now - 1.0:
            self._ends.popleft()
        waits = [self._held_until - now]
        if self._flying + len(self._ends) >= self.per_second:
            waits.append(self._ends[0] + 1.0 - now if self._ends else 0.05)
        if chat_id is not None:
            if chat_id in self._chat_flying:
                waits.append(0.05)  # woken when it ends
            if is_group(chat_id):
                ends = self._group_ends.setdefault(chat_id, deque())
                while ends and ends[0] <= now - 60.0:
                    ends.popleft()
                if len(ends) >= self.group_per_minute:
                    waits.append(ends[0] + 60.0 - now)
            else:
                waits.append(self._chat_end.get(chat_id, -1e9) + self.chat_gap - now)
        return max(waits)

    @contextmanager
    def slot(
        self, chat_id: int | None, urgent: bool = False, stop: threading.Event | None = None
    ) -> Iterator[None]:
        """Wait for a slot to send to ``chat_id`` (None: a call that is no message to a
        chat, such as an edit: the global limit only); the send happens in the block.
        StoppedError if ``stop`` is set while waiting."""
        with self._cond:
            self._urgent += urgent
            try:
                while True:
                    if stop is not None and stop.is_set():
                        raise StoppedError("stopping")
                    wait = self._wait_for(chat_id, self.clock())
                    if wait <= 0 and (urgent or not self._urgent):
                        break
                    self._cond.wait(min(max(wait, 0.005), 1.0))
            finally:
                self._urgent -= urgent
            self._flying += 1
            if chat_id is not None:
                self._chat_flying.add(chat_id)
        try:
            yield
        finally:
            with self._cond:
                end = self.clock()
                self._flying -= 1
                self._ends.append(end)
                if chat_id is not None:
                    self._chat_flying.discard(chat_id)
                    if is_group(chat_id):
                        self._group_ends.setdefault(chat_id, deque()).append(end)
                    else:
                        self._chat_end[chat_id] = end
                self._cond.notify_all()
