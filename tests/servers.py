"""Real local servers that stand in for chat services and a mail server, on 127.0.0.1 only.

- ``TLSInterceptProxy``: an HTTPS proxy that never forwards anything. It accepts
  ``CONNECT host:443`` for a few known service hosts, terminates TLS itself with a
  certificate from a throwaway CA, records every HTTP request it reads inside the
  tunnel and answers as the service would (or as a broken service would).
- ``SMTPCollector``: an aiosmtpd server that keeps every message it receives.

Clients reach the proxy through ``HTTPS_PROXY`` and trust its CA through
``REQUESTS_CA_BUNDLE``; nothing ever leaves the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email
import email.policy
import json
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
from aiosmtpd.controller import Controller

SLACK_HOST = "hooks.slack.com"
DISCORD_HOST = "discord.com"
TELEGRAM_HOST = "api.telegram.org"
SERVICE_HOSTS = (SLACK_HOST, DISCORD_HOST, TELEGRAM_HOST)
IO_TIMEOUT = 5.0  # seconds a tunnel may sit idle before the proxy drops it


@dataclass(frozen=True)
class Reply:
    """What the proxy answers inside a tunnel: status, body and extra headers."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, payload: Any) -> Reply:
        """A JSON reply."""
        return cls(status, json.dumps(payload).encode(), (("Content-Type", "application/json"),))

    @classmethod
    def text(cls, status: int, text: str) -> Reply:
        """A plain-text reply."""
        return cls(status, text.encode(), (("Content-Type", "text/plain; charset=utf-8"),))


def telegram_ok() -> Reply:
    """What Bot API ``sendMessage`` answers on success: ``ok`` true and the sent Message."""
    return Reply.json(
        200,
        {
            "ok": True,
            "result": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": {"id": 987654321, "type": "private"},
                "text": "(stand-in)",
            },
        },
    )


def default_replies() -> dict[str, Reply]:
    """Each service's answer to an accepted message (what apprise checks for success).

    Slack incoming webhooks answer ``200 ok``; Discord webhooks ``204 No Content``;
    Telegram ``200 {"ok": true, "result": {...}}``.
    """
    return {
        SLACK_HOST: Reply.text(200, "ok"),
        DISCORD_HOST: Reply(204),
        TELEGRAM_HOST: telegram_ok(),
    }


def down_reply(host: str, status: int) -> Reply:
    """What a failing service answers, in its own style."""
    if host == TELEGRAM_HOST:
        return Reply.json(
            status, {"ok": False, "error_code": status, "description": "Internal Server Error"}
        )
    if host == DISCORD_HOST:
        return Reply.json(status, {"message": "Internal Server Error", "code": 0})
    return Reply.text(status, "internal_error")


@dataclass(frozen=True)
class CapturedRequest:
    """One HTTP request read inside a tunnel, and the status the proxy answered it with."""

    host: str
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int
    json: Any = field(default=None, compare=False)

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")


ReplyRule = Reply | Callable[[CapturedRequest], Reply]


class _Tunnel:
    """What the inner handler needs: the proxy and the host the client CONNECTed to."""

    def __init__(self, proxy: TLSInterceptProxy, host: str) -> None:
        self.proxy = proxy
        self.host = host


class _ServiceHandler(BaseHTTPRequestHandler):
    """Reads HTTP/1.1 requests from the decrypted tunnel and answers as the service."""

    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT
    server: _Tunnel  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:  # tests read the records instead
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        tunnel = self.server
        draft = CapturedRequest(
            host=tunnel.host,
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers=dict(self.headers.items()),
            body=body,
            status=0,
            json=parsed,
        )
        reply = tunnel.proxy.reply_for(draft)
        tunnel.proxy.record(dataclasses.replace(draft, status=reply.status))
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.status not in (204, 304):
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.body and reply.status not in (204, 304) and self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class _ProxyHandler(BaseHTTPRequestHandler):
    """The outer, plain-HTTP side: only ``CONNECT`` to a known host on 443 is accepted."""

    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        proxy = self.server.proxy
        host, _, port = self.path.rpartition(":")
        self.close_connection = True
        if port != "443" or host not in proxy.hosts:
            proxy.refuse(self.path)
            self.send_error(403, "this test proxy only intercepts known service hosts")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = proxy.server_context.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            proxy.fail(f"TLS handshake for {host} failed: {exc}")
            return
        proxy.track(tls)
        try:
            _ServiceHandler(tls, self.client_address, _Tunnel(proxy, host))  # type: ignore[arg-type]
        except (ssl.SSLError, OSError) as exc:
            proxy.fail(f"tunnel to {host} broke: {exc}")
        finally:
            proxy.untrack(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def _refuse_plain(self) -> None:
        self.server.proxy.refuse(f"{self.command} {self.path}")
        self.send_error(405, "this test proxy only speaks CONNECT")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _refuse_plain


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, proxy: TLSInterceptProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Record what broke a connection in ``proxy.unhandled``, instead of printing it."""
        self.proxy.note_unhandled(f"{client_address}: {sys.exc_info()[1]!r}")


class TLSInterceptProxy:
    """An HTTPS proxy on 127.0.0.1 that *is* Slack, Discord and Telegram for a test.

    It answers ``CONNECT host:443`` with 200, then does the TLS handshake itself with a
    certificate for the service hosts issued by a throwaway ``trustme`` CA, reads the
    HTTP requests inside the tunnel, records each as a ``CapturedRequest`` and answers
    with the host's configured ``Reply``. Nothing is ever forwarded anywhere; a
    ``CONNECT`` to any other host is refused (403) and listed in ``refused``.

    Use ``set_reply`` for a custom answer (a ``Reply`` or a function of the request),
    ``down(host)`` to make a host fail with 500 and ``up(host)`` to restore it.
    """

    def __init__(self, hosts: Iterable[str] = SERVICE_HOSTS) -> None:
        self.hosts = tuple(hosts)
        self.ca = trustme.CA()
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*self.hosts).configure_cert(self.server_context)
        self._lock = threading.Lock()
        self._replies: dict[str, ReplyRule] = dict(default_replies())
        self._down: dict[str, int] = {}
        self._requests: list[CapturedRequest] = []
        self._open: set[socket.socket] = set()
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.unhandled: list[str] = []  # what broke a connection; socketserver would print it
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> TLSInterceptProxy:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        self._server = _ProxyServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="tls-intercept-proxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open tunnel."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> TLSInterceptProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The value for ``HTTPS_PROXY``."""
        return f"http://127.0.0.1:{self.port}"

    def write_ca(self, path: Path) -> Path:
        """Write the CA certificate (PEM) that clients must trust; returns ``path``."""
        self.ca.cert_pem.write_to_path(str(path))
        return path

    # -- behaviour -----------------------------------------------------------

    def set_reply(self, host: str, reply: ReplyRule) -> None:
        """Answer every request to ``host`` with ``reply`` (or ``reply(request)``)."""
        with self._lock:
            self._replies[host] = reply

    def down(self, host: str, status: int = 500) -> None:
        """Make ``host`` fail every request with ``status`` until ``up(host)``."""
        with self._lock:
            self._down[host] = status

    def up(self, host: str) -> None:
        """``host`` answers normally again."""
        with self._lock:
            self._down.pop(host, None)

    def reply_for(self, request: CapturedRequest) -> Reply:
        with self._lock:
            status = self._down.get(request.host)
            rule = self._replies.get(request.host)
        if status is not None:
            return down_reply(request.host, status)
        if rule is None:
            return Reply.text(404, "no reply configured")
        return rule(request) if callable(rule) else rule

    # -- records ---------------------------------------------------------------

    def record(self, request: CapturedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def refuse(self, what: str) -> None:
        with self._lock:
            self.refused.append(what)

    def fail(self, what: str) -> None:
        with self._lock:
            self.errors.append(what)

    def note_unhandled(self, what: str) -> None:
        with self._lock:
            self.unhandled.append(what)

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def requests(self, host: str | None = None) -> list[CapturedRequest]:
        """Every request read so far (to ``host`` only, if given), oldest first."""
        with self._lock:
            return [r for r in self._requests if host is None or r.host == host]

    def accepted(self, host: str | None = None) -> list[CapturedRequest]:
        """The requests answered with a 2xx status: the messages the service took."""
        return [r for r in self.requests(host) if 200 <= r.status < 300]

    def clear(self) -> None:
        """Forget what was recorded so far."""
        with self._lock:
            self._requests.clear()
            self.refused.clear()
            self.errors.clear()


# -- SMTP ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the SMTP server received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage

    def text_parts(self) -> list[str]:
        """The decoded text of every ``text/*`` part (plain and HTML alike)."""
        return [
            part.get_content()
            for part in self.message.walk()
            if part.get_content_maintype() == "text"
        ]


class _Collect:
    """aiosmtpd handler that keeps every message."""

    def __init__(self, sink: SMTPCollector) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.sink.add(
            ReceivedMail(
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                message=message,  # type: ignore[arg-type]
            )
        )
        return "250 Message accepted for delivery"


class _EphemeralController(Controller):
    """A Controller that binds port 0 and learns the real port before it self-tests."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


EphemeralController = _EphemeralController  # for a test's own aiosmtpd handler


class SMTPCollector:
    """A plain (no TLS, no AUTH) SMTP server on 127.0.0.1 that collects what it receives.

    Built on aiosmtpd's threaded ``Controller``; the port is chosen by the OS when it
    starts (no race for a "free" port). ``messages`` lists ``ReceivedMail`` in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self.controller = _EphemeralController(
            _Collect(self), hostname="127.0.0.1", port=0, ready_timeout=5.0
        )
        self._running = False

    def start(self) -> SMTPCollector:
        """Start serving in aiosmtpd's daemon thread; returns once it answers."""
        self.controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        """Stop the server (safe to call twice)."""
        if self._running:
            self._running = False
            self.controller.stop()

    def __enter__(self) -> SMTPCollector:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def add(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._messages.append(mail)

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    def mailto(self, to: str = "annotator@example.com", sender: str = "alertd@example.com") -> str:
        """An apprise URL for this server: plain SMTP (``mailto://``), no login."""
        return f"mailto://{self.host}:{self.port}?to={to}&from={sender}"
