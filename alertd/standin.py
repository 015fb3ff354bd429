"""A local stand-in for the OpenTrain public jobs API, faithful where it matters.

It serves ``market.Market`` over real HTTP on 127.0.0.1 with the production API's
behaviour: 120 requests per minute per client IP (429 + ``Retry-After``), cursor
pages up to 100, 400 on bad input, the edge cache (same URL, same body for
``cache_ttl`` seconds, then stale-while-revalidate), closed jobs answering
``404 {"id", "status": "closed"}``, CORS, and faults on demand: 5xx, 429, timeouts,
truncated or non-JSON bodies, slow answers.

Control interface (not rate limited, not cached), for tests and the demo:

    POST /_control/jobs              publish a job (JSON fields override generated ones)
    POST /_control/jobs/{id}         update fields of a job
    POST /_control/jobs/{id}/close   close a job
    POST /_control/faults            {"kind": "status|ratelimit|timeout|truncated|nonjson|slow|
                                              trickle|bomb|badgzip|endless",
                                      "path": "/jobs", "count": 1, "status": 503,
                                      "retry_after": 1, "delay": 2, "size": 100000000}

Hostile faults: ``trickle`` sends the real answer one byte every ``delay`` seconds;
``bomb`` a gzip body that inflates to ``size`` bytes; ``badgzip`` a body marked gzip
that is not; ``endless`` an empty page of jobs whose ``nextCursor`` is always new.
    GET  /_control/requests          every API request served: method, path, status
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from alertd.listen import BoundedServer
from alertd.market import BadRequestError, Market, encode_cursor
from alertd.models import format_time

CACHE_CONTROL = "public, s-maxage=300, stale-while-revalidate=3600"
RATE_LIMIT = 120


FAULT_KINDS = (
    "status",
    "ratelimit",
    "timeout",
    "truncated",
    "nonjson",
    "slow",
    "trickle",
    "bomb",
    "badgzip",
    "endless",
)


@dataclass
class Fault:
    """A misbehaviour to show the next ``count`` requests whose path starts with ``path``."""

    kind: str
    path: str = "/jobs"
    count: int = 1
    status: int = 503
    retry_after: str | None = "1"
    delay: float = 2.0
    size: int = 100_000_000

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            kinds = ", ".join(FAULT_KINDS)
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {kinds}")


@dataclass
class ServedRequest:
    """One API request as the stand-in saw it."""

    method: str
    path: str
    status: int
    at: float
    client: str


@dataclass
class _Cached:
    stored: float
    status: int
    body: bytes


@dataclass
class EdgeState:
    """Rate windows, the edge cache and pending faults, shared by every handler thread."""

    rate_limit: int = RATE_LIMIT
    cache_ttl: float = 300.0
    stale_ttl: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    lock: threading.Lock = field(default_factory=threading.Lock)
    windows: dict[str, collections.deque[float]] = field(default_factory=dict)
    cache: dict[str, _Cached] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    served: list[ServedRequest] = field(default_factory=list)

    def over_limit(self, client: str) -> float | None:
        """Seconds until ``client`` may ask again, or None (and the request is counted)."""
        now = self.clock()
        with self.lock:
            window = self.windows.setdefault(client, collections.deque())
            while window and now - window[0] >= 60.0:
                window.popleft()
            if len(window) >= self.rate_limit:
                return window[0] + 60.0 - now
            window.append(now)
            return None

    def take_fault(self, path: str) -> Fault | None:
        """The first pending fault for ``path``, used up by one."""
        with self.lock:
            for fault in self.faults:
                if path.startswith(fault.path) and fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    server: StandInServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read served
        pass

    # -- plumbing -------------------------------------------------------------

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", CACHE_CONTROL)
        self.send_header("Access-Control-Allow-Origin", "*")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), extra)

    def _error(
        self, status: int, code: str, message: str, extra: dict[str, str] | None = None
    ) -> None:
        self._json(status, {"error": {"code": code, "message": message}}, extra)

    def _record(self, status: int) -> None:
        """Log an API request before answering it, so a client never sees an unrecorded answer."""
        if self.path.startswith("/_control/"):
            return
        edge = self.server.edge
        with edge.lock:
            edge.served.append(
                ServedRequest(self.command, self.path, status, edge.clock(), self.client_address[0])
            )

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        data = json.loads(self.rfile.read(length))
        return data if isinstance(data, dict) else {}

    # -- verbs ----------------------------------------------------------------

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith("/_control/"):
            self._error(405, "METHOD_NOT_ALLOWED", "the public API is read-only")
            return
        try:
            self._control_post(path.removeprefix("/_control/").strip("/").split("/"), self._body())
        except (KeyError, ValueError, TypeError) as exc:
            self._error(400, "BAD_REQUEST", f"control: {exc}")

    def _control_post(self, parts: list[str], body: dict[str, Any]) -> None:
        market = self.server.market
        if parts == ["jobs"]:
            self._json(201, market.add_job(**body))
        elif len(parts) == 2 and parts[0] == "jobs":
            self._json(200, market.update_job(unquote(parts[1]), **body))
        elif len(parts) == 3 and parts[0] == "jobs" and parts[2] == "close":
            market.close_job(unquote(parts[1]))
            self._json(200, {"id": parts[1], "status": "closed"})
        elif parts == ["faults"]:
            self.server.add_fault(Fault(**body))
            self._json(201, body)
        else:
            self._error(404, "NOT_FOUND", "unknown control path")

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        if split.path == "/_control/requests":
            served = [r.__dict__ for r in self.server.requests()]
            self._json(200, {"requests": served})
            return
        self._serve_api(split.path)

    def _serve_api(self, path: str) -> int:
        edge = self.server.edge
        wait = edge.over_limit(self.client_address[0])
        if wait is not None:
            self._error(
                429,
                "RATE_LIMITED",
                "120 requests per minute",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
            return 429
        fault = edge.take_fault(self.path)
        if fault is not None:
            handled = self._fault(fault)
            if handled:
                return handled
        cached = self._cached(self.path)
        if cached is not None:
            self._send(cached.status, cached.body, {"Age": str(int(edge.clock() - cached.stored))})
            return cached.status
        status, body = self._answer(path)
        if status == 200:
            with edge.lock:
                edge.cache[self.path] = _Cached(edge.clock(), status, body)
        self._send(status, body)
        return status

    def _cached(self, key: str) -> _Cached | None:
        edge = self.server.edge
        with edge.lock:
            entry = edge.cache.get(key)
            if entry is None or edge.cache_ttl <= 0:
                return None
            age = edge.clock() - entry.stored
            if age < edge.cache_ttl:
                return entry
            if age < edge.cache_ttl + edge.stale_ttl:
                del edge.cache[key]  # served stale once; the next request revalidates
                return entry
            del edge.cache[key]
            return None

    def _answer(self, path: str) -> tuple[int, bytes]:
        market = self.server.market
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        try:
            if path == "/jobs":
                return 200, json.dumps(market.search(query)).encode()
            if path == "/jobs/facets":
                return 200, json.dumps(market.facets()).encode()
            if path == "/jobs/changes":
                return 200, json.dumps(market.changes(query.get("since"))).encode()
            if path.startswith("/jobs/"):
                status, body = market.get(unquote(path.removeprefix("/jobs/")))
                return status, json.dumps(body).encode()
        except BadRequestError as exc:
            return 400, json.dumps({"error": {"code": "BAD_REQUEST", "message": str(exc)}}).encode()
        return 404, json.dumps(
            {"error": {"code": "NOT_FOUND", "message": "no such endpoint"}}
        ).encode()

    def _fault(self, fault: Fault) -> int:
        """Misbehave as ``fault`` says; 0 when the request should then be answered normally."""
        if fault.kind == "status":
            self._error(
                fault.status, "INTERNAL" if fault.status >= 500 else "BAD_REQUEST", "injected fault"
            )
            return fault.status
        if fault.kind == "ratelimit":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._error(429, "RATE_LIMITED", "injected rate limit", extra)
            return 429
        if fault.kind == "nonjson":
            self._record(200)
            self.send_response(200)
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return 200
        if fault.kind == "truncated":
            status, body = self._answer(urlsplit(self.path).path)
            self._record(status)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.close_connection = True
            return status
        if fault.kind == "timeout":
            self._record(599)
            self.server.stopping.wait(fault.delay)
            self.close_connection = True
            return 599  # recorded as "closed without an answer"
        if fault.kind == "slow":
            self.server.stopping.wait(fault.delay)
            return 0
        return self._hostile(fault)

    def _hostile(self, fault: Fault) -> int:
        """The faults of a server that means harm (or is very broken)."""
        if fault.kind == "endless":
            page = {"jobs": [], "nextCursor": encode_cursor(next(self.server.cursors))}
            self._json(200, {**page, "generatedAt": format_time(datetime.now(UTC))})
            return 200
        if fault.kind == "trickle":
            status, body = self._answer(urlsplit(self.path).path)
            self._head(status, len(body))
            with contextlib.suppress(OSError):  # the client gave up waiting: fine
                for byte in body:
                    if self.server.stopping.wait(fault.delay):
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            self.close_connection = True
            return status
        if fault.kind in ("bomb", "badgzip"):
            body = gzip_zeros(fault.size) if fault.kind == "bomb" else b"\x1f\x8bnot gzip at all"
            self._head(200, len(body), {"Content-Encoding": "gzip"})
            self.wfile.write(body)
            return 200
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _head(self, status: int, length: int, extra: dict[str, str] | None = None) -> None:
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()


def gzip_zeros(size: int) -> bytes:
    """A gzip stream of ``size`` zero bytes: small to send, huge to inflate."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(size // len(chunk))]
    parts.append(packer.compress(bytes(size % len(chunk))))
    parts.append(packer.flush())
    return b"".join(parts)


class StandInServer(BoundedServer, HTTPServer):
    """The stand-in API on ``host:port`` (port 0 picks a free one), served from a thread.

    Within ``BoundedServer``'s limits, roomier than the metrics port's: alertd keeps its
    connection to the API open between requests (no whole-connection deadline), and a
    test may run several clients at once."""

    allow_reuse_address = True
    max_connections = 64
    idle_timeout = 60.0
    connection_deadline = None

    def __init__(
        self,
        market: Market | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cache_ttl: float = 300.0,
        rate_limit: int = RATE_LIMIT,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.market = market or Market()
        self.edge = EdgeState(rate_limit=rate_limit, cache_ttl=cache_ttl)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.cursors = itertools.count(10**9)  # for the 'endless' fault
        self.errors: list[str] = []  # what broke a request; socketserver would print it

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Record what broke a request (a client that hung up mid-answer, say), quietly."""
        self.errors.append(f"{client_address}: {sys.exc_info()[1]!r}")

    @property
    def url(self) -> str:
        """The base URL to give alertd as ``api_url``."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StandInServer:
        """Serve in a background thread; returns self."""
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="standin", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.stopping.set()
        self.shutdown()
        self.server_close()

    def add_fault(self, fault: Fault) -> None:
        """Queue a misbehaviour for the next matching requests."""
        with self.edge.lock:
            self.edge.faults.append(fault)

    def requests(self, path: str = "") -> list[ServedRequest]:
        """API requests served so far, optionally only those under ``path``."""
        with self.edge.lock:
            return [r for r in self.edge.served if r.path.startswith(path)]
