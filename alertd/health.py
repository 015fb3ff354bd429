"""Is the daemon doing its job? One verdict, from ``heartbeat.json``, for two askers.

``alertd health`` (a container's or a monitor's health check) and ``/healthz`` on the
metrics port (``metrics.py``) both read the heartbeat the daemon writes after every
cycle (``Daemon.write_heartbeat``) and ask ``judge_health``, so they never disagree.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from alertd.models import parse_time
from alertd.render import show_time

DEFAULT_MAX_UNREACHABLE = 3
DEFAULT_MAX_OWED_AGE = 24 * 3600.0


@dataclass(frozen=True)
class HealthLimits:
    """What still counts as healthy: seconds since the last cycle ended, cycles in a row
    without the API (or with every search asked failing), seconds an alert may stay owed."""

    max_age: float
    max_unreachable: int = DEFAULT_MAX_UNREACHABLE
    max_owed_age: float = DEFAULT_MAX_OWED_AGE

    @classmethod
    def for_interval(cls, poll_interval: float) -> HealthLimits:
        """The defaults for a daemon polling every ``poll_interval`` seconds."""
        return cls(max_age=3 * poll_interval + 60)


@dataclass(frozen=True)
class Verdict:
    """Healthy or not, and the one line that says why (``healthy: ...``/``unhealthy: ...``)."""

    healthy: bool
    reason: str

    @property
    def line(self) -> str:
        """What a person reads: ``healthy: cycle 12 ended 3s ago``."""
        return f"{'healthy' if self.healthy else 'unhealthy'}: {self.reason}"


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    """The heartbeat as written, or None when it is missing or unreadable.

    PermissionError is raised: "no heartbeat" would hide that the asker cannot read it.
    """
    try:
        beat = json.loads(path.read_text(encoding="utf-8"))
    except PermissionError:
        raise
    except (OSError, ValueError):
        return None
    return beat if isinstance(beat, dict) else None


def process_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (or in this container)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or not ours to ask): assume it is there
    return True


def judge_health(
    beat: dict[str, Any] | None,
    path: Path,
    now: datetime,
    limits: HealthLimits,
    tz: tzinfo,
    running: Callable[[int], bool] | None = None,
) -> Verdict:
    """The verdict on the heartbeat ``beat`` (read from ``path``) at ``now``.

    ``running`` (``process_running`` for ``alertd health``) lets a daemon that is gone be
    said at once: it stopped (its last heartbeat says so), or the process that wrote the
    heartbeat on this host no longer exists (a kill -9, a crash), instead of only once
    the heartbeat is three poll intervals old.
    """
    at = parse_time(beat.get("at")) if beat is not None else None
    if beat is None or at is None:
        return Verdict(False, f"no heartbeat in {path} (is `alertd run` running?)")
    stopped = parse_time(beat.get("stopped_at"))
    if stopped is not None:
        return Verdict(False, f"alertd stopped at {show_time(stopped, tz)}")
    pid = beat.get("pid")
    here = beat.get("host") == socket.gethostname()
    if running is not None and here and isinstance(pid, int) and not running(pid):
        return Verdict(False, f"the daemon that wrote {path.name} (pid {pid}) is not running")
    age = (now - at).total_seconds()
    if age > limits.max_age:
        return Verdict(
            False,
            f"the last cycle ended {age:.0f}s ago (limit {limits.max_age:.0f}s): stopped or stuck?",
        )
    unreachable = int(beat.get("unreachable_cycles") or 0)
    if unreachable >= limits.max_unreachable:
        return Verdict(
            False, f"the API did not answer in the last {unreachable} cycles (see the log)"
        )
    failing = int(beat.get("searches_failed_cycles") or 0)
    if failing >= limits.max_unreachable:
        return Verdict(
            False,
            f"every search asked failed in the last {failing} cycles that asked the API "
            "(see the log for why)",
        )
    refusing = beat.get("refusing") or []
    if refusing:
        return Verdict(
            False,
            f"{', '.join(map(str, refusing))} refused alerts for good (revoked token? deleted "
            "webhook?): fix the URL, then `alertd status`",
        )
    oldest = parse_time(beat.get("oldest_owed"))
    if oldest is not None and (now - oldest).total_seconds() > limits.max_owed_age:
        since = show_time(oldest, tz)
        return Verdict(
            False, f"an alert has been owed since {since}: see `alertd status` for the target"
        )
    return Verdict(True, f"cycle {beat.get('cycles')} ended {age:.0f}s ago")
