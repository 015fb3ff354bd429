"""One API request window for every alertd process that shares a state directory.

The API counts requests per client IP, so ``requests_per_minute`` can only mean what it
says if ``run``, ``once`` from cron, and an operator's ``preview``, ``facets`` and
``validate --online`` beside them count against one window. It is kept in the state
directory, in ``api-budget``: a few hundred bytes to 2 KB (120 requests), rewritten in
place under an ``fcntl`` lock at each request's start and end.

What it holds, all on the machine's ``CLOCK_MONOTONIC`` (one clock for every
process on a Linux host) and tagged with the boot it belongs to:

- ``ended``: when each request of the last minute got its answer (see
  ``api.RateBudget`` for why the end, not the start, is stamped);
- ``flying``: requests on their way, each with when it started and the longest it may
  take. A process killed with a request in flight cannot end it; its slot counts as
  ended at the latest moment the request could have ended, so it ages out like any
  other, a minute later: a crash never holds the budget for ever;
- ``hold``: until when the API asked everyone on this IP to wait (``Retry-After``).

A file that cannot be read (torn, garbled, another boot's, another version's) is taken
as a full window for one minute, never as an empty one: every request it counted has
either ended within the last minute, so is out of the API's window a minute later, or
is still in flight, and its owner stamps its end when it comes. Starting from empty
could let a whole minute's budget more into a window that is already full, and a 429
is everyone's on the IP; waiting one minute, once, after something already went wrong,
is the cheap side.

Where the file cannot be used (a state directory this user cannot write, a file system
without locks), the process counts its own requests only, after one WARNING line. Only
``run`` and ``once`` (its store) make the state directory; before it exists no alertd
has used it, and ``preview`` and the like count alone rather than leave a trace.
"""

from __future__ import annotations

import array
import bisect
import collections
import contextlib
import errno
import fcntl
import itertools
import logging
import math
import os
import secrets
import stat
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

BUDGET_FILE = "api-budget"
FORMAT = 1
MARGIN = 0.5  # seconds a slot is held past the window (clocks run at different rates)
FLIGHT_GRACE = 5.0  # past a request's own deadline before a vanished owner's slot ends
IN_FLIGHT_POLL = 0.25  # when other processes' requests in flight fill the window
BUSY_WAIT = 0.05  # when another process holds the lock for long (stopped mid-write?)
LOCK_TRIES = 20  # of a non-blocking lock, a millisecond apart, before BUSY_WAIT
BUSY_LIMIT = 10.0  # seconds busy without a break: the holder is stuck, or not an alertd
MAX_HOLD = 900.0 + 60.0  # the longest Retry-After honoured (api.MAX_RETRY_AFTER), plus slack
MAX_ENTRIES = 10_000  # more than any window can hold: a file with more is not ours


def _window_seconds() -> float:
    """60 s, as the API counts. ``_ALERTD_BUDGET_WINDOW`` shortens it for tests that
    run processes against a stand-in counting the same shorter window; not a setting."""
    text = os.environ.get("_ALERTD_BUDGET_WINDOW", "")
    try:
        seconds = float(text)
    except ValueError:
        return 60.0
    return seconds if math.isfinite(seconds) and 0 < seconds <= 60.0 else 60.0


WINDOW = _window_seconds()


def wait_for(ended: list[float], in_flight: int, per_minute: int, now: float, span: float) -> float:
    """Seconds until one more request fits: ``ended`` (ascending, all inside the window)
    plus ``in_flight`` hold slots; the request ``per_minute`` places back must have
    ended ``span`` ago. A lower bound when requests in flight fill the window (their
    ends are not known yet): the caller looks again after waiting it."""
    excess = len(ended) + in_flight - per_minute
    if excess < 0:
        return 0.0
    if not ended:
        return IN_FLIGHT_POLL
    return max(0.0, ended[min(excess, len(ended) - 1)] + span - now)


class Window(Protocol):
    """Where a ``RateBudget`` counts: its own process, or every process of a state dir."""

    def take(self, per_minute: int, span: float) -> tuple[float, float]:
        """(seconds to wait, seconds the API's hold has left). When the wait is 0 the
        slot is taken: the request counts as in flight until ``give_back``."""
        ...

    def give_back(self) -> None:
        """The request ``take`` let out got its answer (or failed): its slot ends now."""
        ...

    def hold(self, seconds: float) -> None:
        """Nothing goes out for ``seconds`` (the API said ``Retry-After``)."""
        ...


class LocalWindow:
    """The window of this process alone, on ``clock``."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, ended: Iterable[float] = ()
    ) -> None:
        self.clock = clock
        self.ended: collections.deque[float] = collections.deque(sorted(ended))
        self.in_flight = 0
        self.hold_until = 0.0

    def take(self, per_minute: int, span: float) -> tuple[float, float]:
        """See ``Window.take``."""
        now = self.clock()
        while self.ended and self.ended[0] + span <= now:  # the same sum as wait_for's
            self.ended.popleft()
        held = max(0.0, self.hold_until - now)
        wait = max(held, wait_for(list(self.ended), self.in_flight, per_minute, now, span))
        if wait <= 0:
            self.in_flight += 1
        return wait, held

    def give_back(self) -> None:
        """See ``Window.give_back``."""
        self.in_flight = max(0, self.in_flight - 1)
        self.ended.append(self.clock())

    def hold(self, seconds: float) -> None:
        """See ``Window.hold``."""
        self.hold_until = max(self.hold_until, self.clock() + seconds)


@dataclass
class Flight:
    """One request on its way, in some process: it has surely ended by ``ends_by``."""

    pid: int
    number: int  # one of the process's requests
    started: float
    longest: float

    @property
    def ends_by(self) -> float:
        """The latest moment the request can still be on its way."""
        return self.started + self.longest + FLIGHT_GRACE


@dataclass
class Shared:
    """What ``api-budget`` says."""

    hold: float = 0.0
    ended: list[float] = field(default_factory=list)
    flying: list[Flight] = field(default_factory=list)

    def tidy(self, now: float, span: float) -> None:
        """Requests whose owner vanished end at the latest they could; old ends go."""
        for flight in [f for f in self.flying if f.ends_by <= now]:
            self.flying.remove(flight)
            bisect.insort(self.ended, flight.ends_by)
        self.ended = [t for t in self.ended if t + span > now]


class UnreadableError(ValueError):
    """``api-budget`` holds something this alertd did not write (or a torn write)."""


def boot_id() -> bytes:
    """This boot of the machine (36 bytes): monotonic times from another mean nothing."""
    try:
        text = Path("/proc/sys/kernel/random/boot_id").read_text("ascii").strip()
    except OSError:
        text = ""
    return text.encode("ascii", "replace")[:36].ljust(36)


BOOT = boot_id()
MAGIC = b"alertd-budget-%d\n" % FORMAT
# After MAGIC, one line of hex (text, like every file in the state directory) of:
# crc32 of the rest, boot, hold, how many ended, how many flying; then the ended times,
# then each flight as pid, number, started, longest. Packed, so that a read and a write
# cost microseconds (JSON's floats took five times as long).
HEAD = struct.Struct("<I36sdII")
FLIGHT = struct.Struct("<IIdd")


def encode(state: Shared) -> bytes:
    """The file's bytes for ``state``."""
    ended = array.array("d", state.ended).tobytes()
    flights = b"".join(FLIGHT.pack(f.pid, f.number, f.started, f.longest) for f in state.flying)
    rest = HEAD.pack(0, BOOT, state.hold, len(state.ended), len(state.flying))[4:]
    rest += ended + flights
    return MAGIC + (struct.pack("<I", zlib.crc32(rest)) + rest).hex().encode() + b"\n"


def decode(text: bytes, now: float) -> Shared:
    """The state in ``text`` (empty: a new file); UnreadableError when it is not one this
    alertd wrote in this boot, or says something no process of this host can have.
    Past the line, a longer state's tail not yet cut off is ignored."""
    if not text:
        return Shared()
    line, newline, _ = text.removeprefix(MAGIC).partition(b"\n")
    if not text.startswith(MAGIC) or not newline:
        raise UnreadableError("not this alertd's format, or torn")
    try:
        data = bytes.fromhex(line.decode("ascii"))
    except ValueError as exc:
        raise UnreadableError("garbled") from exc
    if len(data) < HEAD.size:
        raise UnreadableError("torn")
    crc, boot, hold, n_ended, n_flying = HEAD.unpack_from(data)
    start = HEAD.size
    end = start + 8 * n_ended + FLIGHT.size * n_flying
    if n_ended + n_flying > MAX_ENTRIES or len(data) != end:
        raise UnreadableError("torn")
    if zlib.crc32(data[4:end]) != crc:
        raise UnreadableError("torn or garbled")
    if boot != BOOT:
        raise UnreadableError("written before the machine restarted")
    ended = array.array("d")
    ended.frombytes(data[start : start + 8 * n_ended])
    flights = [
        Flight(*FLIGHT.unpack_from(data, at)) for at in range(start + 8 * n_ended, end, FLIGHT.size)
    ]
    state = Shared(hold, sorted(ended), flights)
    times = [hold, *state.ended, *(f.started for f in flights)]
    if (
        not math.isfinite(sum(times))  # a NaN or an infinity anywhere
        or max(times[1:], default=now) > now + 1.0
        or hold > now + MAX_HOLD
        or not all(0 <= f.longest <= MAX_HOLD for f in flights)
    ):
        raise UnreadableError("times no process of this boot can have written")
    return state


# A request's number in this process, whichever window; from a random start, so that a
# process reusing a dead one's pid does not take the dead one's flight for its own.
_NUMBERS = itertools.count(secrets.randbelow(1 << 31) + 1)


class _BusyError(Exception):
    """Another process held the lock longer than a write takes."""


def _check_own(fd: int) -> None:
    """OSError unless ``fd`` is a file of its own: a regular file with no other name.
    Another name (a hard link planted by whoever can write the state directory, where
    the kernel's protected_hardlinks is off) would have alertd rewrite and truncate
    whatever file it also names."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "it is not a regular file")
    if info.st_nlink != 1:
        raise OSError(errno.EMLINK, "it has another name (a hard link)")


class SharedWindow:
    """The window in ``state_dir/api-budget``, shared by every process that opens it.

    ``longest`` is the longest one request of this process may take (its deadline): a
    slot left in flight by a process that died ends then, or ``MAX_HOLD`` after it
    started when the deadline is longer (``request_timeout: 1h``): the API counted the
    request when it arrived, soon after it started, so a longer hold protects nothing,
    and a file saying more would be taken for one no process wrote. Each call opens the file by
    its path, so a file deleted or replaced is found again by every process alike, and
    reads ``clock`` once it holds the lock, so no other process's stamp is newer.
    """

    def __init__(
        self, path: Path, longest: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.longest = min(longest, MAX_HOLD)
        self.clock = clock
        self.mine: collections.deque[int] = collections.deque()
        self.hold_until = 0.0  # ours, in case the file could not take it
        self.last = Shared()  # as last read: what a fallback starts from
        self.fallback: LocalWindow | None = None
        self.file_ops = 0  # times the file was locked and read (for tests, measurements)
        self.busy_since: float | None = None  # (time.monotonic) found locked since

    def check(self) -> None:
        """Open, lock and read the file once (OSError when it cannot be used)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(_BusyError), self._locked(WINDOW + MARGIN):
            pass  # (busy: another process is using it, so it can be used)

    @contextlib.contextmanager
    def _locked(self, span: float) -> Iterator[tuple[Shared, float]]:
        """The file's state and the time, locked; written back when the block ends
        without an error."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o600)
        try:
            _check_own(fd)
            self._lock(fd)
            now = self.clock()
            data = os.pread(fd, 1 << 20, 0)
            if not data:
                self._adopt(fd)
            try:
                state = decode(data, now)
            except UnreadableError as exc:
                log.warning(
                    "the shared request budget %s was unreadable (%s): counting it as "
                    "full for a minute, as it may have been",
                    self.path,
                    exc,
                )
                state = Shared(hold=now + span)
            state.tidy(now, span)
            self.file_ops += 1
            yield state, now
            self.last = state
            line = encode(state)
            if data != line:  # a wait that aged nothing out writes nothing
                if os.pwrite(fd, line, 0) != len(line):  # a file size limit (ulimit -f)
                    raise OSError(errno.EFBIG, "a short write (file size limit?)")
                if len(data) > len(line):
                    os.ftruncate(fd, len(line))
        finally:
            os.close(fd)  # and with it the lock

    @staticmethod
    def _lock(fd: int) -> None:
        """Lock ``fd``; _BusyError if another process keeps it past a write's time."""
        for _ in range(LOCK_TRIES):  # never blocks for good: the holder may be stopped
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.001)
        raise _BusyError

    def _adopt(self, fd: int) -> None:
        """A file root just created (an operator's ``sudo alertd preview``) goes to the
        state directory's owner, so the daemon's user can still use it."""
        if os.geteuid() != 0:
            return
        owner = os.stat(self.path.parent)
        if os.fstat(fd).st_uid != owner.st_uid:
            os.fchown(fd, owner.st_uid, owner.st_gid)

    def _lost(self, exc: OSError) -> LocalWindow:
        """The file stopped working mid-run: count alone from what it said last (the
        requests then in flight as ending now, the earliest they can)."""
        log.warning(
            "the shared request budget %s cannot be used any more (%s): this process "
            "counts only its own requests from now on",
            self.path,
            exc.strerror or exc,
        )
        now = self.clock()
        last = self.last
        window = LocalWindow(self.clock, [*last.ended, *(now for _ in last.flying)])
        window.in_flight = len(self.mine)
        window.hold_until = max(self.hold_until, last.hold)
        self.fallback = window
        return window

    def take(self, per_minute: int, span: float) -> tuple[float, float]:
        """See ``Window.take``; the file is written only when the slot is taken."""
        if self.fallback is not None:
            return self.fallback.take(per_minute, span)
        try:
            number = 0
            with self._locked(span) as (state, now):
                held = max(0.0, state.hold - now, self.hold_until - now)
                wait = max(held, wait_for(state.ended, len(state.flying), per_minute, now, span))
                if wait <= 0:
                    number = next(_NUMBERS)
                    state.flying.append(Flight(os.getpid(), number, now, self.longest))
            if number:
                self.mine.append(number)  # once it is written
            self.busy_since = None
            return wait, held
        except _BusyError:
            # A write holds the lock for microseconds. Kept for BUSY_LIMIT, it is kept by
            # a process stopped mid-write, or by one that is not an alertd (any process
            # that can open the file can lock it): counting alone beats waiting for good.
            busy = time.monotonic()
            if self.busy_since is None:
                self.busy_since = busy
            elif busy - self.busy_since >= BUSY_LIMIT:
                stuck = OSError(
                    errno.EWOULDBLOCK, f"locked by another process for {BUSY_LIMIT:.0f}s"
                )
                return self._lost(stuck).take(per_minute, span)
            return BUSY_WAIT, 0.0
        except OSError as exc:
            return self._lost(exc).take(per_minute, span)

    def give_back(self) -> None:
        """See ``Window.give_back``. If the file cannot be locked now, the slot still
        ends when the request's deadline has passed: late, which is the safe side."""
        number = self.mine.popleft() if self.mine else 0
        pid = os.getpid()
        if self.fallback is not None:
            self.fallback.give_back()
            return
        try:
            with self._locked(WINDOW + MARGIN) as (state, now):
                mine = [f for f in state.flying if (f.pid, f.number) == (pid, number)]
                if mine:
                    state.flying.remove(mine[0])
                bisect.insort(state.ended, now)
        except _BusyError:
            log.debug("the shared request budget was busy; a slot ends at its deadline")
        except OSError as exc:
            self._lost(exc).give_back()

    def hold(self, seconds: float) -> None:
        """See ``Window.hold``: every process on this host waits."""
        if self.fallback is not None:
            self.fallback.hold(seconds)
            return
        self.hold_until = max(self.hold_until, self.clock() + seconds)
        try:
            with self._locked(WINDOW + MARGIN) as (state, now):
                state.hold = max(state.hold, now + min(seconds, MAX_HOLD))
        except _BusyError:
            pass  # kept in hold_until: this process waits, at least
        except OSError as exc:
            self._lost(exc).hold(seconds)


def open_window(state_dir: Path, longest: float, *, create: bool = False) -> Window:
    """The request window shared through ``state_dir``; this process's own, after one
    WARNING line, when it cannot be used. A state directory that does not exist is made
    only if ``create`` (``alertd run``); otherwise no alertd has used it yet, there is no
    one to share with, and a command that records nothing (``preview``) leaves no trace."""
    window = SharedWindow(state_dir / BUDGET_FILE, longest)
    if not create and not state_dir.is_dir():
        return LocalWindow()
    try:
        window.check()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            reason = "it is a symbolic link"
        log.warning(
            "the request budget is not shared with other alertd processes: cannot use "
            "%s (%s); this process counts only its own requests",
            window.path,
            reason,
        )
        return LocalWindow()  # its clock: the same as the client's, time.monotonic
    return window
