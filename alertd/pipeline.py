"""One cycle: read the change feed, deliver what is ready, then ask again only what the
changes can have touched, and deliver what that found.

    feed ─▶ closures, events ─▶ read changed jobs ─▶ commit the outbox ─▶ deliver ─▶
    a share of the full refresh ─▶ owed queries ─▶ new searches ─▶ queries that failed
    (after each one that asked something: commit the outbox ─▶ deliver) ─▶ commit

Alerts matched from the feed (and those owed from before) go out before the cycle
spends time on queries, so one slow query delays no one's alerts; the queries stop
starting once the cycle's ask window (``plan.ask_window``) has passed, and what they
would have asked stays owed for the next cycle.

A cycle in which nothing changed costs one request. Every decision (what to ask, what
is new, what waits, what is due) is ``plan``'s; this module fetches, asks the plan and
applies the answers to the store. ``run_once`` is the one place that catches everything
for a cycle: a failing search, a full disk or a bug in one stage is logged and the cycle
ends, but the daemon never dies of it and nothing owed is forgotten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from alertd import plan
from alertd.api import RETRY_DELAYS, UNREACHABLE_CODE, OpenTrainClient, SearchResult
from alertd.budget import Window, open_window
from alertd.config import Config
from alertd.deliver import Outcome, Sender
from alertd.errors import AlertdError, ApiDataError, ApiError, StopRequestedError, StoreError
from alertd.match import is_open, passes, pay_raised, select_open
from alertd.models import FEED_PREFIX, Alert, Event, Job, QueryState, SavedSearch, Target
from alertd.plan import Query, Verdict
from alertd.render import Channel, Item, Links, Message, channel_for
from alertd.store import Store
from alertd.subscriptions import Subscriptions, of_config
from alertd.words import plural

log = logging.getLogger(__name__)

# Delivered and withdrawn rows are kept this long (for status, and so a job that a
# second search matches months later is still not sent twice), then forgotten.
KEEP_DONE = timedelta(days=180)
FIRST_LOOKBACK = plan.CACHE_HORIZON  # a first feed read looks back this far for closures

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


@dataclass
class CycleReport:
    """What one cycle did, summed up in one log line."""

    searches: int = 0
    queries: int = 0
    asked: int = 0
    failed_searches: list[str] = field(default_factory=list)
    primed: list[str] = field(default_factory=list)
    events: int = 0
    jobs_read: int = 0
    new_jobs: int = 0
    sent: int = 0
    failed_sends: int = 0
    unknown_sends: int = 0
    withdrawn: int = 0
    capped: int = 0  # due alerts a member's daily cap keeps for later
    capped_targets: set[str] = field(default_factory=set)  # not late: capped
    held: bool = False
    held_rows: int = 0
    owed: int = 0
    oldest_owed: datetime | None = None
    refusing: list[str] = field(default_factory=list)  # targets that refused for good
    waiting: int = 0
    requests: int = 0
    skipped_jobs: int = 0
    over_budget: bool = False
    out_of_time: float | None = None  # the ask window, when it ran out before the work did
    left_queries: int = 0  # queries the window left for the next cycle
    stopped: bool = False
    error: str | None = None

    @property
    def api_unreachable(self) -> bool:
        """The change feed could not be read: nothing this cycle knows is current. (A
        query the API refuses is that search's failure, shown in the log line.)"""
        return self.held

    @property
    def searches_all_failed(self) -> bool:
        """Queries were asked and not one answered (the API fails every search)."""
        return bool(self.failed_searches) and self.asked == 0

    @property
    def ok(self) -> bool:
        """True when nothing failed: every query answered and every due alert accepted."""
        return not (self.failed_searches or self.failed_sends or self.error or self.held)

    def fields(self) -> dict[str, object]:
        """The cycle's numbers, named as in ``summary``: a JSON log line's fields."""
        return {
            "searches": self.searches,
            "failed_searches": list(self.failed_searches),
            "requests": self.requests,
            "changes": self.events,
            "jobs_read": self.jobs_read,
            "queries_asked": self.asked,
            "queries": self.queries,
            "new_matches": self.new_jobs,
            "alerts_sent": self.sent,
            "sends_failed": self.failed_sends,
            "sends_unanswered": self.unknown_sends,
            "withdrawn": self.withdrawn,
            "capped": self.capped,
            "malformed_jobs_skipped": self.skipped_jobs,
            "owed": self.owed,
            "queries_left": self.left_queries,
            "primed": list(self.primed),
            "ok": self.ok,
        }

    def summary(self) -> str:
        """One line: the whole cycle at a glance."""
        failed = f" ({len(self.failed_searches)} failed: {', '.join(self.failed_searches)})"
        parts = [
            plural(self.searches, "search", "searches") + (failed if self.failed_searches else ""),
            plural(self.requests, "request"),
        ]
        if self.events or self.asked:
            parts.append(
                f"{plural(self.events, 'change')}, {plural(self.jobs_read, 'job')} read, "
                f"{self.asked:,} of {plural(self.queries, 'query', 'queries')} asked"
            )
        parts += [
            plural(self.new_jobs, "new match", "new matches"),
            f"{plural(self.sent, 'alert')} sent",
        ]
        if self.primed:
            shown = ", ".join(self.primed[:5]) + (" …" if len(self.primed) > 5 else "")
            parts.append(f"primed silently: {shown}")
        if self.skipped_jobs:
            parts.append(f"{plural(self.skipped_jobs, 'malformed job')} skipped")
        if self.withdrawn:
            parts.append(f"{self.withdrawn:,} withdrawn (job closed or expired)")
        if self.capped:
            parts.append(f"{self.capped:,} kept for later by members' daily caps")
        if self.held:
            parts.append("deliveries held (change feed unreadable)")
        if self.failed_sends:
            parts.append(f"{plural(self.failed_sends, 'send')} failed (will retry)")
        if self.unknown_sends:
            parts.append(f"{self.unknown_sends} of them unanswered (target slow; may have it)")
        parts.append(f"{self.owed} owed")
        if self.held_rows:
            parts.append(f"{self.held_rows} of them held for a closure check")
        if self.waiting:
            parts.append(f"{self.waiting} changes still to confirm")
        if self.over_budget:
            parts.append("request budget spent, the rest next cycle")
        if self.out_of_time is not None:
            left = plural(self.left_queries, "query", "queries")
            end = f": {left} left for the next cycle" if self.left_queries else ""
            parts.append(f"{self.out_of_time:g}s ask window over{end}")
        if self.stopped:
            parts.append("stopped early")
        if self.error:
            parts.append(f"error: {self.error}")
        return ", ".join(parts)


@dataclass
class Priming:
    """What one cycle primed: searches done, open jobs they recorded silently, and
    searches still waiting for an answer fresher than themselves."""

    done: list[str] = field(default_factory=list)
    jobs: int = 0
    waiting: list[str] = field(default_factory=list)

    def summary(self, unprimed: int) -> str | None:
        """One line for the log; None when nothing was primed or began priming.
        ``unprimed``: searches of the config not primed after this cycle."""
        if not (self.done or self.waiting):
            return None
        parts = []
        if self.done:
            parts.append(
                f"primed {plural(len(self.done), 'new search', 'new searches')} silently "
                f"({plural(self.jobs, 'open match', 'open matches')} recorded as seen; "
                "only jobs posted from now on alert)"
            )
        if self.waiting:
            many = len(self.waiting) > 1
            parts.append(
                f"{plural(len(self.waiting), 'search', 'searches')} still silent: the API "
                f"answered from a cache older than the search{'es' if many else ''}"
            )
        if unprimed:
            parts.append(f"{plural(unprimed, 'search', 'searches')} left to prime")
        return "; ".join(parts)


class Cycle:
    """The state of one cycle: what it has spent, what it learnt, and its report."""

    def __init__(
        self,
        config: Config,
        client: OpenTrainClient,
        store: Store,
        clock: Clock,
        stop: threading.Event,
        subscriptions: Subscriptions | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.clock = clock
        self.stop = stop
        # What this config file reads and asks is its own, even in a shared state directory.
        self.owner = config.owner or config.source
        self.subs = subscriptions or Subscriptions.gather(
            [of_config(config.searches, self.owner, page_url(config))]
        )
        self.searches = self.subs.searches
        self.queries = plan.group_queries(self.searches)
        self.report = CycleReport(searches=len(self.searches), queries=len(self.queries))
        self.first_request = client.requests_sent
        self.budget = plan.cycle_budget(config.requests_per_minute, config.poll_interval)
        self.window = plan.ask_window(config.poll_interval)
        self.ask_until = time.monotonic() + self.window  # the wall clock, even with a test's
        self.left: set[str] = set()  # queries the window left unasked
        self.failing: dict[str, Query] = {}  # put off until the others were asked
        self.failing_turn = False
        self.api_now: datetime | None = None
        self.asked: set[str] = set()
        store.adopt((s.name for s in config.searches), self.owner)  # a moved config file
        self.primed = {s.name for s in self.searches if self.is_primed(s)}
        self.reopened: set[str] = set()  # jobs open again whose queries are asked anew
        self.priming = Priming()  # what this cycle primed, logged once (names at DEBUG)

    def can_ask(self) -> bool:
        """Whether the cycle may send another request (budget left, no stop asked, the
        API not found unreachable in this cycle: then the next cycle tries again)."""
        if self.stop.is_set():
            self.report.stopped = True
            return False
        if (self.client.unreachable_at or 0) > self.first_request:
            return False
        if self.client.requests_sent - self.first_request >= self.budget:
            self.report.over_budget = True
            return False
        if time.monotonic() >= self.ask_until:
            self.report.out_of_time = self.window
            return False
        return True

    # -- the change feed -------------------------------------------------------

    def read_feed(self) -> bool:
        """Read the feed since where the last cycle left it; False when it could not."""
        now = self.clock()
        since = self.store.changes_since(self.owner)
        try:
            answer = self.client.changes(since or now - FIRST_LOOKBACK)
        except StopRequestedError:
            raise
        except ApiError as exc:
            if exc.code == UNREACHABLE_CODE:
                self.say_unreachable(exc)
            else:
                log.warning("could not read the change feed: %s; deliveries wait for it", exc)
            return False
        except Exception:  # a bug of ours: the feed, this cycle; the searches still go on
            log.exception("reading the change feed failed unexpectedly; deliveries wait for it")
            return False
        changes = answer.events
        if since is None and not self.primed:  # a first start: the priming covers the rest
            changes = {k: v for k, v in changes.items() if v[0] == "CLOSED"}
        elif since is None or answer.gap:
            self.owe_every_query(
                answer.until,
                "the feed position was lost"
                if since is None
                else "more changes at one instant than the feed can list",
            )
        events, closed = plan.merge_events(self.store.events_of(self.owner), changes, now)
        self.report.events = len(changes)
        self.store.set_events(self.owner, events)
        self.close_jobs(closed, now)
        self.store.hold(plan.edited_jobs(changes) & self.store.owed_job_ids(), now)
        if not answer.capped:
            self.api_now = answer.until
        self.store.set_changes_since(self.owner, answer.until)
        return True

    def say_unreachable(self, exc: ApiError) -> None:
        """The one line a cycle logs when the API cannot be reached: it asks nothing more."""
        log.warning(
            "the API cannot be reached (%s): %s; nothing more is asked this cycle and "
            "deliveries wait; the next cycle tries again",
            self.config.api_url,
            exc,
        )

    def owe_every_query(self, since: datetime, why: str) -> None:
        """Changes may have gone unseen: every query is asked again, as the budget allows."""
        log.warning("%s; asking every query again to be sure nothing is missed", why)
        for key in self.queries:
            state = self.store.queries_of(self.owner).get(key)
            self.store.set_query(self.owner, key, plan.owe_answer(state, since))

    def close_jobs(self, closed: dict[str, datetime], now: datetime) -> None:
        """Remember closures (pages may list the jobs for a while) and withdraw their alerts."""
        if not closed:
            return
        self.store.set_closed({**self.store.closed, **closed})
        self.report.withdrawn += self.store.withdraw(
            closed, "the job closed before it could be delivered", now
        )

    # -- asking a query --------------------------------------------------------

    def ask(self, query: Query) -> SearchResult | None:
        """Fetch a query whole, once per cycle; None when it failed (logged).

        A query whose answer spent its whole deadline or size limit is not tried again
        in this cycle; an API that cannot be reached ends the asking for this cycle. A
        bug of ours is logged with its traceback, once, and the other searches go on.
        """
        if query.key in self.asked:
            return None
        state = self.store.queries_of(self.owner).get(query.key) or QueryState()
        if state.failed_at is not None and not self.failing_turn:
            self.failing[query.key] = query  # a broken query must not take the window first
            return None
        if not self.can_ask():
            if self.report.out_of_time is not None:
                self.left.add(query.key)
                self.report.left_queries = len(self.left)
            return None
        self.asked.add(query.key)
        # Failing until it answers (``plan.answers`` clears it), whatever ends the try.
        failed = dataclasses.replace(state, failed_at=self.clock())
        self.store.set_query(self.owner, query.key, failed)
        names = [s.name for s in query.searches]
        try:
            result = self.client.search_jobs(query.query)
        except ApiError as exc:
            self.report.failed_searches.extend(names)
            if exc.code == UNREACHABLE_CODE:
                self.say_unreachable(exc)
            else:
                log.warning("search %s skipped this cycle: %s", ", ".join(map(repr, names)), exc)
            return None
        except StopRequestedError:
            raise
        except Exception:  # anything else is this search's failure, never the cycle's
            self.report.failed_searches.extend(names)
            log.exception("search %s failed unexpectedly this cycle", ", ".join(map(repr, names)))
            return None
        self.report.asked += 1
        self.report.skipped_jobs += result.skipped
        now = self.clock()
        closed = self.store.closed
        jobs = [
            job
            for job in select_open(result.jobs, now)
            if not plan.is_listed_stale(job.id, closed, result.generated_at)
        ]
        self.store.refresh_owed(jobs)
        for search in query.searches:
            self.apply_page(search, jobs, result.generated_at, now)
        state = self.store.queries_of(self.owner).get(query.key) or QueryState()
        self.store.set_query(self.owner, query.key, plan.answers(state, result.generated_at or now))
        return result

    def apply_page(
        self, search: SavedSearch, jobs: list[Job], generated: datetime | None, now: datetime
    ) -> None:
        """A whole, fresh list of a search's open matches: record what is new to it."""
        state = self.store.search_state(search)
        if state is not None and state.primed:
            if search.also:  # a raise (or a reopening) of a job this search listed before
                for job in jobs:
                    if self.store.has_seen(search.name, job.id) and passes(job, search.filters):
                        self.owe_changes(search, job, now, reopened=job.id in self.reopened)
            self.record(search, jobs, now)
            return
        if state is None and search.notify_existing:
            self.record(search, jobs, now)
            self.store.mark_primed(search, now)
            self.primed.add(search.name)
            return
        if state is None:
            state = self.store.begin_priming(search, plan.priming_start(self.api_now, now))
        self.report.primed.append(search.name)
        split = plan.split_priming(jobs, state.since, generated)
        fits = [job for job in jobs if passes(job, search.filters)]  # see ``record``
        if split is None:
            self.store.prime(search, (job.id for job in fits), now)
            self.priming.waiting.append(search.name)
            log.debug(
                "search %r priming: the API answered from a cache older than the search; "
                "staying silent until it answers fresh",
                search.name,
            )
            return
        silent, new = split
        self.store.prime(search, (job.id for job in silent if passes(job, search.filters)), now)
        self.record(search, new, now)
        self.store.mark_primed(search, now)
        self.primed.add(search.name)
        self.priming.done.append(search.name)
        self.priming.jobs += len(silent)
        log.debug(
            "search %r primed: %d open jobs match now; only jobs posted from here on alert",
            search.name,
            len(silent),
        )

    def record(self, search: SavedSearch, jobs: list[Job], now: datetime) -> None:
        """Owe alerts for the jobs new to ``search`` that pass its own filters. A job that
        does not is not remembered as seen: if it comes to fit (its pay raised), it alerts."""
        if search.filters:
            jobs = [job for job in jobs if passes(job, search.filters)]
        if search.also:
            # A job this search alerted, closed and forgotten since, that it lists again.
            for job in jobs:
                if not self.store.has_seen(search.name, job.id):
                    self.owe_changes(search, job, now, reopened=True)
        self.report.new_jobs += self.store.record_matches(search, jobs, now)

    def owe_changes(self, search: SavedSearch, job: Job, now: datetime, reopened: bool) -> None:
        """What ``also:`` asks for: a job this search's targets were sent reopened, or
        its pay went up since they were told. Once per change: the sent row then holds
        the new pay, and a reopened job is open."""
        for target in search.targets:
            sent = self.store.sent_row(target.key, job.id)
            if sent is None or search.name not in sent.searches:
                continue  # not alerted to this target by this search: nothing changed for it
            if reopened and "reopened" in search.also:
                change, old_pay = "reopened", None
            elif "pay_raised" in search.also and pay_raised(sent.pay, job.pay):
                change, old_pay = "pay_raised", sent.pay
            else:
                continue
            if self.store.owe_change(target.key, job, search.name, change, old_pay, now):
                self.report.new_jobs += 1
                log.info(
                    "job %s %s: owed to %s again", job.id, change.replace("_", " "), target.label
                )

    def prime_new_searches(self) -> None:
        """Searches not yet primed (new, edited, or still priming) ask their query now;
        what this cycle primed is one INFO line (a first start may prime thousands)."""
        try:
            for query in self.queries.values():
                if any(s.name not in self.primed for s in query.searches):
                    self.ask(query)
        finally:
            self.log_priming()

    def log_priming(self) -> None:
        """One INFO line for what was primed since the last one (none when nothing was)."""
        if line := self.priming.summary(len(self.searches) - len(self.primed)):
            log.info("%s", line)
        self.priming = Priming()

    def ask_failing(self) -> None:
        """The queries whose last try failed, put off by ``ask`` until every other query
        this cycle wants was asked: the one that failed longest ago first."""
        self.failing_turn = True
        states = self.store.queries_of(self.owner)
        never = datetime.min.replace(tzinfo=UTC)
        try:
            for key in sorted(self.failing, key=lambda k: (states[k].failed_at or never, k)):
                self.ask(self.failing[key])
        finally:
            self.log_priming()  # a search whose first try had failed may prime here

    def is_primed(self, search: SavedSearch) -> bool:
        """Whether the search's first, silent run is complete (with its current filters)."""
        state = self.store.search_state(search)
        return state is not None and state.primed

    # -- events: read the job, judge it locally, or owe the query a new answer ---

    def resolve_events(self) -> None:
        """Read each changed job and decide which queries it touches."""
        if not self.primed:
            self.store.set_events(self.owner, {})  # the priming fetches cover everything
            return
        events = self.store.events_of(self.owner)
        for job_id in plan.plan_reads(events):
            if not self.can_ask():
                break
            event = events[job_id]
            now = self.clock()
            try:
                job = self.client.job(job_id)
            except ApiDataError as exc:
                self.report.skipped_jobs += 1
                log.warning("skipped a job the API sent: %s", exc)
                del events[job_id]
                continue
            except StopRequestedError:
                raise
            except Exception as exc:  # an ApiError, or anything else: this job, this cycle
                if not isinstance(exc, ApiError):
                    log.exception("reading job %s failed unexpectedly", job_id)
                if plan.should_give_up(event, now):
                    log.warning(
                        "job %s unreadable for an hour (%s); left to the refresh", job_id, exc
                    )
                    del events[job_id]
                else:
                    log.warning("could not read job %s: %s; asking again next cycle", job_id, exc)
                continue
            self.report.jobs_read += 1
            try:
                if self.resolve(event, job, now):
                    del events[job_id]
            except Exception:  # one odd job or event is that job's problem, not the cycle's
                log.exception("job %s could not be judged; asking again next cycle", job_id)
        self.store.set_events(self.owner, events)

    def resolve(self, event: Event, job: Job | None, now: datetime) -> bool:
        """Act on one read job; False when the answer is older than the event (ask again)."""
        if job is None or not is_open(job, now):
            self.close_jobs({event.job_id: max(event.occurred_at, now)}, now)
            return True
        if not plan.is_fresh(job, event, now):
            return False
        reopened = event.job_id in self.store.closed
        if reopened:  # open again since it closed
            self.store.set_closed({k: v for k, v in self.store.closed.items() if k != job.id})
        self.store.refresh_owed([job])
        self.store.release([job.id])
        # Only the queries that may list the job: the others' exact filters rule it out.
        candidates = self.index.candidates(job)
        if reopened and len(candidates) < len(self.queries):
            self.reopened.add(job.id)  # a query not listing it: its owed page will say
        for query in candidates:
            verdict = plan.judge(job, query.query)
            if verdict is Verdict.MATCH:  # listed: a raise or a reopening counts now
                for search in query.searches:
                    if search.also and search.name in self.primed and passes(job, search.filters):
                        self.owe_changes(search, job, now, reopened)
            elif reopened:  # the page the query owes will say whether it lists it
                self.reopened.add(job.id)
            if verdict is Verdict.MATCH:
                for search in query.searches:
                    if search.name in self.primed:
                        self.record(search, [job], now)
            elif verdict is Verdict.ASK:
                state = self.store.queries_of(self.owner).get(query.key)
                owed = plan.owe_answer(state, event.occurred_at)
                self.store.set_query(self.owner, query.key, owed)
        return True

    @functools.cached_property
    def index(self) -> plan.QueryIndex:
        """The queries by their exact filters (built when a changed job is first judged)."""
        return plan.QueryIndex(self.queries)

    def ask_owed_queries(self) -> None:
        """Queries an event may have changed, asked until a page answers for the event:
        the longest owed first, so a tight budget goes round them all."""
        for key in plan.plan_owed(self.store.queries_of(self.owner)):
            if key in self.queries:
                self.ask(self.queries[key])

    def refresh_share(self) -> None:
        """This cycle's share of asking every query whole again, which heals any miss."""
        states = {key: self.store.queries_of(self.owner).get(key) for key in self.queries}
        every, poll = self.config.refresh_interval, self.config.poll_interval
        for key in plan.plan_refresh(states, self.clock(), every, poll):
            if not plan.is_refresh_due(states[key], self.clock(), every):
                continue
            self.ask(self.queries[key])

    def forget(self) -> None:
        """Drop the state of searches and queries their providers no longer have (each
        owner forgets only its own), and seen ids of jobs closed for longer than any page
        can show them."""
        for owner, names in self.subs.owners.items():
            self.store.forget_searches_except(names, owner)
        self.store.forget_queries_except(self.owner, self.queries)
        gone = plan.forgettable(self.store.closed, self.clock())
        if gone:
            self.store.forget_seen(gone)
            self.store.set_closed({k: v for k, v in self.store.closed.items() if k not in gone})


class Turns(dict[str, float]):
    """When each target may be sent its next message (``time.monotonic``), and which
    target's turn comes first: the soonest, a target not sent to yet before any other,
    in the order the targets were queued. A heap, so thousands of targets in a cycle
    cost a logarithm each, not a scan of every target per message."""

    def __init__(self) -> None:
        super().__init__()
        self.heap: list[tuple[float, int, str]] = []
        self.count = 0

    def __setitem__(self, key: str, at: float) -> None:
        super().__setitem__(key, at)
        self.push(key, at)

    def push(self, key: str, at: float) -> None:
        self.count += 1
        heapq.heappush(self.heap, (at, self.count, key))

    def soonest(self, queued: Mapping[str, object]) -> str:
        """The queued target whose turn is next (``queued`` must not be empty)."""
        if not self.heap:
            for key in queued:
                if key not in self:
                    self.push(key, 0.0)
        while True:
            at, _count, key = self.heap[0]
            if key in queued and at == self.get(key, 0.0):
                return key
            heapq.heappop(self.heap)  # a target done with, or an older turn of it


def deliver_due(
    config: Config,
    targets: dict[str, Target],
    store: Store,
    send: Sender,
    clock: Clock,
    report: CycleReport,
    stop: threading.Event,
    spent: dict[str, int] | None = None,
    subscriptions: Subscriptions | None = None,
) -> None:
    """Send every owed alert that is due; a target that fails is left for a later cycle.

    ``spent`` counts the messages each target got this cycle, across the cycle's
    deliveries (updated here): the per-target cap is per cycle, and a target that
    failed gets nothing more until the next one."""
    spent = {} if spent is None else spent
    now = clock()
    store.release(plan.overdue_holds(store.owed.values(), now))
    store.retry_fixed_targets({key: url_digest(t) for key, t in targets.items()}, now)
    subs = subscriptions or Subscriptions.gather(
        [of_config(config.searches, config.owner, page_url(config))]
    )
    for search in subs.searches:
        moved = store.retarget(search, targets, now)
        if moved:
            log.info("search '%s': %d owed alerts go to its new URL", search.name, moved)
    paces = {key: target.pace for key, target in targets.items()}
    if subs.claims:
        names = {s.name for s in subs.searches}
        orphans = [
            row.key
            for row in store.owed_rows()
            if subs.claimed(row.target) and names.isdisjoint(row.searches)
        ]
        report.withdrawn += store.withdraw_rows(orphans, UNSUBSCRIBED, now)
    due = store.due(now, targets)
    if subs.cappers:
        due, waiting = within_caps(due, subs, store, now)
        report.capped = len(waiting)
        report.capped_targets.update(a.target_key for a in waiting)
    messages, expired = plan.plan_messages(due, paces, now, config.tz, spent=spent)
    for alert in expired:
        store.withdraw([alert.job.id], "the job expired before it could be delivered", now)
        report.withdrawn += 1
    queues: dict[str, deque[list[Alert]]] = {}
    # People waiting on a service go first; feeds are read when their reader polls, so
    # one job for 10,000 members reaches every inbox before it is written to any feed.
    for alerts in sorted(messages, key=lambda m: m[0].target_key.startswith(FEED_PREFIX)):
        queues.setdefault(alerts[0].target_key, deque()).append(alerts)
    try:
        send_queued(config, targets, store, send, clock, report, stop, spent, queues, subs)
    finally:
        store.sync_journal()  # the last outcomes on disk before the cycle goes on


def send_queued(
    config: Config,
    targets: dict[str, Target],
    store: Store,
    send: Sender,
    clock: Clock,
    report: CycleReport,
    stop: threading.Event,
    spent: dict[str, int],
    queues: dict[str, deque[list[Alert]]],
    subs: Subscriptions,
) -> None:
    """Send each target's queued messages. Each target at its service's pace, the
    targets interleaved: a Telegram chat's one message a second never holds up a
    webhook. Members' chats with the community bot are sent to several at a time
    (``PARALLEL_SENDS``; the bot's pacer keeps Telegram's limits): one at a time, each
    send's round trip to Telegram would cap a fan-out far below its 30 a second. Every
    other target is sent to one message at a time beside them, never behind the chats:
    a fan-out to 10,000 chats takes Telegram's 333 s, and the operator's channel, a
    member's mail or feed do not wait for it; nor do the chats wait for a webhook that
    is slow to answer. The store is only ever touched from this thread; a target has
    one message in flight."""
    titles = subs.titles()

    def take(lane: Lane, key: str) -> tuple[Target, list[Alert], Message] | None:
        """The next message to ``key``, marked sending; None if no alert of it is wanted."""
        alerts = lane.queues[key].popleft()
        target = targets[key]
        if subs.claimed(key):  # a member's: they may have left a search
            alerts, links = still_wanted(key, alerts, subs, store, clock, report)
        else:
            links = subs.links(key, alerts[0].searches) if subs.linkers else None
        if not alerts:
            _requeue(lane.queues, lane.ready, key, lane.queues.pop(key), 0.0)
            return None
        everything = None  # a member's summary links to their feed (``links``)
        if links is None and len(alerts) > 1 and subs.everywhere:
            # Only a search every alert matched has a feed holding them all.
            everything = subs.everything(
                [n for n in alerts[0].searches if all(n in a.searches for a in alerts)]
            )
        message = start_message(config, alerts, store, clock, titles, links, everything)
        return target, alerts, message

    def record(lane: Lane, future: Future[Outcome]) -> None:
        key, target, alerts, rest = lane.flying.pop(future)
        _sent(config, store, clock, report, spent, lane.queues, lane.ready, key,
              target, alerts, rest, _outcome_of(future))  # fmt: skip

    with (
        ThreadPoolExecutor(PARALLEL_SENDS, thread_name_prefix="send") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="send-other") as one,
    ):
        # Members' chats, several in flight; every other target, one message at a time
        # on a thread of its own: one slow to answer holds up neither the chats nor this
        # thread.
        chats, others = Lane(pool, PARALLEL_SENDS), Lane(one, 1)
        lanes = (chats, others)
        for key, queued in queues.items():
            (chats if is_parallel(targets[key]) else others).queues[key] = queued
        try:
            while any(lane.queues or lane.flying for lane in lanes):
                for lane in lanes:
                    for future in [f for f in lane.flying if f.done()]:
                        record(lane, future)
                going = not stop.is_set()
                now = time.monotonic()
                turns = []  # seconds to each lane's next turn, if it has room then
                for lane in lanes:
                    turn = lane.soonest(now)  # (key, seconds to its turn)
                    while going and turn and turn[1] <= 0 and lane.has_room():
                        taken = take(lane, turn[0])
                        if taken is not None:
                            target, alerts, message = taken
                            rest = lane.queues.pop(turn[0])  # back in its turn when done
                            future = lane.pool.submit(send, target, message)
                            lane.flying[future] = (turn[0], target, alerts, rest)
                        turn = lane.soonest(now)
                    if turn and lane.has_room():
                        turns.append(turn[1])
                # Nothing more to send now: a send to end, or the next turn (None: none).
                wait = min(turns) if turns and going else None
                if wait is not None and wait > 0:
                    store.sync_journal()  # no outcome waits out a pause unsynced
                flying = [f for lane in lanes for f in lane.flying]
                if flying:  # a send to end (all, when stopping), or the next turn
                    wait_futures(flying, wait, return_when=FIRST_COMPLETED)
                    continue
                if not going or wait is None or stop.wait(wait):
                    report.stopped = not going or stop.is_set()
                    return
        finally:
            for lane in lanes:  # a stop: what went out is recorded all the same
                for future in list(lane.flying):
                    record(lane, future)
    if stop.is_set() and any(lane.queues for lane in lanes):
        report.stopped = True


@dataclass
class Lane:
    """Targets sent to one way (``pool``, at most ``room`` messages in flight): what
    each still has queued, when its next turn comes, and the sends in flight."""

    pool: ThreadPoolExecutor
    room: int
    queues: dict[str, deque[list[Alert]]] = field(default_factory=dict)
    ready: Turns = field(default_factory=Turns)
    flying: dict[Future[Outcome], tuple[str, Target, list[Alert], deque[list[Alert]]]] = field(
        default_factory=dict
    )

    def has_room(self) -> bool:
        """Whether another message may go in flight."""
        return len(self.flying) < self.room

    def soonest(self, now: float) -> tuple[str, float] | None:
        """The target whose turn is next and how many seconds until it (None: none)."""
        if not self.queues:
            return None
        key = self.ready.soonest(self.queues)
        return key, self.ready.get(key, 0.0) - now


def _outcome_of(future: Future[Outcome]) -> Outcome:
    """A send's outcome (a sender that raised is a failed send, not a crash; its
    traceback is logged, secrets masked, as a bug of alertd's)."""
    try:
        return future.result()
    except Exception as exc:
        log.error("a send failed unexpectedly (a bug in alertd); it is retried", exc_info=exc)
        return Outcome(False, f"{type(exc).__name__}")


def _requeue(
    queues: dict[str, deque[list[Alert]]],
    ready: Turns,
    key: str,
    rest: deque[list[Alert]],
    gap: float,
) -> None:
    if rest:
        queues[key] = rest
    ready[key] = time.monotonic() + gap


def _sent(
    config: Config,
    store: Store,
    clock: Clock,
    report: CycleReport,
    spent: dict[str, int],
    queues: dict[str, deque[list[Alert]]],
    ready: Turns,
    key: str,
    target: Target,
    alerts: list[Alert],
    rest: deque[list[Alert]],
    outcome: Outcome,
) -> None:
    """Record a message's outcome and give its target its next turn (none if it is down:
    the rest wait for a later cycle)."""
    finish_message(config, target, alerts, store, clock, report, outcome)
    spent[key] = spent.get(key, 0) + 1
    if not outcome.accepted and not outcome.refused_message:
        rest = deque()
        spent[key] = plan.MAX_ALERTS_PER_TARGET
    _requeue(queues, ready, key, rest, SERVICE_GAP.get(channel_for(target.url), 0.0))


# Members' chats with the community bot (alertd.telegram) are sent to in parallel, so a
# round trip to Telegram does not cap a fan-out; the bot's one pacer keeps the limits.
PARALLEL_SCHEMES = ("alertd-telegram://",)
PARALLEL_SENDS = 8


def is_parallel(target: Target) -> bool:
    """Whether ``target``'s messages may be in flight beside other targets'."""
    return (target.url or "").startswith(PARALLEL_SCHEMES)


UNSUBSCRIBED = "its member unsubscribed (or paused the search)"


def still_wanted(
    key: str,
    alerts: list[Alert],
    subs: Subscriptions,
    store: Store,
    clock: Clock,
    report: CycleReport,
) -> tuple[list[Alert], Links | None]:
    """The alerts of a message to a member's ``key`` whose searches the member still
    wants, asked at the moment of sending, and the first one's links; the others are
    withdrawn. A member may leave a search while the cycle runs: a summary must not list
    its jobs because another of their searches is still wanted."""
    kept: list[Alert] = []
    gone: list[tuple[str, str]] = []
    first: Links | None = None
    for alert in alerts:
        links = subs.links(key, alert.searches)
        if links is None:
            gone.append((alert.target_key, alert.job.id))
        else:
            kept.append(alert)
            first = first or links
    if gone:
        report.withdrawn += store.withdraw_rows(gone, UNSUBSCRIBED, clock())
    return kept, first


def within_caps(
    due: list[Alert], subs: Subscriptions, store: Store, now: datetime
) -> tuple[list[Alert], list[Alert]]:
    """``due`` without what would take a capped group (a member) past its alerts in the
    last day, oldest first; and how many wait. Those stay owed and go out as the day
    rolls on: a cap slows a member's mail, it loses nothing (their feed has it all)."""
    caps = {a.target_key: cap for a in due if (cap := subs.cap(a.target_key)) is not None}
    if not caps:
        return due, []
    groups: dict[str, int] = {}
    for key, count in store.sent_since(caps.keys(), now - timedelta(days=1)).items():
        group = caps[key][0]
        groups[group] = groups.get(group, 0) + count
    kept: list[Alert] = []
    waiting: list[Alert] = []
    for alert in due:
        cap = caps.get(alert.target_key)
        if cap is not None:
            group, limit = cap
            if groups.get(group, 0) >= limit:
                waiting.append(alert)
                continue
            groups[group] = groups.get(group, 0) + 1
        kept.append(alert)
    return kept, waiting


# Seconds between two messages to one target, as each service tolerates a burst:
# Telegram about one a second per chat, Slack one a second, a Discord webhook 5 per 2 s.
SERVICE_GAP = {Channel.TELEGRAM: 1.0, Channel.SLACK: 1.0, Channel.DISCORD: 0.5}


def send_message(
    config: Config,
    target: Target,
    alerts: list[Alert],
    store: Store,
    send: Sender,
    clock: Clock,
    report: CycleReport,
    titles: Mapping[str, str] | None = None,
    links: Links | None = None,
    everything: str | None = None,
) -> Outcome:
    """One message to ``target`` for these alerts (one job, or a list); what it did.
    ``titles``: searches' names as a person reads them, where not their ids; ``links``:
    a member's manage and unsubscribe links; ``everything``: where all of a summary's
    jobs can be read (a member's feed, an operator search's public feed)."""
    message = start_message(config, alerts, store, clock, titles, links, everything)
    return finish_message(config, target, alerts, store, clock, report, send(target, message))


def start_message(
    config: Config,
    alerts: list[Alert],
    store: Store,
    clock: Clock,
    titles: Mapping[str, str] | None = None,
    links: Links | None = None,
    everything: str | None = None,
) -> Message:
    """The message for these alerts, marked "sending" in the store before it goes."""
    shown = titles or {}
    items = tuple(
        Item(a.job, tuple(shown.get(n, n) for n in a.searches), a.change, a.old_pay) for a in alerts
    )
    heading = None
    if len(alerts) > 1:
        oldest = min(a.created_at or clock() for a in alerts)
        since = oldest.astimezone(config.tz).strftime("%H:%M")
        kind = "new OpenTrain jobs" if all(a.change is None for a in alerts) else "OpenTrain jobs"
        heading = f"{len(alerts)} {kind} since {since}"
    store.mark_sending_all(alerts, clock())
    return Message(items, heading=heading, links=links, everything=everything)


def finish_message(
    config: Config,
    target: Target,
    alerts: list[Alert],
    store: Store,
    clock: Clock,
    report: CycleReport,
    outcome: Outcome,
) -> Outcome:
    """Record what ``target`` did with the message for these alerts; the outcome."""
    if outcome.accepted:
        store.mark_sent_all(alerts, clock())
        report.sent += len(alerts)
        return outcome
    if outcome.unsent:
        store.mark_unsent_all(alerts, clock())
        return outcome
    report.failed_sends += 1
    report.unknown_sends += outcome.unknown
    attempts = alerts[0].attempts + 1
    # A send that may have arrived waits the longest step: a slow target is not sent
    # the same alert again every minute. A permanent refusal waits longer still; a
    # service that asks for a pause (429) gets what it asked for.
    if outcome.retry_after is not None:
        delay = outcome.retry_after
    elif outcome.unknown:
        delay = config.retry_schedule[-1]
    else:
        delay = plan.retry_delay(config.retry_schedule, attempts, outcome.permanent)
    retry_at = clock() + timedelta(seconds=delay)
    refused_by = url_digest(target) if outcome.permanent else None
    for alert in alerts:
        store.mark_failed(alert, outcome.error or "not accepted", retry_at, refused_by)
    jobs = alerts[0].job.id if len(alerts) == 1 else f"{len(alerts)} jobs"
    level = logging.ERROR if outcome.permanent else logging.WARNING
    log.log(
        level,
        "%s did not accept %s%s (attempt %d): %s; will retry at %s%s",
        target.label,
        "job " if len(alerts) == 1 else "",
        jobs,
        attempts,
        outcome.error,
        retry_at.astimezone(config.tz).strftime("%H:%M:%S %Z"),
        " — check this target's URL and credentials" if outcome.permanent else "",
    )
    return outcome


def url_digest(target: Target) -> str:
    """What tells a target's URL changed, without keeping the URL (it holds secrets)."""
    return hashlib.sha256((target.url or "").encode()).hexdigest()[:16]


def in_cycle_delays(poll_interval: float) -> tuple[float, ...]:
    """The API client's back-off within a cycle: never more than a tenth of the poll
    interval a step (the next cycle is the real retry)."""
    return tuple(min(delay, poll_interval / 10) for delay in RETRY_DELAYS)


def make_client(
    config: Config, stop: threading.Event | None = None, window: Window | None = None
) -> OpenTrainClient:
    """The API client for ``config``, counting its requests in ``window``: by default the
    one every alertd process using ``config.state_dir`` shares.

    Back-off within a cycle never takes more than a tenth of the poll interval per step:
    the next cycle is the real retry, and a cycle must not overrun its own schedule. A
    query whose answers keep spending their whole deadline skips cycles, from one poll
    interval on, doubling.
    """
    delays = in_cycle_delays(config.poll_interval)
    return OpenTrainClient(
        config.api_url,
        requests_per_minute=config.requests_per_minute,
        deadline=config.request_timeout,
        max_body=int(config.max_response_mb * 1_000_000),
        retry_delays=delays,
        stop=stop,
        limit_backoff=config.poll_interval,
        window=window or open_window(config.state_dir, config.request_timeout),
    )


def page_url(config: Config) -> str | None:
    """The community page's public address, where public feeds are; None without one."""
    return config.community.public_url if config.community is not None else None


def all_targets(searches: Iterable[SavedSearch]) -> dict[str, Target]:
    """Every target the searches deliver to, by key."""
    return {t.key: t for s in searches for t in s.targets}


def run_once(
    config: Config,
    client: OpenTrainClient,
    store: Store,
    send: Sender,
    *,
    clock: Clock = utc_now,
    stop: threading.Event | None = None,
    retry_refused: bool = False,
    subscriptions: Subscriptions | None = None,
) -> CycleReport:
    """One full cycle. Never raises for a failing search, target or disk: it reports them.

    ``retry_refused``: targets that refused for good are tried in this cycle, not after
    their long back-off (the daemon's first cycle, and the first after a SIGHUP).
    ``subscriptions``: the saved searches to serve (``alertd.subscriptions``); by
    default the config's own.
    """
    store.recover_interrupted()  # a send the last cycle could not finish is owed again
    cycle = Cycle(config, client, store, clock, stop or threading.Event(), subscriptions)
    report = cycle.report
    targets = cycle.subs.targets()
    if retry_refused and (tried := store.retry_refused(targets, clock())):
        log.info("%d alerts refused for good are tried again now (start or reload)", tried)
    spent: dict[str, int] = {}  # messages per target this cycle, over its deliveries
    progress: list[tuple[int, int]] = []  # (new matches, queries asked) at each delivery

    def deliver_ready(feed_ok: bool) -> None:
        now = (report.new_jobs, len(cycle.asked))
        if progress and progress[-1] == now:
            return  # nothing found or asked since the last delivery
        progress.append(now)
        # Every owed row is on disk before anything is sent; the seen ids, queries and
        # feed position wait for the cycle's end (one searches.json write a cycle).
        store.commit_owed()
        if report.stopped:
            return
        if not feed_ok:
            report.held = True  # without the feed we cannot tell a closed job from an open one
            return
        deliver_due(config, targets, store, send, clock, report, cycle.stop, spent, cycle.subs)

    client.retry_until = cycle.ask_until
    try:
        feed_ok = cycle.read_feed()
        # The ask window counts from the feed's answer: a wait for the budget (other
        # alertd processes spent it, or its file counts as full for a minute) is not
        # time a slow query took, and must not leave a changed job unread.
        cycle.ask_until = time.monotonic() + cycle.window
        client.retry_until = cycle.ask_until
        # What the feed settled (changed jobs read and judged, closures withdrawn) and
        # what was owed before goes out first: no query, however slow, holds it up.
        cycle.resolve_events()
        deliver_ready(feed_ok)
        # Then the refresh's small share (a floor, so it always advances), the queries
        # the changes owe; a first start or a reload with many new searches primes them
        # with what budget and time are left, over cycles; last the queries whose last
        # try failed. What each step found goes out before the next step, which may be
        # a query's first try or a broken one's, costing its whole deadline.
        steps = (
            cycle.refresh_share,
            cycle.ask_owed_queries,
            cycle.prime_new_searches,
            cycle.ask_failing,
        )
        for step in steps:
            if not report.stopped:
                step()
                deliver_ready(feed_ok)
        if not report.stopped:
            cycle.forget()
        store.prune(clock(), KEEP_DONE)
        store.commit()
    except StopRequestedError:
        report.stopped = True
        with contextlib.suppress(StoreError):
            store.commit()
    except StoreError as exc:
        report.error = str(exc)
        log.error("%s", exc)
    except (AlertdError, Exception) as exc:  # the one catch-all: a cycle never kills the daemon
        report.error = f"{type(exc).__name__}: {exc}"
        log.exception("cycle failed unexpectedly; the next cycle will try again")
    finally:
        client.retry_until = None
        client.forget_listings()
    report.requests = client.requests_sent - cycle.first_request
    report.owed, report.held_rows = store.count_owed(targets)
    # Owed since it should have gone out: a digest's alerts wait for its hour, a capped
    # member's for their day to roll on: neither is late.
    report.oldest_owed = min(
        (
            plan.release_at(targets[key].pace, since, config.tz)
            for key, since in store.oldest_owed(targets).items()
            if key not in report.capped_targets
        ),
        default=None,
    )
    # Channel names only: an inline URL's label may still hold a path token.
    report.refusing = sorted(
        targets[k].label if k.startswith("channel:") else k for k in store.refusing_targets(targets)
    )
    report.waiting = len(store.events_of(cycle.owner))
    return report
