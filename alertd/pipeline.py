"""One polling cycle: fetch every saved search, record what is new, deliver what is owed.

``run_once`` is the one place that catches everything for a cycle: a failing search,
a full disk or a bug in one stage is logged and the cycle carries on or ends, but the
daemon never dies of it and nothing owed is forgotten.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from alertd.api import RETRY_DELAYS, OpenTrainClient
from alertd.deliver import Sender, alert_text
from alertd.errors import AlertdError, ApiError, StopRequestedError, StoreError
from alertd.match import is_open, select_open
from alertd.models import Job, SavedSearch, Target, parse_time
from alertd.settings import Config
from alertd.store import Store

log = logging.getLogger(__name__)

MAX_ALERTS_PER_TARGET = 20  # per cycle: the rest stay owed for the next cycle
# The edge cache may serve a page up to 5 min fresh + 1 h stale: look that far back for closures.
CLOSED_LOOKBACK = timedelta(minutes=65)
# Delivered and withdrawn rows are kept this long (for status, and so a job that a
# second search matches months later is still not sent twice), then forgotten.
KEEP_DONE = timedelta(days=180)
# s-maxage=300 plus one stale answer while it revalidates: after this long, asking every
# cycle cannot still get an answer from before the edit. Also bounds any hold.
HOLD_BOUND = timedelta(minutes=10)
MAX_JOB_CHECKS = 10  # GET /jobs/{id} per cycle, for owed jobs edited since they matched

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def retry_delay(schedule: tuple[float, ...], attempts: int, permanent: bool = False) -> float:
    """Seconds to wait after the ``attempts``-th failed send: the schedule, clamped to its end.

    A permanent failure (a revoked token, a deleted webhook) waits the longest step:
    it is still owed, in case a person fixes the target, but it stops hammering.
    """
    if permanent:
        return schedule[-1]
    return schedule[min(max(attempts, 1), len(schedule)) - 1]


@dataclass
class CycleReport:
    """What one cycle did, summed up in one log line."""

    searches: int = 0
    failed_searches: list[str] = field(default_factory=list)
    primed: list[str] = field(default_factory=list)
    new_jobs: int = 0
    sent: int = 0
    failed_sends: int = 0
    withdrawn: int = 0
    held: bool = False
    held_rows: int = 0
    owed: int = 0
    requests: int = 0
    skipped_jobs: int = 0
    stopped: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when nothing failed: every search polled and every due alert accepted."""
        return not (self.failed_searches or self.failed_sends or self.error or self.held)

    def summary(self) -> str:
        """One line: the whole cycle at a glance."""
        failed = f" ({len(self.failed_searches)} failed: {', '.join(self.failed_searches)})"
        parts = [
            f"{self.searches} searches" + (failed if self.failed_searches else ""),
            f"{self.requests} requests",
            f"{self.new_jobs} new matches",
            f"{self.sent} alerts sent",
        ]
        if self.primed:
            parts.append(f"primed silently: {', '.join(self.primed)}")
        if self.skipped_jobs:
            parts.append(f"{self.skipped_jobs} malformed jobs skipped")
        if self.withdrawn:
            parts.append(f"{self.withdrawn} withdrawn (job closed or expired)")
        if self.held:
            parts.append("deliveries held (change feed unreadable)")
        if self.failed_sends:
            parts.append(f"{self.failed_sends} sends failed (will retry)")
        parts.append(f"{self.owed} owed")
        if self.held_rows:
            parts.append(f"{self.held_rows} of them held for a closure check")
        if self.stopped:
            parts.append("stopped early")
        if self.error:
            parts.append(f"error: {self.error}")
        return ", ".join(parts)


def poll_search(
    search: SavedSearch,
    client: OpenTrainClient,
    store: Store,
    now: datetime,
    report: CycleReport,
    api_now: datetime | None = None,
) -> None:
    """Fetch one search's open matches and record them: silently while it is priming.

    ``api_now`` is the API's own clock (the change feed's ``until``); a new search's
    priming starts from it, so a clock difference between us and the API cannot let
    jobs posted before the search through as new.
    """
    result = client.search_jobs(search.query())
    report.skipped_jobs += result.skipped
    jobs = select_open(result.jobs, now)
    store.refresh_owed(jobs)
    state = store.search_state(search)
    if state is not None and state.get("primed"):
        report.new_jobs += store.record_matches(search, jobs, now)
        return
    if state is None and search.notify_existing:
        report.new_jobs += store.record_matches(search, jobs, now)
        store.mark_primed(search, now)
        return
    if state is None:
        start = api_now or now
        since = start.replace(microsecond=start.microsecond // 1000 * 1000)  # API precision
        store.begin_priming(search, since)
    else:
        since = parse_time(state.get("priming_since")) or now
    prime_search(search, jobs, since, result.generated_at, store, now, report)


def prime_search(
    search: SavedSearch,
    jobs: list[Job],
    since: datetime,
    generated_at: datetime | None,
    store: Store,
    now: datetime,
    report: CycleReport,
) -> None:
    """A search's silent first run, which lasts until the API answers from after it began.

    The edge cache may answer with a page computed before the search existed (up to an
    hour old while it revalidates). Jobs on such a page are recorded silently and the
    search keeps priming; on the first answer generated after priming began, jobs posted
    before that moment are recorded silently, and any posted since are owed as alerts.
    """
    report.primed.append(search.name)
    if generated_at is not None and generated_at < since:
        store.prime(search, (job.id for job in jobs), now)
        log.info(
            "search %r priming: the API answered from a cache older than the search; "
            "staying silent until it answers fresh",
            search.name,
        )
        return
    later = [job for job in jobs if job.date_posted is not None and job.date_posted >= since]
    store.prime(search, (job.id for job in jobs if job not in later), now)
    report.new_jobs += store.record_matches(search, later, now)
    store.mark_primed(search, now)
    log.info(
        "search %r primed: %d open jobs match now; only jobs posted from here on alert",
        search.name,
        len(jobs) - len(later),
    )


@dataclass
class Feed:
    """What the change feed said this cycle; ``ok`` is False when it could not be read."""

    ok: bool = False
    events: dict[str, tuple[str, datetime | None]] = field(default_factory=dict)
    until: datetime | None = None
    capped: bool = False

    @property
    def api_now(self) -> datetime | None:
        """The API's present, when the feed reached it."""
        return self.until if self.ok and not self.capped else None

    def jobs(self, kind: str) -> dict[str, datetime | None]:
        """Jobs whose latest event is ``kind``, with when it happened."""
        return {job_id: at for job_id, (event, at) in self.events.items() if event == kind}


def read_feed(client: OpenTrainClient, store: Store, now: datetime) -> Feed:
    """Read the change feed since the last cycle, looking back at least ``CLOSED_LOOKBACK``.

    The look-back overlaps earlier reads on purpose: a search page served from the edge
    cache can list a job that closed up to an hour ago, after an earlier read saw it close.
    The new position is saved only once the cycle has acted on what was read.
    """
    since = min(store.changes_since() or now, now - CLOSED_LOOKBACK)
    try:
        answer = client.changes(since)
    except ApiError as exc:
        log.warning("could not read the change feed: %s; deliveries wait for it", exc)
        return Feed()
    return Feed(True, answer.events, answer.until, answer.capped)


def is_after_edit(job: Job, edited_at: datetime | None) -> bool:
    """Whether an answer about ``job`` shows its edit at ``edited_at`` (or cannot tell).

    A second's slack: the API stamps the job and the event separately.
    """
    if job.updated_at is None or edited_at is None:
        return True
    return job.updated_at >= edited_at - timedelta(seconds=1)


def withdraw_closed(client: OpenTrainClient, store: Store, feed: Feed, now: datetime) -> int:
    """Withdraw owed alerts for jobs that closed: no target should hear of a filled job.

    The feed keeps only each job's latest event, so a job closed and then edited shows as
    ``UPDATED``: owed rows of edited jobs are held until ``GET /jobs/{id}`` answers, with
    an answer at least as new as the edit, that the job is still open (a few a cycle).
    """
    owed = store.owed_job_ids()
    closed = set(feed.jobs("CLOSED")) & owed
    edited = {k: v for k, v in feed.jobs("UPDATED").items() if k in owed - closed}
    store.flag_for_check(edited, now)
    held = store.jobs_to_check()
    for job_id in random.sample(sorted(held), min(len(held), MAX_JOB_CHECKS)):
        edited_at, held_since = held[job_id]
        # Past the bound, an open answer is trusted whatever its age, and a job we cannot
        # ask about is let through: an alert may wait, but never forever.
        overdue = held_since is not None and now - held_since > HOLD_BOUND
        try:
            job = client.job(job_id)
        except ApiError as exc:
            if overdue:
                store.clear_check([job_id])
            log.warning(
                "could not check job %s: %s; %s",
                job_id,
                exc,
                "held too long, sending anyway" if overdue else "its alert waits",
            )
            continue
        if job is None or not is_open(job, now):
            closed.add(job_id)
        elif overdue or is_after_edit(job, edited_at):
            store.refresh_owed([job])
            store.clear_check([job_id])
        # else: an answer from before the edit (the edge cache); ask again next cycle
    return store.withdraw(closed, "the job closed before it could be delivered", now)


def deliver_due(
    config: Config,
    targets: dict[str, Target],
    store: Store,
    send: Sender,
    clock: Clock,
    report: CycleReport,
    stop: threading.Event,
) -> None:
    """Send every owed alert that is due; a target that fails is left for a later cycle."""
    per_target: dict[str, int] = {}
    down: set[str] = set()
    for alert in store.due(clock(), targets):
        if stop.is_set():
            report.stopped = True
            return
        target = targets[alert.target_key]
        now = clock()
        if alert.job.valid_through is not None and alert.job.valid_through <= now:
            store.withdraw([alert.job.id], "the job expired before it could be delivered", now)
            report.withdrawn += 1
            continue
        if target.key in down or per_target.get(target.key, 0) >= MAX_ALERTS_PER_TARGET:
            continue
        title, body = alert_text(alert, config.tz)
        store.mark_sending(alert, clock())
        outcome = send(target, title, body)
        if outcome.accepted:
            store.mark_sent(alert, clock())
            report.sent += 1
            per_target[target.key] = per_target.get(target.key, 0) + 1
            continue
        down.add(target.key)
        report.failed_sends += 1
        attempts = alert.attempts + 1
        retry_at = clock() + timedelta(
            seconds=retry_delay(config.retry_schedule, attempts, outcome.permanent)
        )
        store.mark_failed(alert, outcome.error or "not accepted", retry_at)
        level = logging.ERROR if outcome.permanent else logging.WARNING
        log.log(
            level,
            "%s did not accept job %s (attempt %d): %s; will retry at %s%s",
            target.label,
            alert.job.id,
            attempts,
            outcome.error,
            retry_at.astimezone(config.tz).strftime("%H:%M:%S %Z"),
            " — check this target's URL and credentials" if outcome.permanent else "",
        )


def make_client(config: Config, stop: threading.Event | None = None) -> OpenTrainClient:
    """The API client for ``config``.

    Back-off within a cycle never takes more than a tenth of the poll interval per step:
    the next cycle is the real retry, and a cycle must not overrun its own schedule.
    """
    delays = tuple(min(delay, config.poll_interval / 10) for delay in RETRY_DELAYS)
    return OpenTrainClient(
        config.api_url,
        requests_per_minute=config.requests_per_minute,
        retry_delays=delays,
        stop=stop,
    )


def run_once(
    config: Config,
    client: OpenTrainClient,
    store: Store,
    send: Sender,
    *,
    clock: Clock = utc_now,
    stop: threading.Event | None = None,
) -> CycleReport:
    """One full cycle. Never raises for a failing search, target or disk: it reports them."""
    stop = stop or threading.Event()
    report = CycleReport(searches=len(config.searches))
    requests_before = client.requests_sent
    targets = {t.key: t for s in config.searches for t in s.targets}
    try:
        feed = read_feed(client, store, clock())
        for search in config.searches:
            if stop.is_set():
                report.stopped = True
                break
            try:
                poll_search(search, client, store, clock(), report, feed.api_now)
            except ApiError as exc:
                report.failed_searches.append(search.name)
                log.warning("search %r skipped this cycle: %s", search.name, exc)
        if not report.stopped:
            store.forget_searches_except((s.name for s in config.searches), config.source)
        if not report.stopped and feed.ok and feed.until is not None:
            report.withdrawn += withdraw_closed(client, store, feed, clock())
            store.set_changes_since(feed.until)
            deliver_due(config, targets, store, send, clock, report, stop)
        elif not report.stopped:
            report.held = True  # without the feed we cannot tell a closed job from an open one
        store.prune(clock(), KEEP_DONE)
    except StopRequestedError:
        report.stopped = True
    except StoreError as exc:
        report.error = str(exc)
        log.error("%s", exc)
    except (AlertdError, Exception) as exc:  # the one catch-all: a cycle never kills the daemon
        report.error = f"{type(exc).__name__}: {exc}"
        log.exception("cycle failed unexpectedly; the next cycle will try again")
    report.requests = client.requests_sent - requests_before
    with contextlib.suppress(StoreError):  # owed to targets still in the config
        report.owed, report.held_rows = store.count_owed(targets)
    return report
