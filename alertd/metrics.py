"""Prometheus metrics and ``/healthz`` on one port, for ``alertd run --metrics-port``.

Off unless asked for. The port listens on 127.0.0.1: metrics name your targets (by
channel name or redacted URL, never a URL with its secret) and your searches' failures,
which is nobody else's business. ``--metrics-host 0.0.0.0`` is for a container, whose
port only what you publish reaches; anywhere else it shows them to the whole network.

Everything is counted in the daemon's thread: the cycle (``watch_cycles``), each API
request (the client's ``on_request`` hook) and each message sent (``watch_sends``). The
server's threads only read: the registry (``prometheus_client`` locks its values) and
``heartbeat.json``, which ``/healthz`` judges as ``alertd health`` does (``health.py``).
"""

from __future__ import annotations

import collections
import errno
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from alertd.api import OpenTrainClient, RateBudget
from alertd.config import Config
from alertd.daemon import HEARTBEAT_FILE, CycleRunner
from alertd.deliver import Outcome, Sender
from alertd.errors import PortError
from alertd.health import HealthLimits, Verdict, judge_health, read_heartbeat
from alertd.listen import DEFAULT_HOST, BoundedServer
from alertd.models import DeliveryStatus, OutboxRow, Target
from alertd.pipeline import CycleReport, all_targets
from alertd.render import Message
from alertd.store import Store

# A cycle takes a second when little changed, minutes when a search primes or waits on
# the request budget: buckets from 0.5 s to 20 min.
CYCLE_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)
Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Metrics:
    """The daemon's numbers in their own registry (never ``prometheus_client``'s global)."""

    def __init__(self, config: Config, budget: RateBudget) -> None:
        self.config = config  # the one the last cycle ran: /healthz judges by its interval
        self.registry = CollectorRegistry()
        reg = self.registry
        self.cycles = Counter("alertd_cycles", "Cycles completed.", registry=reg)
        self.cycle_seconds = Histogram(
            "alertd_cycle_duration_seconds", "How long each cycle took.",
            buckets=CYCLE_BUCKETS, registry=reg,
        )  # fmt: skip
        self.requests = Counter(
            "alertd_api_requests",
            "API requests by endpoint and HTTP status, or error kind (unreachable, bad_body, "
            "error) when no whole answer came.",
            ["endpoint", "status"],
            registry=reg,
        )
        self.sent = Counter("alertd_alerts_sent", "Alerts a target accepted.", ["target"],
                            registry=reg)  # fmt: skip
        self.failed = Counter(
            "alertd_alerts_failed", "Alerts a target did not accept (retried later).",
            ["target"], registry=reg,
        )  # fmt: skip
        self.withdrawn = Counter(
            "alertd_alerts_withdrawn", "Owed alerts dropped: the job closed or expired first.",
            ["target"], registry=reg,
        )  # fmt: skip
        self.owed = Gauge("alertd_alerts_owed", "Alerts owed now, by target.", ["target"],
                          registry=reg)  # fmt: skip
        self.oldest_owed_at: float | None = None
        Gauge(
            "alertd_oldest_owed_age_seconds",
            "Age of the oldest owed alert; 0 when none is owed.",
            registry=reg,
        ).set_function(self._oldest_owed_age)
        self.last_success = Gauge(
            "alertd_last_successful_cycle_timestamp_seconds",
            "Unix time at which the last cycle in which nothing failed ended.",
            registry=reg,
        )
        self.searches_failing = Gauge(
            "alertd_searches_failing", "Searches whose query failed in the last cycle that asked.",
            registry=reg,
        )  # fmt: skip
        self.request_times: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()  # request_times: appended here, counted by a scrape
        Gauge(
            "alertd_api_budget_used_requests", "API requests in the last 60 seconds.",
            registry=reg,
        ).set_function(self._requests_last_minute)  # fmt: skip
        Gauge(
            "alertd_api_budget_limit_requests", "API requests allowed per minute.", registry=reg
        ).set(budget.per_minute)
        self.counted_until = datetime.now(UTC)  # rows finished before the start are history
        self.owed_labels: set[str] = set()

    # -- what the daemon's thread tells us --------------------------------------------

    def count_request(self, endpoint: str, status: str) -> None:
        """One API request ended (``OpenTrainClient.on_request``)."""
        self.requests.labels(endpoint, status).inc()
        with self.lock:
            self.request_times.append(time.monotonic())

    def watch_sends(self, send: Sender) -> Sender:
        """``send``, counting the alerts each message carried as sent or failed."""

        def counted(target: Target, message: Message) -> Outcome:
            outcome = send(target, message)
            counter = self.sent if outcome.accepted else self.failed
            counter.labels(target.label).inc(len(message.items) + message.more)
            return outcome

        return counted

    def watch_cycles(self, cycle: CycleRunner, store: Store) -> CycleRunner:
        """``cycle``, timed and counted, with the store's owed alerts read after each."""

        def watched(config: Config, fresh: bool) -> CycleReport:
            started = time.monotonic()
            report = cycle(config, fresh)
            self.cycle_seconds.observe(time.monotonic() - started)
            self.observe_cycle(config, report, store)
            return report

        return watched

    def observe_cycle(self, config: Config, report: CycleReport, store: Store) -> None:
        """Record what a finished cycle left: owed and withdrawn alerts, failing searches."""
        self.config = config
        self.cycles.inc()
        if report.ok:
            self.last_success.set(time.time())
        if report.asked or report.failed_searches:  # a cycle that asked nothing tells nothing
            self.searches_failing.set(len(set(report.failed_searches)))
        oldest = report.oldest_owed
        self.oldest_owed_at = None if oldest is None else oldest.timestamp()
        labels = {key: target.label for key, target in all_targets(config.searches).items()}
        self._count_withdrawn(store.done.values(), labels)
        self._set_owed(store.owed.values(), labels)

    def _count_withdrawn(self, done: Iterable[OutboxRow], labels: dict[str, str]) -> None:
        rows = [r for r in done if r.done_at is not None and r.done_at > self.counted_until]
        for row in rows:
            if row.status == DeliveryStatus.WITHDRAWN:
                self.withdrawn.labels(labels.get(row.target, row.target)).inc()
        self.counted_until = max([self.counted_until, *(r.done_at for r in rows if r.done_at)])

    def _set_owed(self, owed: Iterable[OutboxRow], labels: dict[str, str]) -> None:
        counts = dict.fromkeys(labels.values(), 0)
        for row in owed:  # a target no longer configured is named by its key (no secret)
            label = labels.get(row.target, row.target)
            counts[label] = counts.get(label, 0) + 1
        for label, count in counts.items():
            self.owed.labels(label).set(count)
        for label in self.owed_labels - counts.keys():
            self.owed.remove(label)
        self.owed_labels = set(counts)

    # -- what a scrape reads ----------------------------------------------------------

    def _oldest_owed_age(self) -> float:
        at = self.oldest_owed_at
        return 0.0 if at is None else max(0.0, time.time() - at)

    def _requests_last_minute(self) -> float:
        since = time.monotonic() - RateBudget.WINDOW
        with self.lock:
            while self.request_times and self.request_times[0] <= since:
                self.request_times.popleft()
            return float(len(self.request_times))

    def verdict(self) -> Verdict:
        """What ``alertd health`` (with its default limits) would say now."""
        config = self.config
        path = config.state_dir / HEARTBEAT_FILE
        limits = HealthLimits.for_interval(config.poll_interval)
        try:
            beat = read_heartbeat(path)
        except PermissionError:  # the daemon's own file: only if someone chmod-ed it
            beat = None
        return judge_health(beat, path, datetime.now(UTC), limits, config.tz)

    def app(self) -> Wsgi:
        """The WSGI app: ``/metrics``, ``/healthz`` (200 or 503 with the verdict), else 404."""
        scrape = make_wsgi_app(self.registry)

        def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return scrape(environ, start_response)  # type: ignore[no-any-return]
            if path == "/healthz":
                verdict = self.verdict()
                status = "200 OK" if verdict.healthy else "503 Service Unavailable"
                return _text(start_response, status, verdict.line)
            return _text(start_response, "404 Not Found", "not found: try /metrics or /healthz")

        return route


def _text(start_response: Callable[..., Any], status: str, line: str) -> list[bytes]:
    body = (line + "\n").encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [body]


class MetricsServer(BoundedServer, WSGIServer):
    """One thread per scrape, none of them keeping the process alive, within
    ``BoundedServer``'s limits: a scrape is one short request, so a few connections,
    each for seconds, are plenty."""

    def server_bind(self) -> None:
        # HTTPServer's would ask the resolver for this host's full name: nothing to wait on.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "alertd"
        self.server_port = self.server_address[1]
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is not news for the log


def bind_metrics(
    port: int, host: str = DEFAULT_HOST, option: str = "--metrics-port"
) -> MetricsServer:
    """Listen on ``host:port`` (not serving yet); PortError naming ``option`` if we cannot."""
    try:
        return MetricsServer((host, port), _QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortError(f"{option} {port} is in use") from None
        raise PortError(f"{option} {port} cannot be opened on {host}: {exc.strerror}") from None


@contextmanager
def serve_metrics(
    server: MetricsServer | None, config: Config, client: OpenTrainClient
) -> Iterator[Metrics | None]:
    """Serve metrics from ``server`` on a thread, counting ``client``'s requests, until the
    block ends; nothing when ``server`` is None (metrics are off)."""
    if server is None:
        yield None
        return
    metrics = Metrics(config, client.budget)
    client.on_request = metrics.count_request
    server.set_app(metrics.app())
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    try:
        yield metrics
    finally:
        server.shutdown()
        server.server_close()
