"""Listening sockets that no client can starve the daemon with.

A threading server (``socketserver.ThreadingMixIn``) gives every connection a thread
and a descriptor for as long as the client keeps it open: 250 idle or half-open
connections to the metrics port took the process past its descriptor limit, and then
the state could not be written ("Too many open files") and alerts stayed owed.
``BoundedServer`` holds every connection to three limits:

- ``max_connections`` at once: one more is closed as soon as it is accepted (no thread);
- ``idle_timeout`` seconds for each read or write (the socket's timeout);
- ``connection_deadline`` seconds in all, however slowly the client trickles: the
  server's own loop (``service_actions``, every ``poll_interval``) shuts down what is
  older, so no timer thread is needed.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
import time
from typing import Any

# A port that shows targets' names and failures listens on loopback unless told otherwise.
DEFAULT_HOST = "127.0.0.1"
MAX_CONNECTIONS = 16
IDLE_TIMEOUT = 10.0
CONNECTION_DEADLINE = 30.0


class BoundedServer(socketserver.ThreadingMixIn):
    """Mixed in before a ``TCPServer``: a thread per connection, within the limits."""

    daemon_threads = True
    block_on_close = False
    # A burst waits in the kernel's queue to be accepted (and closed, when over the cap)
    # instead of each connect being dropped and retried a second later.
    request_queue_size = 128
    max_connections = MAX_CONNECTIONS
    idle_timeout: float = IDLE_TIMEOUT
    connection_deadline: float | None = CONNECTION_DEADLINE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: dict[Any, float] = {}  # each connection: when it was accepted
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[Any, Any]:
        conn, address = super().get_request()  # type: ignore[misc]
        conn.settimeout(self.idle_timeout)
        return conn, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = len(self._open) >= self.max_connections
            if not full:
                self._open[request] = time.monotonic()
        if full:  # no thread, no lingering descriptor: closed at once
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)

    def service_actions(self) -> None:
        super().service_actions()  # type: ignore[misc]
        deadline = self.connection_deadline
        if deadline is None:
            return
        too_old = time.monotonic() - deadline
        with self._open_lock:
            late = [conn for conn, at in self._open.items() if at <= too_old]
        for conn in late:  # its thread's read or write then fails, and the thread ends
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went quiet (timed out, cut at the deadline) or away is not an
        error worth a traceback on standard error; anything else is."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)  # type: ignore[misc]

    @property
    def connections(self) -> int:
        """Connections open now (for tests and the curious)."""
        with self._open_lock:
            return len(self._open)
