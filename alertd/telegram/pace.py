"""One pacer for everything the bot sends: Telegram's limits, kept before it asks.

Telegram refuses (429) more than 30 messages a second in all, more than about one a
second to one chat and 20 a minute to one group. Every send takes a slot here first,
replies and alerts alike, from whichever thread.

When Telegram saw a send: while in flight, it counts already; once answered, it counts
from its answer's end less a credit for the way back, half the quickest of the last 64
round trips (the credit when it ended, or the one now if smaller: a quicker trip shows
the network got faster, and an earlier send may have come back that fast). A send that
raised (no answer in time, a broken connection) gets no credit: its request may have
reached Telegram just before alertd gave up. This is safe whenever one send's way back
and a later one's way there together take at least the credit; a dropped packet or a
slow leg only adds to them. Not covered: a network that gets faster while a second's
only sends are on their way, nothing answered in between (the next second's copies may
then arrive early by up to half the change). Counting from the answer's end alone adds
a round trip to every second's 30 sends (24 s over the minimum for 10,000 copies at
50 ms); counting from a send's midpoint broke the limit in the tests when a connection
was retransmitted on its way there.

A member's reply goes before any alert waiting for a slot (``urgent``): a fan-out of
one job to 10,000 members never keeps a member typing waiting.

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
TRIPS = 64  # the quickest of this many recent round trips is the network's own
TRUSTED = 4  # until this many round trips are known, a send counts from its answer's end


def is_group(chat_id: int) -> bool:
    """Groups and channels have negative ids; a private chat is the member's own id."""
    return chat_id < 0


class StoppedError(Exception):
    """The daemon is stopping: the slot was not taken."""


class BusyError(Exception):
    """The slot was further off than the sender's patience: it was not taken."""


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
        # Finished sends as (answer's end, way back credited then); see ``_seen``.
        self._ends: list[tuple[float, float]] = []  # the last second's sends
        self._flying = 0  # sends asked and not answered yet: they count too
        self._chat_end: dict[int, tuple[float, float]] = {}
        self._chat_flying: set[int] = set()
        self._group_ends: dict[int, deque[tuple[float, float]]] = {}
        self._trips: deque[float] = deque(maxlen=TRIPS)  # recent sends' round trips
        # The way back a finished send may be counted as having taken: half the quickest
        # of ``_trips`` (0 until ``TRUSTED`` are known).
        self._credit = 0.0
        self._held_until = 0.0
        self._urgent = 0  # replies waiting for a slot: alerts wait behind them

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (what a 429 asked)."""
        with self._cond:
            self._held_until = max(self._held_until, self.clock() + seconds)
            self._cond.notify_all()

    def _seen(self, finished: tuple[float, float]) -> float:
        """When Telegram saw a finished send, at the latest: its answer's end less the
        smaller of the way back credited when it ended and the one credited now (the lock
        is held). A round trip quicker than those before means the network got faster,
        perhaps while that send was on its way: it may have come back the fast way."""
        end, back = finished
        return end - min(back, self._credit)

    def _wait_for(self, chat_id: int | None, now: float) -> float:
        """How long before a send to ``chat_id`` may go (0: now); the lock is held."""
        self._ends = [f for f in self._ends if self._seen(f) > now - 1.0]
        waits = [self._held_until - now, self._chat_wait(chat_id, now)]
        if self._flying + len(self._ends) >= self.per_second:
            oldest = min((self._seen(f) for f in self._ends), default=now - 0.95)
            waits.append(oldest + 1.0 - now)
        return max(waits)

    def _chat_wait(self, chat_id: int | None, now: float) -> float:
        """How long before ``chat_id``'s own limit lets a send to it go; the lock is held."""
        waits = [0.0]
        if chat_id is not None:
            if chat_id in self._chat_flying:
                waits.append(0.05)  # woken when it ends
            if is_group(chat_id):
                ends = self._group_ends.setdefault(chat_id, deque())
                while ends and self._seen(ends[0]) <= now - 60.0:
                    ends.popleft()
                if len(ends) >= self.group_per_minute:
                    waits.append(self._seen(ends[0]) + 60.0 - now)
            elif chat_id in self._chat_end:
                waits.append(self._seen(self._chat_end[chat_id]) + self.chat_gap - now)
        return max(waits)

    @contextmanager
    def slot(
        self,
        chat_id: int | None,
        urgent: bool = False,
        stop: threading.Event | None = None,
        patience: float | None = None,
    ) -> Iterator[None]:
        """Wait for a slot to send to ``chat_id`` (None: a call that is no message to a
        chat, such as an edit: the global limit only); the send happens in the block.
        StoppedError if ``stop`` is set while waiting; BusyError if the chat's own limit
        (one a second, a group's 20 a minute) puts the slot more than ``patience`` seconds
        from when this was asked, or from when a 429's hold ended if later."""
        asked = self.clock()
        with self._cond:
            self._urgent += urgent
            try:
                while True:
                    if stop is not None and stop.is_set():
                        raise StoppedError("stopping")
                    now = self.clock()
                    wait = self._wait_for(chat_id, now)
                    if wait <= 0 and (urgent or not self._urgent):
                        break
                    chat_wait = self._chat_wait(chat_id, now)  # not a 429's: the bot's
                    asked = max(asked, min(self._held_until, now))  # a hold is not the chat's
                    if patience is not None and now + chat_wait > asked + patience:
                        raise BusyError(f"no slot within {patience:g}s")
                    self._cond.wait(min(max(wait, 0.005), 1.0))
            finally:
                self._urgent -= urgent
            self._flying += 1
            if chat_id is not None:
                self._chat_flying.add(chat_id)
            began = self.clock()
        answered = False
        try:
            yield
            answered = True
        finally:
            with self._cond:
                end = self.clock()
                self._trips.append(end - began)
                if len(self._trips) >= TRUSTED:
                    self._credit = min(self._trips) / 2
                # Telegram saw it before end - back; a send that raised (no answer in
                # time, a broken connection) may have reached it just before the end.
                finished = (end, self._credit if answered else 0.0)
                self._flying -= 1
                self._ends.append(finished)
                if chat_id is not None:
                    self._chat_flying.discard(chat_id)
                    if is_group(chat_id):  # one send at a time to a chat: in order
                        self._group_ends.setdefault(chat_id, deque()).append(finished)
                    else:
                        self._chat_end[chat_id] = finished
                self._cond.notify_all()
