"""The long-running loop: signals, the cycle timer, config reloads, and a heartbeat file.

A signal handler only sets a flag: SIGTERM/SIGINT set ``stop``, which every wait in
alertd waits on and an API request in flight checks every second (``api.STOP_CHECK``),
so a stop takes effect within a moment, mid-cycle included; a second
one exits at once. SIGHUP asks for the config to be read again between cycles.

Cycles start every ``poll_interval`` from the previous cycle's start; a cycle that
overran the interval is followed at once by the next, never by a queue of them. A
cycle's own ask window (``plan.ask_window``) keeps one slow query from making it overrun
by more than one request's deadline.

The timer is a monotonic deadline waited out on the stop ``Event``, not the
``schedule`` library: schedule counts an interval from the end of the previous run, by
the wall clock, and leaves the waiting to its caller; the daemon's other timed work is
decided inside the cycle (a digest's hour, a retry's time, pruning old rows), so there
is nothing else to schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import FrameType

from alertd import __version__
from alertd.config import Config
from alertd.errors import ConfigError
from alertd.models import SavedSearch, format_time
from alertd.pipeline import CycleReport, utc_now
from alertd.sdnotify import Notifier
from alertd.store.files import TEMP_PREFIX
from alertd.words import duration, plural

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "heartbeat.json"
MAX_IDLE_STEP = 1.0  # seconds; how soon a SIGHUP is noticed while idle
# The client, the store, the metrics server and the community page hold these from the start.
RESTART_ONLY = ("api_url", "state_dir", "requests_per_minute", "metrics_port", "community")


def use_utc() -> None:
    """Run the process clock in UTC, so a DST change never shifts the timer by an hour."""
    os.environ["TZ"] = "UTC"
    time.tzset()


def next_start(last_start: float | None, interval: float, now: float) -> float:
    """When the next cycle starts: ``interval`` after the last start, or now if that passed."""
    return now if last_start is None else max(last_start + interval, now)


def keep_restart_settings(old: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the settings only a restart can change kept as in ``old``, and their names."""
    changed = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
    kept = {name: getattr(old, name) for name in changed}
    return dataclasses.replace(new, **kept), changed


def _placeless(search: SavedSearch) -> SavedSearch:
    return dataclasses.replace(search, line=None, file="")  # moving a search changes nothing


def describe_changes(old: Config, new: Config) -> str:
    """``12 searches (+2 new, -1 removed, 1 changed)``: what a reload did to the searches."""
    before = {s.name: _placeless(s) for s in old.searches}
    after = {s.name: _placeless(s) for s in new.searches}
    added = len(after.keys() - before.keys())
    removed = len(before.keys() - after.keys())
    changed = sum(1 for name in after.keys() & before.keys() if after[name] != before[name])
    return f"{len(after)} searches (+{added} new, -{removed} removed, {changed} changed)"


CycleRunner = Callable[[Config, bool], CycleReport]


class Daemon:
    """Runs ``cycle(config, fresh)`` at start and then every ``poll_interval`` until stopped.

    ``fresh`` is True for the first cycle after the start and after each SIGHUP: a person
    may have fixed a target that refused for good, so it is tried at once (``alertd
    once``, which cron runs every few minutes, keeps the slow schedule). ``reload``
    (when given) reads the config again on SIGHUP; a config that fails to load is
    refused and the one running stays.
    """

    def __init__(
        self,
        config: Config,
        cycle: CycleRunner,
        *,
        reload: Callable[[], Config] | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] | None = None,
        notifier: Notifier | None = None,
        heartbeat: bool = True,
    ) -> None:
        self.config = config
        self.heartbeat = heartbeat  # False for a dry run: it records nothing, health included
        self.cycle = cycle
        self.reload = reload
        self.stop = stop or threading.Event()
        self.clock = clock
        self.wait = wait or self.stop.wait
        self.reload_requested = False
        self.fresh = True  # the next cycle is the first since the start or a SIGHUP
        self.last_start: float | None = None
        self.cycles = 0
        self.unreachable = 0  # cycles in a row in which the API could not be reached
        self.searches_failing = 0  # cycles in a row that asked queries and got no answer
        self.last_beat: dict[str, object] | None = None  # what the last cycle wrote
        self.notifier = notifier or Notifier.from_environ()  # systemd's, when it runs us

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: first stops gracefully, a second exits at once; SIGHUP reloads."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if self.reload is not None:
            signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            os._exit(128 + signum)
        self.stop.set()
        log.info("%s received: stopping after the current step", signal.Signals(signum).name)

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    def run(self) -> None:
        """Poll now, then every ``poll_interval`` from each cycle's start, until stopped."""
        log.info(
            "alertd %s running: %s, polling every %s; API %s, config %s, state %s",
            __version__,
            plural(len(self.config.searches), "search", "searches"),
            duration(self.config.poll_interval),
            self.config.api_url,
            self.config.source,
            self.config.state_dir,
        )
        self._mark_started()
        while not self.stop.is_set():
            self.notifier.watchdog()
            if self.reload_requested:
                self.reload_requested = False
                self.fresh = True
                self.reload_config()
            due = next_start(self.last_start, self.config.poll_interval, self.clock())
            idle = due - self.clock()
            if idle > 0:
                self.wait(min(idle, MAX_IDLE_STEP))
                continue
            self._tick()
        self.notifier.stopping()
        if self.last_beat is not None:  # health says "stopped" now, not minutes from now
            self._write_beat({**self.last_beat, "stopped_at": format_time(utc_now())})
        log.info("alertd stopped after %s", plural(self.cycles, "cycle"))

    def reload_config(self) -> None:
        """Read the config again; use it from the next cycle on, or keep the running one."""
        if self.reload is None:
            return
        try:
            new = self.reload()
        except ConfigError as exc:
            log.error(
                "config reload refused: %s; still running the previous config", exc.describe()
            )
            return
        except Exception:  # a bug in loading must not take down a daemon that runs fine
            log.exception("config reload failed; still running the previous config")
            return
        new, kept = keep_restart_settings(self.config, new)
        log.info("config reloaded: %s", describe_changes(self.config, new))
        if kept:
            log.warning(
                "%s changed in the config but only change on restart; "
                "still using the previous value until alertd is restarted",
                ", ".join(kept),
            )
        self.config = new

    def _tick(self) -> None:
        started = self.last_start = self.clock()
        fresh, self.fresh = self.fresh, False
        report = self.cycle(self.config, fresh)
        self.cycles += 1
        now = self.clock()
        due = next_start(started, self.config.poll_interval, now)
        next_at = utc_now() + timedelta(seconds=due - now)
        level = logging.INFO if report.ok else logging.WARNING
        fields = {"cycle": self.cycles, "seconds": round(now - started, 3), **report.fields()}
        log.log(
            level,
            "cycle %d in %.1fs: %s; next poll %s",
            self.cycles,
            now - started,
            report.summary(),
            next_at.astimezone(self.config.tz).strftime("%H:%M:%S %Z"),
            extra={"fields": {**fields, "next_poll": next_at.isoformat(timespec="seconds")}},
        )
        self.write_heartbeat(report)
        self.notifier.cycle_ended(f"cycle {self.cycles}: {report.summary()}")

    def write_heartbeat(self, report: CycleReport) -> None:
        """``heartbeat.json`` in the state dir: when the last cycle ended, how it went, for
        how many cycles in a row the API could not be reached or failed every search asked,
        and the oldest owed alert: what ``alertd health`` judges by. A cycle that asked no
        query leaves the second count as it was: the last queries asked still failed."""
        self.unreachable = self.unreachable + 1 if report.api_unreachable else 0
        if report.searches_all_failed:
            self.searches_failing += 1
        elif report.asked:
            self.searches_failing = 0
        beat = {
            "at": format_time(utc_now()),
            "ok": report.ok,
            "pid": os.getpid(),
            "cycles": self.cycles,
            "unreachable_cycles": self.unreachable,
            "searches_failed_cycles": self.searches_failing,
            "oldest_owed": None if report.oldest_owed is None else format_time(report.oldest_owed),
            "refusing": report.refusing,
            "host": socket.gethostname(),  # where "pid" means something
        }
        self.last_beat = beat
        self._write_beat(beat)

    def _mark_started(self) -> None:
        """A heartbeat left by a daemon that stopped says so; this one is running now
        (its first cycle may take a while): the old "stopped at" must not stand."""
        if not self.heartbeat:
            return
        try:
            beat = json.loads((self.config.state_dir / HEARTBEAT_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(beat, dict) and "stopped_at" in beat:
            beat.pop("stopped_at")
            self._write_beat({**beat, "pid": os.getpid(), "host": socket.gethostname()})

    def _write_beat(self, beat: dict[str, object]) -> None:
        if not self.heartbeat:
            return
        path = self.config.state_dir / HEARTBEAT_FILE
        # A fresh temp name made with O_EXCL (never a link planted in its place), renamed
        # over heartbeat.json (a rename replaces a link there; it does not follow it).
        # The store removes one a kill left behind (its prefix) at the next start.
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + "heartbeat-", suffix=".tmp",
                                       dir=path.parent)  # fmt: skip
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(beat))
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            log.warning("could not write heartbeat %s: %s", path, exc)
