"""Telling systemd how the daemon is doing: the ``sd_notify`` protocol, in a few lines.

systemd runs a ``Type=notify`` service with ``$NOTIFY_SOCKET`` set to a unix datagram
socket (a path, or ``@name`` in the abstract namespace). Each datagram is lines of
``KEY=value``: ``READY=1`` once the service works (alertd: after its first cycle),
``STATUS=`` a line ``systemctl status`` shows, ``WATCHDOG=1`` a sign of life that
must come at least every ``WatchdogSec=`` (systemd passes it as ``$WATCHDOG_USEC``),
``STOPPING=1`` when it shuts down.

Without ``$NOTIFY_SOCKET`` (a shell, Docker, cron) every call does nothing. A notify
that fails is logged once and never stops the daemon: it is a report, not a duty.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def socket_address(value: str | None) -> str | None:
    """The address to send to for ``$NOTIFY_SOCKET``: a path, or ``\\0name`` for ``@name``.

    None when unset or of a kind alertd does not speak (``vsock:``): nothing is sent.
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``$WATCHDOG_USEC``, as systemd advises.

    None when no watchdog is asked for, or it is meant for another process
    (``$WATCHDOG_PID`` set to a pid not ours).
    """
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Notifier:
    """Sends sd_notify messages to ``address``; with no address, does nothing."""

    def __init__(
        self,
        address: str | None,
        watchdog_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.watchdog_every = watchdog_every
        self.clock = clock
        self.ready = False
        self.last_watchdog: float | None = None
        self.broken = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for through the environment (none outside systemd)."""
        env = os.environ if environ is None else environ
        return cls(socket_address(env.get("NOTIFY_SOCKET")), watchdog_interval(env, os.getpid()))

    def send(self, *fields: str) -> None:
        """One datagram of ``KEY=value`` lines; a failure is logged once, never raised."""
        if self.address is None or not fields:
            return
        message = "\n".join(field.replace("\n", " ") for field in fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self.broken:
                log.warning("could not notify systemd at $NOTIFY_SOCKET: %s", exc)
            self.broken = True

    def cycle_ended(self, status: str) -> None:
        """After a cycle: ``READY=1`` the first time, the summary as ``STATUS=``, a watchdog."""
        fields = [] if self.ready else ["READY=1"]
        self.ready = True
        fields.append(f"STATUS={status}")
        if self.watchdog_every is not None:
            fields.append("WATCHDOG=1")
            self.last_watchdog = self.clock()
        self.send(*fields)

    def watchdog(self) -> None:
        """``WATCHDOG=1`` when half the watchdog time has passed since the last one."""
        if self.watchdog_every is None:
            return
        now = self.clock()
        if self.last_watchdog is None or now - self.last_watchdog >= self.watchdog_every:
            self.last_watchdog = now
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """``STOPPING=1``: the daemon is shutting down on purpose."""
        self.send("STOPPING=1", "STATUS=stopping")
