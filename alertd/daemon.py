"""The long-running loop: signals, the ``schedule`` timer, and a heartbeat file.

A signal handler only sets ``stop``; every wait in alertd waits on that event, so a
SIGTERM takes effect within a moment, mid-cycle included. A second SIGTERM or SIGINT
exits at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import Any

import schedule

from alertd.models import format_time
from alertd.pipeline import CycleReport, utc_now
from alertd.settings import Config

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "heartbeat.json"


def use_utc() -> None:
    """Run the process clock in UTC, so a DST change never shifts the timer by an hour."""
    os.environ["TZ"] = "UTC"
    time.tzset()


class Daemon:
    """Runs ``cycle`` at start and then every ``config.poll_interval`` until stopped."""

    def __init__(
        self,
        config: Config,
        cycle: Callable[[], CycleReport],
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.cycle = cycle
        self.stop = stop or threading.Event()
        self.cycles = 0

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: first one stops gracefully, a second one exits at once."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            os._exit(128 + signum)
        self.stop.set()
        log.info("%s received: stopping after the current step", signal.Signals(signum).name)

    def run(self) -> None:
        """Poll now, then on schedule, until stopped."""
        scheduler = schedule.Scheduler()
        interval: Any = self.config.poll_interval  # schedule takes float seconds despite its hint
        scheduler.every(interval).seconds.do(self._tick)
        log.info(
            "alertd running: %d searches, polling every %s, state in %s",
            len(self.config.searches),
            timedelta(seconds=round(self.config.poll_interval)),
            self.config.state_dir,
        )
        self._tick()
        while not self.stop.is_set():
            scheduler.run_pending()
            idle = scheduler.idle_seconds
            self.stop.wait(1.0 if idle is None else min(max(idle, 0.05), 1.0))
        log.info("alertd stopped after %d cycles", self.cycles)

    def _tick(self) -> None:
        if self.stop.is_set():
            return
        started = time.monotonic()
        report = self.cycle()
        self.cycles += 1
        elapsed = time.monotonic() - started
        next_at = utc_now() + timedelta(seconds=self.config.poll_interval)
        level = logging.INFO if report.ok else logging.WARNING
        log.log(
            level,
            "cycle %d in %.1fs: %s; next poll %s",
            self.cycles,
            elapsed,
            report.summary(),
            next_at.astimezone(self.config.tz).strftime("%H:%M:%S %Z"),
        )
        self.write_heartbeat(report)

    def write_heartbeat(self, report: CycleReport) -> None:
        """``heartbeat.json`` in the state dir: when the last cycle ended and how it went."""
        path = self.config.state_dir / HEARTBEAT_FILE
        beat = {
            "at": format_time(utc_now()),
            "ok": report.ok,
            "pid": os.getpid(),
            "cycles": self.cycles,
        }
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(beat), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write heartbeat %s: %s", path, exc)
