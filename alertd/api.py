"""The OpenTrain public jobs API client, over one ``httpx.Client``.

It owns three promises: never more requests than the budget allows (all endpoints
together, 429 + ``Retry-After`` honoured), every page of a search followed to the
end, and no httpx exception past this module.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpcore
import httpx

from alertd import __version__, budget
from alertd.errors import (
    ApiDataError,
    ApiError,
    ApiUnavailableError,
    ConfigError,
    StopRequestedError,
)
from alertd.models import MAX_JOB_ID, Job, format_time, parse_job, parse_time

log = logging.getLogger(__name__)

API_MAX_PER_MINUTE = 120
PAGE_SIZE = 100
MAX_PAGES = 100  # 10,000 jobs a query: past the marketplace's size; a cursor that never ends
MAX_RETRY_AFTER = 900.0  # a Retry-After honoured up to 15 minutes; a longer one is this cap
REQUEST_DEADLINE = 30.0  # seconds for one whole request, headers and body
MAX_BODY = 10_000_000  # bytes of one decoded (decompressed) answer
RETRY_DELAYS: tuple[float, ...] = (2.0, 5.0, 15.0)
MAX_RATE_LIMITED_WAIT = 120.0  # a longer Retry-After fails this search for this cycle instead
MAX_RATE_LIMITED_TRIES = 6
CHANGES_CAP = 5000  # events per answer of GET /jobs/changes
MAX_CHANGE_CALLS = 10
CLOSED_CODE = "CLOSED"  # our name for GET /jobs/{id}'s 404 {"id", "status": "closed"}
# Our codes for failures that are not tried again in the same cycle (ApiError.code):
UNREACHABLE_CODE = "UNREACHABLE"  # no connection at all: the cycle asks nothing more
LIMIT_CODE = "LIMIT"  # the whole deadline or the size limit spent: this query, next cycle
MAX_LIMIT_BACKOFF = 3600.0  # seconds: the longest a query that keeps failing so is left alone
STOP_CHECK = 1.0  # seconds: how soon a request in flight notices a stop (SIGTERM)

T = TypeVar("T")


class RateBudget:
    """At most ``per_minute`` requests in any 60-second window as the server counts them.

    The server counts a request when it arrives, somewhere between our send and the
    end of its answer. So a request's slot is stamped when its answer (or failure)
    came back, and a request goes out only when the one ``per_minute`` places before
    it ended at least 60 s (plus ``margin`` for clocks running at different rates)
    ago: then any ``per_minute + 1`` arrivals span more than 60 s. A request still
    in flight holds its slot. ``Retry-After`` holds come on top.

    The slots are counted in ``window``: this process's own (the default), or the one
    every alertd process using a state directory shares (``budget.open_window``), so
    that the limit is the host's, as the API counts it (per IP).

    Waiting happens on ``stop`` (a ``threading.Event``), so a signal ends a wait at once.
    """

    WINDOW = budget.WINDOW

    def __init__(
        self,
        per_minute: int,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
        margin: float = budget.MARGIN,
        window: budget.Window | None = None,
    ) -> None:
        self.per_minute = per_minute
        self.stop = stop or threading.Event()
        self.clock = clock
        self.wait = wait or self.stop.wait
        self.margin = margin
        self.window = window or budget.LocalWindow(clock)
        self.requests = 0

    def pause(self, seconds: float) -> None:
        """Wait, unless a stop is requested first."""
        if seconds > 0 and self.wait(seconds):
            raise StopRequestedError("stop requested while waiting")
        if self.stop.is_set():
            raise StopRequestedError("stop requested")

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the server asked us to slow down)."""
        self.window.hold(seconds)

    def acquire(self) -> None:
        """Block until a request fits in the budget, then count it as in flight."""
        while True:
            self.pause(0)  # before the slot is taken: a stop never leaves one in flight
            wait, held = self.window.take(self.per_minute, self.WINDOW + self.margin)
            if wait <= 0:
                break
            if held > MAX_RATE_LIMITED_WAIT:
                raise ApiUnavailableError(
                    f"rate limited by the API for another {held:.0f}s", code="RATE_LIMITED"
                )
            self.pause(wait)
        self.requests += 1

    def release(self) -> None:
        """The request ``acquire`` let out has its answer (or failed): stamp its slot now."""
        self.window.give_back()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """One request's slot: acquired before the send, stamped when the answer ends."""
        self.acquire()
        try:
            yield
        finally:
            self.release()


@dataclass
class ChangeFeed:
    """What ``GET /jobs/changes`` said: job id → (latest event type, when), and ``until``."""

    until: datetime
    events: dict[str, tuple[str, datetime | None]] = field(default_factory=dict)
    capped: bool = False
    gap: bool = False  # more than a capped answer's worth of events at one instant: some unseen


@dataclass
class SearchResult:
    """Every page of one search: the jobs that parsed, and how many were skipped."""

    jobs: list[Job] = field(default_factory=list)
    skipped: int = 0
    pages: int = 0
    generated_at: datetime | None = None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None  # "1e999", "nan": not a wait anyone meant; the normal back-off applies
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


class _BodyError(Exception):
    """The answer could not be read: cut short, junk after its end, an unknown encoding."""


class _LimitError(_BodyError):
    """The answer broke a limit while it was being read: too slow, or too large."""


class _Deadline(httpcore.NetworkBackend):
    """httpcore's sockets, each read and write waiting at most what is left of the whole
    request's deadline: httpx's timeouts are per read, so a server sending its headers a
    byte at a time could otherwise hold a request for days.

    A connect or a read also waits in slices of ``STOP_CHECK`` seconds and raises
    ``StopRequestedError`` between them once ``stop`` is set: a SIGTERM ends a request in
    flight within a second, not when its deadline runs out. (A write is not sliced, as
    the bytes a timed-out send already passed on are not known; a GET's few hundred
    bytes fit the socket's buffer, so a write does not wait on the server.)
    """

    def __init__(self, stop: threading.Event) -> None:
        self.inner = httpcore.SyncBackend()
        self.stop = stop
        self.local = threading.local()  # this thread's request: when it must have ended

    def set(self, ends_at: float | None) -> None:
        """The monotonic instant the current request must end by (None: no deadline)."""
        self.local.ends_at = ends_at

    def cap(self, timeout: float | None) -> float | None:
        """``timeout``, shortened to what is left; ReadTimeout once nothing is (or a stop
        was requested: StopRequestedError)."""
        if self.stop.is_set():
            raise StopRequestedError("stop requested during a request")
        ends_at: float | None = getattr(self.local, "ends_at", None)
        if ends_at is None:
            return timeout
        left = ends_at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the whole request took longer than its deadline")
        return left if timeout is None else min(timeout, left)

    def sliced(self, call: Callable[[float], T], timeout: float | None) -> T:
        """``call(seconds)`` waiting at most ``STOP_CHECK`` at a time, again after each
        timeout until ``timeout`` (or the deadline) is spent or a stop is requested."""
        ends = None if timeout is None else time.monotonic() + timeout
        while True:
            left = self.cap(None if ends is None else ends - time.monotonic())
            if left is not None and left <= 0:
                raise httpcore.ReadTimeout("timed out")
            try:
                return call(STOP_CHECK if left is None else min(left, STOP_CHECK))
            except httpcore.TimeoutException:
                if left is not None and left <= STOP_CHECK:
                    raise

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self.sliced(
            lambda step: self.inner.connect_tcp(host, port, step, local_address, socket_options),
            timeout,
        )
        return _DeadlineStream(stream, self)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_unix_socket(path, self.cap(timeout), socket_options)
        return _DeadlineStream(stream, self)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    """One connection whose every read and write the deadline caps (and a stop ends)."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self.inner = inner
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.deadline.sliced(lambda step: self.inner.read(max_bytes, step), timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.deadline.cap(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self.inner.start_tls(ssl_context, server_hostname, self.deadline.cap(timeout))
        return _DeadlineStream(tls, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


def _bind_sockets(client: httpx.Client, backend: _Deadline) -> httpx.Client:
    """``client`` with every connection pool it built opening its sockets through
    ``backend``: the direct one and one per proxy httpx read from the environment
    (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), so a proxied request
    keeps the whole deadline and stops within a second too. httpx takes no network
    backend, and a transport of our own would turn its environment proxies off; its
    pools are the one place to give it ours."""
    for transport in (client._transport, *client._mounts.values()):
        if isinstance(transport, httpx.HTTPTransport):
            transport._pool._network_backend = backend
    return client


def _inflater(encoding: str, first: bytes) -> Any:
    """A zlib decompressor for a gzip or deflate body (``first`` is its first bytes);
    None for an uncompressed one."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "deflate":  # zlib-wrapped as the RFC says, or raw as some servers send it
        wrapped = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    raise _BodyError(f"the answer is compressed as {encoding!r}, which alertd does not accept")


class Failure(enum.Enum):
    """What a failed request means for what comes next."""

    RETRY = "retry"  # a 5xx, a reset, a bad body: tried again soon, in this cycle
    LATER = "later"  # ran its whole deadline or size limit: this query waits for the next cycle
    UNREACHABLE = "unreachable"  # no connection at all: the cycle asks nothing more
    FATAL = "fatal"  # retrying cannot help (a URL httpx refuses)


# Every failure a request can have becomes a sentence here, in one place, by class (most
# specific first). Not reaching the API (refused, no route, no such name, the proxy said
# no) is not retried at once: nothing else in the cycle will reach it either. Anything
# not listed is a bug of ours, and is raised as one.
_HTTPX_ERRORS: tuple[tuple[type[Exception], str, Failure], ...] = (
    (httpx.ConnectTimeout, "could not connect in time", Failure.UNREACHABLE),
    (httpx.ConnectError, "could not connect", Failure.UNREACHABLE),
    (httpx.ProxyError, "the proxy would not connect us", Failure.UNREACHABLE),
    (httpx.TimeoutException, "timed out", Failure.RETRY),
    (httpx.DecodingError, "the body could not be decoded (corrupt compression?)", Failure.RETRY),
    (httpx.TooManyRedirects, "too many redirects", Failure.RETRY),
    (httpx.TransportError, "connection failed", Failure.RETRY),
    (httpx.StreamError, "the answer stream broke", Failure.RETRY),
    (httpx.HTTPError, "the request failed", Failure.RETRY),
    (httpx.InvalidURL, "the URL is not valid (check api_url)", Failure.FATAL),
    (OSError, "connection failed", Failure.RETRY),  # a socket or TLS error httpx left as it was
)
REQUEST_ERRORS = tuple(kind for kind, _text, _failure in _HTTPX_ERRORS)


def describe_httpx_error(exc: Exception) -> tuple[str, Failure]:
    """(what went wrong, what it means) for a failure ``REQUEST_ERRORS`` lists."""
    for kind, text, failure in _HTTPX_ERRORS:
        if isinstance(exc, kind):
            return f"{text} ({type(exc).__name__}: {exc})", failure
    return f"{type(exc).__name__}: {exc}", Failure.RETRY


def _error_code(body: object) -> str | None:
    if isinstance(body, dict):
        if body.get("status") == "closed" and "error" not in body:
            return CLOSED_CODE
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            return str(error["code"])
        if isinstance(body.get("code"), str):
            return str(body["code"])
    return None


class LimitBackoff:
    """Queries whose answers ran their whole deadline or size limit, left alone a while.

    The first such failure costs one try and the next cycle asks again; each further one
    in a row doubles the pause, from ``base`` (a poll interval: one cycle skipped) up to
    ``MAX_LIMIT_BACKOFF``. An answer ends it. Kept in memory: the daemon's client lives
    as long as the daemon; a new process (``alertd once``) starts over at one try.
    """

    def __init__(self, base: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.clock = clock
        self.failing: dict[str, tuple[int, float]] = {}  # key → (failures in a row, until)

    def check(self, key: str) -> None:
        """Raise (``LIMIT_CODE``) while ``key`` is left alone; a request may go otherwise."""
        failures, until = self.failing.get(key, (0, 0.0))
        left = until - self.clock()
        if left > 0:
            raise ApiUnavailableError(
                f"jobs: not asked for another {left:.0f}s: its last {failures} answers "
                "ran past the deadline or the size limit",
                code=LIMIT_CODE,
            )

    def failed(self, key: str) -> None:
        """One more answer of ``key`` spent its deadline or size limit."""
        failures = self.failing.get(key, (0, 0.0))[0] + 1
        pause = min(self.base * (2 ** min(failures - 1, 30) - 1), MAX_LIMIT_BACKOFF)
        self.failing[key] = (failures, self.clock() + pause)

    def answered(self, key: str) -> None:
        """``key`` was answered whole: it is asked as usual again."""
        self.failing.pop(key, None)


class OpenTrainClient:
    """Talks to one OpenTrain API base URL within one request budget."""

    def __init__(
        self,
        base_url: str,
        *,
        requests_per_minute: int = 60,
        api_limit: int = API_MAX_PER_MINUTE,
        deadline: float = REQUEST_DEADLINE,
        max_body: int = MAX_BODY,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
        limit_backoff: float = 60.0,
        window: budget.Window | None = None,
    ) -> None:
        # ``api_limit`` is the server's own limit: the public API's, unless a local stand-in
        # is set up with another one (benchmarks and tests of many requests). ``window``:
        # where the budget counts (this client's own unless given; ``budget.open_window``).
        per_minute = min(requests_per_minute, api_limit)
        self.budget = RateBudget(per_minute, stop=stop, window=window)
        self.retry_delays = tuple(retry_delays)
        self.deadline = deadline
        self.max_body = max_body
        self.deadline_backend = _Deadline(self.budget.stop)
        try:
            client = httpx.Client(
                base_url=base_url.rstrip("/") + "/",
                timeout=deadline,  # no one phase (connect, a read) outlasts the whole deadline
                headers={
                    "User-Agent": f"alertd/{__version__}",
                    "Accept": "application/json",
                    "Accept-Encoding": "gzip",  # what _read_body inflates itself
                },
                transport=transport,  # None: httpx's own, with the environment's proxies
            )
        except (ImportError, ValueError) as exc:  # a proxy httpx cannot use (socks5://, ftp://)
            raise ConfigError(
                f"{' '.join(str(exc).split()).rstrip('.')}; the API cannot be reached "
                "through it: fix or unset it",
                source="environment",
                field="HTTP_PROXY/HTTPS_PROXY/ALL_PROXY",
            ) from exc
        self.http = (
            client if transport is not None else _bind_sockets(client, self.deadline_backend)
        )
        # Told (endpoint, HTTP status or error kind) after each request: metrics.py's hook.
        self.on_request: Callable[[str, str], None] | None = None
        self.status: int | None = None  # of the last answer whose headers arrived
        # The request (by number) that last found the API unreachable; None once one got
        # an answer since: the cycle that sent it asks nothing more (``Cycle.can_ask``).
        self.unreachable_at: int | None = None
        self.limits = LimitBackoff(limit_backoff)
        # Monotonic instant after which no retry starts (a cycle's ask window): the
        # failed query is tried again by the next cycle, not at the cost of this one's.
        self.retry_until: float | None = None
        # Each job listed so far (until ``forget_listings``), by id: the record as sent and
        # what it parsed to. A job most searches want is listed by two or three of a busy
        # cycle's queries; an identical record is not parsed (nor its warnings logged) again.
        self.listed: dict[str, tuple[dict[str, Any], Job]] = {}

    def close(self) -> None:
        """Release the connection pool."""
        self.http.close()

    def forget_listings(self) -> None:
        """Drop the jobs remembered from the lists read (``run_once`` at a cycle's end):
        a long-lived client holds none of them between cycles."""
        self.listed.clear()

    def __enter__(self) -> OpenTrainClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def requests_sent(self) -> int:
        """How many requests this client has sent (for the per-cycle log line)."""
        return self.budget.requests

    def get_json(
        self, path: str, params: dict[str, str] | None = None, *, endpoint: str | None = None
    ) -> dict[str, Any]:
        """GET ``path`` and return its JSON object, retrying what retrying can fix.

        ``endpoint`` names ``path`` for ``on_request`` without what varies (``jobs/{id}``).

        5xx, resets and unparseable bodies back off along ``retry_delays``; a 429 waits
        for ``Retry-After`` (up to ``MAX_RATE_LIMITED_TRIES`` times). 4xx raise at once,
        and so do a request that spent its whole deadline or size limit (``LIMIT_CODE``:
        the next cycle tries again) and one that could not connect (``UNREACHABLE_CODE``).
        """
        failures = limited = 0
        while True:
            with self.budget.slot():
                outcome, retry_after = self._attempt_told(endpoint or path, path, params)
            if isinstance(outcome, dict):
                return outcome
            if retry_after is not None:
                limited += 1
                if limited >= MAX_RATE_LIMITED_TRIES:
                    raise ApiUnavailableError(f"{path}: still rate limited after {limited} tries")
                log.info("API rate limited us on /%s; waiting %.0fs", path, retry_after)
                self.budget.hold(retry_after)
                continue
            late = self.is_too_late_to_retry(failures)
            if failures >= len(self.retry_delays) or late:
                tries = f" (gave up after {failures + 1} tries)" if failures else ""
                later = "; the cycle's time is up, the next one tries again" if late else ""
                raise ApiUnavailableError(f"{path}: {outcome}{tries}{later}")
            delay = self.retry_delays[failures]
            failures += 1
            log.debug("API /%s: %s; retrying in %.1fs", path, outcome, delay)
            self.budget.pause(delay)

    def is_too_late_to_retry(self, failures: int) -> bool:
        """Whether the next retry would start past ``retry_until``."""
        if self.retry_until is None or failures >= len(self.retry_delays):
            return False
        return time.monotonic() + self.retry_delays[failures] > self.retry_until

    def _attempt_told(
        self, endpoint: str, path: str, params: dict[str, str] | None
    ) -> tuple[dict[str, Any] | str, float | None]:
        """``_attempt``, its outcome told to ``on_request``: the HTTP status when the answer
        was whole, else ``bad_body``, ``unreachable`` (no answer) or ``error`` (a refusal
        without a status, or a bug of ours). A stop is no outcome."""
        self.status = None
        kind: str | None = "unreachable"
        try:
            outcome, retry_after = self._attempt(path, params)
            if self.status is not None:
                whole = isinstance(outcome, dict) or self.status >= 400
                kind = str(self.status) if whole else "bad_body"
            return outcome, retry_after
        except StopRequestedError:
            kind = None
            raise
        except ApiError as exc:
            if exc.code in (LIMIT_CODE, UNREACHABLE_CODE):
                kind = "unreachable" if self.status is None else "bad_body"
            else:
                kind = "error" if exc.status is None else str(exc.status)
            raise
        except Exception:
            kind = "error"
            raise
        finally:
            if self.status is not None:
                self.unreachable_at = None
            if kind is not None and self.on_request is not None:
                self.on_request(endpoint, kind)

    def _attempt(
        self, path: str, params: dict[str, str] | None
    ) -> tuple[dict[str, Any] | str, float | None]:
        """One request: (json object, None) or (what went wrong, Retry-After seconds or None).

        The whole request has ``deadline`` seconds and its decoded body ``max_body`` bytes:
        a server that trickles or sends a compression bomb costs one failed attempt, and
        the query waits for the next cycle. Only the failures a request can have are
        caught; anything else is a bug and goes up as it is.
        """
        started = time.monotonic()
        self.deadline_backend.set(started + self.deadline)
        try:
            with self.http.stream("GET", path, params=params) as response:
                self.status = response.status_code
                content = self._read_body(response, started)
        except _LimitError as exc:
            return self._failed(path, str(exc), Failure.LATER, exc)
        except _BodyError as exc:
            return str(exc), None
        except zlib.error as exc:
            return f"the body could not be decoded (corrupt compression? {exc})", None
        except StopRequestedError:
            raise  # a SIGTERM while the answer was on its way: not the server's failure
        except REQUEST_ERRORS as exc:  # one table decides what each means
            text, failure = describe_httpx_error(exc)
            if failure is Failure.RETRY and time.monotonic() - started >= self.deadline:
                text, failure = f"the answer took longer than {self.deadline:g}s", Failure.LATER
            return self._failed(path, text, failure, exc)
        finally:
            self.deadline_backend.set(None)
        return self._judge(path, response, content)

    def _failed(self, path: str, text: str, failure: Failure, exc: Exception) -> tuple[str, None]:
        """(``text``, None) for a failure worth another try now; raise for the others."""
        if failure is Failure.FATAL:
            raise ApiError(f"{path}: {text}") from exc
        if failure is Failure.LATER:
            raise ApiUnavailableError(
                f"{path}: {text}; not tried again before the next cycle", code=LIMIT_CODE
            ) from exc
        if failure is Failure.UNREACHABLE:
            self.unreachable_at = self.requests_sent
            raise ApiUnavailableError(f"{path}: {text}", code=UNREACHABLE_CODE) from exc
        return text, None

    def _read_body(self, response: httpx.Response, started: float) -> bytes:
        """The body, decompressed here (not by httpx) so that neither the bytes on the wire,
        nor what they inflate to, nor the time they take can pass the limits: each raw
        read inflates at most to the limit, and the deadline is checked between reads."""
        encoding = response.headers.get("Content-Encoding", "")
        inflate: Any = None
        body = bytearray()
        received = 0
        for raw in response.iter_raw():
            if received == 0 and raw:
                inflate = _inflater(encoding, raw)
            received += len(raw)
            if time.monotonic() - started > self.deadline:
                raise _LimitError(f"the answer took longer than {self.deadline:g}s")
            if received > self.max_body:
                raise _LimitError(f"the answer is larger than {self.max_body:,} bytes")
            if inflate is None:
                body += raw
                continue
            if inflate.eof and raw:
                raise _BodyError("data after the end of the compressed answer")
            chunk = raw
            while chunk:
                body += inflate.decompress(chunk, self.max_body + 1 - len(body))
                if len(body) > self.max_body:
                    raise _LimitError(f"the answer is larger than {self.max_body:,} bytes")
                if inflate.unused_data:
                    raise _BodyError("data after the end of the compressed answer")
                chunk = inflate.unconsumed_tail
        if inflate is not None and not inflate.eof:
            raise _BodyError("the compressed answer was cut short")
        return bytes(body)

    def _judge(
        self, path: str, response: httpx.Response, content: bytes
    ) -> tuple[dict[str, Any] | str, float | None]:
        if response.status_code == 429:
            after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
            return "HTTP 429 rate limited", 10.0 if after is None else after
        if response.status_code >= 500:
            return f"HTTP {response.status_code}", None
        try:
            body = json.loads(content)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past reason
            body = None
        if response.status_code >= 400:
            code = _error_code(body)
            raise ApiError(
                f"{path}: HTTP {response.status_code} {code or ''}".strip(),
                status=response.status_code,
                code=code,
            )
        if body is None:
            return "the body is not JSON (truncated or an error page)", None
        if not isinstance(body, dict):
            return f"the body is JSON {type(body).__name__}, not an object", None
        return body, None

    def search_jobs(self, query: dict[str, str]) -> SearchResult:
        """Every page of GET /jobs for ``query``, following ``nextCursor`` until it is null.

        A query whose answer spent its whole deadline or size limit in each of its last
        cycles is not asked again for a while (``LimitBackoff``): it fails at once.
        """
        key = json.dumps(query, sort_keys=True)
        self.limits.check(key)
        try:
            result = self._search_pages(query)
        except ApiUnavailableError as exc:
            if exc.code == LIMIT_CODE:
                self.limits.failed(key)
            raise
        self.limits.answered(key)
        return result

    def _search_pages(self, query: dict[str, str]) -> SearchResult:
        result = SearchResult()
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while result.pages < MAX_PAGES:
            params = dict(query, limit=str(PAGE_SIZE))
            if cursor:
                params["cursor"] = cursor
            page = self.get_json("jobs", params)
            result.pages += 1
            # The pages may come from the edge cache at different ages: the oldest counts.
            generated = parse_time(page.get("generatedAt"))
            if result.pages == 1 or result.generated_at is None:
                result.generated_at = result.generated_at or generated
            elif generated is not None:
                result.generated_at = min(result.generated_at, generated)
            self._collect(page.get("jobs"), result)
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                return result
            if cursor in seen_cursors:  # the next pages would repeat: the list is not whole
                raise ApiUnavailableError(
                    f"jobs: the API gave page {result.pages}'s cursor before; "
                    "a partial list cannot answer for this query"
                )
            seen_cursors.add(cursor)
        # A partial list cannot answer for a change: the query fails this cycle.
        raise ApiUnavailableError(f"jobs: more than {MAX_PAGES} pages; the cursor never ends?")

    def _collect(self, raw_jobs: object, result: SearchResult) -> None:
        if not isinstance(raw_jobs, list):
            raise ApiUnavailableError("jobs: the page has no 'jobs' list")
        for raw in raw_jobs:
            known = self._listed_before(raw)
            if known is not None:
                result.jobs.append(known)
                continue
            try:
                parsed = parse_job(raw)
            except Exception as exc:  # one job, however odd, never costs the others
                result.skipped += 1
                log.warning("skipped a job the API sent: %s", exc)
                continue
            for warning in parsed.warnings:
                log.warning("job %s: %s", parsed.job.id, warning)
            if isinstance(raw, dict):
                self.listed[parsed.job.id] = (raw, parsed.job)
            result.jobs.append(parsed.job)

    def _listed_before(self, raw: object) -> Job | None:
        """The job an identical record (every field equal, as ``==`` compares the decoded
        JSON) was parsed to, if one was; a record with any field changed is parsed anew."""
        if not isinstance(raw, dict):
            return None
        known = self.listed.get(str(raw.get("id")))
        return known[1] if known is not None and known[0] == raw else None

    def changes(self, since: datetime) -> ChangeFeed:
        """The latest event per job at or after ``since``, following the 5,000-event cap.

        ``capped`` is True when the feed still had more after ``MAX_CHANGE_CALLS`` calls:
        then ``until`` lags the API's present.
        """
        feed = ChangeFeed(until=since)
        for _ in range(MAX_CHANGE_CALLS):
            body = self.get_json("jobs/changes", {"since": format_time(since)})
            until = parse_time(body.get("until"))
            changes = body.get("changes")
            if until is None or not isinstance(changes, list):
                raise ApiUnavailableError("jobs/changes: the answer has no 'until' or 'changes'")
            latest = self._collect_changes(changes, feed)
            feed.capped = len(changes) >= CHANGES_CAP
            if not feed.capped:
                feed.until = max(until, since)  # an 'until' before 'since' is no progress
                break
            # Capped: go on from the last event read (whatever 'until' says), so nothing
            # past the cap is skipped; a whole answer at one instant cannot be got past.
            if latest is None or latest <= since:
                latest = since + timedelta(milliseconds=1)
                feed.gap = True
            since = feed.until = latest
        return feed

    @staticmethod
    def _collect_changes(changes: list[Any], feed: ChangeFeed) -> datetime | None:
        """Add one answer's events to ``feed`` (the latest per job); the latest instant seen."""
        latest: datetime | None = None
        for change in changes:
            if not isinstance(change, dict) or change.get("jobId") is None:
                continue
            job_id, at = str(change["jobId"]), parse_time(change.get("occurredAt"))
            earlier = feed.events.get(job_id)
            if earlier is not None and earlier[1] and at and earlier[1] > at:
                continue
            feed.events[job_id] = (str(change.get("eventType")), at)
            if at is not None and (latest is None or at > latest):
                latest = at
        return latest

    def job(self, job_id: str) -> Job | None:
        """One job as listed now; None when the API says it is closed or unlisted (404
        ``{"id", "status": "closed"}``). Any other 404 ("never existed") is an error: a
        job the feed just named is not taken for closed on that word."""
        if not 1 <= len(job_id) <= MAX_JOB_ID:  # the contract's limits: no request at all
            raise ApiDataError(f"job id {job_id[:80]!r} is not 1 to {MAX_JOB_ID} characters")
        # One path segment whatever the id holds: '/', '?', and '.', so '..' is not the parent.
        segment = quote(job_id, safe="").replace(".", "%2E")
        try:
            body = self.get_json(f"jobs/{segment}", endpoint="jobs/{id}")
        except ApiError as exc:
            if exc.status == 404 and exc.code == CLOSED_CODE:
                return None
            raise
        try:
            parsed = parse_job(body)
        except ValueError as exc:
            raise ApiDataError(f"jobs/{job_id}: {exc}") from exc
        if parsed.job.id != job_id:
            raise ApiUnavailableError(f"jobs/{job_id}: the answer is about job {parsed.job.id}")
        for warning in parsed.warnings:
            log.warning("job %s: %s", parsed.job.id, warning)
        return parsed.job

    def facet_counts(self) -> dict[str, list[tuple[str, int]]]:
        """Facet values with their job counts, as the API sorts them (most jobs first)."""
        body = self.get_json("jobs/facets")
        counts: dict[str, list[tuple[str, int]]] = {}
        for key in ("categories", "languages", "countries", "payTypes"):
            items = body.get(key)
            entries = items if isinstance(items, list) else []
            counts[key] = [
                (str(item.get("value")), int(item.get("count") or 0))
                for item in entries
                if isinstance(item, dict) and item.get("value") is not None
            ]
        return counts
