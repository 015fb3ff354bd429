"""One delivery's HTTP exchange, held to a whole deadline, a small answer and no redirect.

A target is somewhere the operator sends alerts, not somewhere alertd trusts: its
answer may never end (a ``200`` followed by an endless or trickling body), be huge, or
redirect to another host. Every send runs on a worker thread under an ``Exchange``:

- **a whole deadline**: the caller waits at most ``send_timeout`` (and a second's
  grace) for the send, in slices of ``STOP_CHECK`` so that a SIGTERM ends the wait
  within a second. A worker still reading an answer then is abandoned and the socket
  it reads is shut down, so it ends at once (apprise 2's executor threads are joined
  when the process exits: one left reading would hold a stopping daemon). Every
  connection requests opens for the send is kept (as a duplicate of its socket) from
  the moment it connects, so a target that trickles its status line and headers, a
  byte at a time inside the read timeout, is cut too: otherwise each such send left a
  thread and a socket behind for as long as the target kept trickling.
- **an answer of at most ``MAX_ANSWER`` bytes**, read while the deadline lasts: a
  webhook says "ok" in a few bytes, and nothing past that is ever needed.
- **no redirect followed**: the redirect is the outcome, a failure the operator sees.
  Following one sent a 301's message as a body-less GET (recorded as sent: the alert
  lost) and a 307's body and custom headers to a host nobody configured.

What counts as sent: the status line. A target that answered ``2xx`` to the request
carrying the message has it, whatever its body then does: an answer cut at the cap or
the deadline, or a stop while it trickles, is still a send it accepted, so the alert is
never sent again (the one thing a person notices more than a late alert is the same
alert twice). The ``2xx`` counts only for the last request of a send, and only one that
carries a body (POST, PUT, PATCH): a login or lookup that succeeded before a message
that never got its answer is not the message.

apprise sends with ``requests`` (``requests.post(...)`` with a new ``Session`` each
time; apprise 2.3 runs it on its own executor, copying the caller's ``contextvars``
(its ``submit_with_context``), and one that calls it in the caller's thread keeps them
too: the ``Exchange`` is found; ``test_hostile_delivery.py`` fails if that stops).
Three methods of ``requests`` are wrapped, once, for every session: ``Session.
get_redirect_target`` (requests' documented place for the redirect decision) answers
"none", ``HTTPAdapter.build_response`` reads the answer under the limits, and
``HTTPAdapter.send`` forgets what the send's previous request was answered (a login's
2xx before a message that never got its answer is not the message's); and urllib3's
``util.connection.create_connection`` hands the send each socket it connects. All four
do what they did unless the current context holds an ``Exchange``, which only a
delivery's worker sets: nothing else in the process (or using requests beside alertd)
changes. alertd's own Discord and Slack posts (httpx) read their answer through
``Exchange.read`` too, hand their sockets over the same way (``keep_connections``) and
never follow redirects.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
import requests
import requests.adapters
import urllib3.exceptions
import urllib3.util.connection

MAX_ANSWER = 64 * 1024  # bytes of a target's answer kept; the rest is never read
STOP_CHECK = 0.25  # seconds: how soon a waiting send notices a stop (SIGTERM)
GRACE = 1.0  # seconds past the deadline the caller waits for an answer being cut
CHUNK = 8192
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

_current: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "alertd_exchange", default=None
)


@dataclass
class Exchange:
    """The limits of one send and what its requests saw (written by the worker, read by
    the caller once the worker ended or was abandoned)."""

    seconds: float
    max_answer: int = MAX_ANSWER
    ends_at: float = field(init=False)
    accepted: int | None = None  # the 2xx status of the last request, if it carried a body
    cut: str | None = None  # why that answer was not read whole
    redirect: str | None = None  # "301 to https://host": the redirect not followed
    sockets: set[socket.socket] = field(default_factory=set)  # answers being read now
    # duplicates of every socket requests connected for this send, until it ends
    connections: list[socket.socket] = field(default_factory=list)
    abandoned: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.ends_at = time.monotonic() + self.seconds

    def connected(self, sock: socket.socket) -> None:
        """requests connected ``sock`` for this send: keep a duplicate, so that an
        abandon can cut it whatever is being read on it (headers, a TLS handshake)."""
        with self._lock:
            duplicate = sock.dup()
            if not self.abandoned:
                self.connections.append(duplicate)
                return
        with contextlib.suppress(OSError):
            duplicate.shutdown(socket.SHUT_RDWR)
        duplicate.close()

    def abandon(self) -> None:
        """The caller stopped waiting: end the reads still going (a thread of apprise's
        executor would otherwise hold the process's exit until its socket timed out)."""
        with self._lock:
            self.abandoned = True
            held, self.connections = self.connections, []
        for sock in [*self.sockets, *held]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for sock in held:
            sock.close()

    def release(self) -> None:
        """The send ended: the duplicates kept for an abandon are closed (not shut down:
        the connections are requests' own)."""
        with self._lock:
            held, self.connections = self.connections, []
        for sock in held:
            sock.close()

    def sending(self) -> None:
        """Another request of the send goes out: what an earlier one was answered no
        longer says whether the target has the message (a login's 2xx is not the
        message's)."""
        self.accepted = None
        self.cut = None

    def answered(self, method: str, status: int, location: str | None) -> None:
        """A request got its status line: remember what it means for the send."""
        self.cut = None
        self.accepted = status if 200 <= status < 300 and method.upper() in BODY_METHODS else None
        if 300 <= status < 400 and location is not None and self.redirect is None:
            self.redirect = f"{status} to {_origin(location)}"
        if self.accepted is not None:
            # The message got through after a request of the plugin's was redirected
            # (a lookup): calling the send a failure would send the message twice.
            self.redirect = None

    def read(self, chunks: Iterable[bytes]) -> bytes:
        """The answer from ``chunks``, stopped at ``max_answer`` bytes or the deadline
        (``cut`` then says which)."""
        kept = bytearray()
        for chunk in chunks:
            kept += chunk
            if len(kept) > self.max_answer:
                self.cut = f"was longer than {self.max_answer // 1024} KiB"
                return bytes(kept[: self.max_answer])
            if time.monotonic() >= self.ends_at:
                self.cut = f"did not end within {self.seconds:g}s"
                return bytes(kept)
        return bytes(kept)

    def redirect_error(self) -> str:
        """The failure a redirect is, for the log and ``alertd status`` (no path: it
        may hold a token)."""
        return (
            f"answered {self.redirect} (a redirect): alertd never follows a delivery's "
            "redirect; put the address it redirects to in the config if you trust it"
        )

    @property
    def is_permanent_redirect(self) -> bool:
        """A 301 or 308: the URL moved for good and retrying it cannot help."""
        return self.redirect is not None and self.redirect.startswith(("301", "308"))


def _origin(location: str) -> str:
    """A redirect's scheme and host, or "another address" when it has none."""
    try:
        parts = urlsplit(location)
        host = parts.hostname
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "another address"
    return f"{parts.scheme}://{host}{port}" if parts.scheme and host else "another address"


def current() -> Exchange | None:
    """The exchange of the send running in this context; None outside a delivery."""
    return _current.get()


@dataclass
class Finished:
    """What the worker ended with: a value, or None while it runs (or if it raised)."""

    value: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def run_bounded(exchange: Exchange, work: Callable[[], Any], stop: threading.Event) -> Finished:
    """Run ``work`` on a worker thread under ``exchange``; return once it ends, its
    deadline (and ``GRACE``) passed, or ``stop`` is set, whichever is first.
    ``done`` is unset in the result when the worker was abandoned."""
    finished = Finished()

    def worker() -> None:
        _current.set(exchange)
        try:
            finished.value = work()
        except BaseException as exc:  # handed to the caller, which turns it into an outcome
            finished.error = exc
        finally:
            exchange.release()
            finished.done.set()

    threading.Thread(target=worker, name="alertd-send", daemon=True).start()
    give_up = exchange.ends_at + GRACE
    while not finished.done.wait(max(0.0, min(STOP_CHECK, give_up - time.monotonic()))):
        if stop.is_set() or time.monotonic() >= give_up:
            exchange.abandon()
            break
    return finished


# -- httpx, as alertd's own Discord and Slack posts use it -------------------------------


class _KeptBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, each handed to ``exchange`` as it connects."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        sock = stream.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            self.exchange.connected(sock)
        return stream

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return self.inner.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def keep_connections(client: httpx.Client, exchange: Exchange) -> httpx.Client:
    """``client`` with every socket it connects (directly or to a proxy from the
    environment) handed to ``exchange``, so that an abandon cuts a target trickling its
    headers. httpx takes no network backend; its pools are the one place to give it one
    (as ``api._bind_sockets`` does)."""
    for transport in (client._transport, *client._mounts.values()):
        if isinstance(transport, httpx.HTTPTransport):
            transport._pool._network_backend = _KeptBackend(exchange)
    return client


# -- requests, as apprise uses it ------------------------------------------------------


def _no_redirect(original: Callable[..., str | None]) -> Callable[..., str | None]:
    def get_redirect_target(self: requests.Session, resp: requests.Response) -> str | None:
        if current() is not None:
            return None  # the 3xx itself is the answer (see ``Exchange.answered``)
        return original(self, resp)

    return get_redirect_target


def _bounded_answer(original: Callable[..., requests.Response]) -> Callable[..., Any]:
    def build_response(
        self: requests.adapters.HTTPAdapter, req: requests.PreparedRequest, resp: Any
    ) -> requests.Response:
        response = original(self, req, resp)
        exchange = current()
        if exchange is None:
            return response
        exchange.answered(
            req.method or "GET", response.status_code, response.headers.get("location")
        )
        sock = _socket_of(resp)
        if isinstance(sock, socket.socket):
            exchange.sockets.add(sock)
        try:
            response._content = exchange.read(_read1(resp, exchange))
        finally:
            if isinstance(sock, socket.socket):
                exchange.sockets.discard(sock)
            response._content_consumed = True
            resp.close()  # what was not read is dropped with its connection
        return response

    return build_response


def _socket_of(resp: Any) -> object:
    """The socket an answer is read from: its connection's, or (once http.client handed
    a closing connection over to the response) the one under the response's file."""
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if sock is None:
        file = getattr(getattr(resp, "_fp", None), "fp", None)
        sock = getattr(getattr(file, "raw", None), "_sock", None)
    return sock


def _read1(resp: Any, exchange: Exchange) -> Iterable[bytes]:
    """urllib3's body, one socket read at a time (``read`` would wait to fill its
    buffer: a trickle of a byte every few seconds would never hand back a chunk). An
    answer that breaks off is cut where it broke."""
    while True:
        try:
            chunk = resp.read1(CHUNK, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            exchange.cut = f"broke off ({type(exc).__name__})"
            return
        if not chunk:
            return
        yield chunk


def _fresh_request(original: Callable[..., requests.Response]) -> Callable[..., Any]:
    def send(
        self: requests.adapters.HTTPAdapter, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        exchange = current()
        if exchange is not None:
            exchange.sending()
        return original(self, request, **kwargs)

    return send


def _kept_connection(original: Callable[..., socket.socket]) -> Callable[..., socket.socket]:
    def create_connection(*args: Any, **kwargs: Any) -> socket.socket:
        sock = original(*args, **kwargs)
        exchange = current()
        if exchange is not None:
            exchange.connected(sock)
        return sock

    return create_connection


def _install() -> None:
    """Wrap requests' two methods and urllib3's ``create_connection`` once (importing
    this module twice does not stack)."""
    session: Any = requests.Session
    adapter: Any = requests.adapters.HTTPAdapter
    if getattr(session, "_alertd_bounded", False):
        return
    session.get_redirect_target = _no_redirect(session.get_redirect_target)
    adapter.build_response = _bounded_answer(adapter.build_response)
    adapter.send = _fresh_request(adapter.send)
    connection: Any = urllib3.util.connection
    connection.create_connection = _kept_connection(connection.create_connection)
    session._alertd_bounded = True


_install()
