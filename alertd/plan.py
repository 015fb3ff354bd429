"""The cycle's decisions, as pure functions of values and ``now``.

``pipeline`` fetches, asks these functions what to do, and applies the answers; nothing
here does I/O or reads the clock, so every promise the README makes about what is
asked, primed, held, withdrawn, retried and sent has a fast test of its own.

The rule that cannot bend: deciding from the change feed which queries to ask again
must never miss an alert that asking every query would have sent. So a job is judged
locally only where the API's meaning is exact (``category``, ``language``, ``country``,
``payType``); free text (``q``), a field the job does not show, or a value that differs
only in case is left to the API.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from alertd.models import (
    Alert,
    Event,
    EventKind,
    Job,
    OutboxRow,
    Pace,
    QueryState,
    SavedSearch,
)

MAX_ALERTS_PER_TARGET = 20  # per cycle: the rest stay owed for the next cycle
# s-maxage=300 plus one stale answer while it revalidates: after this long, asking every
# cycle cannot still get an answer from before an edit. Also bounds any hold.
HOLD_BOUND = timedelta(minutes=10)
# A page from the edge cache may be 5 min fresh + 1 h stale: a closed job can show that
# long after it closed. Past it, its id is forgotten by every search.
CACHE_HORIZON = timedelta(minutes=65)
# An event whose job cannot be read for this long is dropped; the full refresh heals it.
EVENT_GIVE_UP = timedelta(hours=1)
EDIT_SLACK = timedelta(seconds=1)  # the API stamps a job and its event separately
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # before OpenTrain: a placeholder, not a time


@dataclass(frozen=True)
class Query:
    """One distinct question for ``GET /jobs``, and every saved search that asks it."""

    key: str
    params: tuple[tuple[str, str], ...]
    searches: tuple[SavedSearch, ...]

    @property
    def query(self) -> dict[str, str]:
        """The query parameters, as ``OpenTrainClient.search_jobs`` takes them."""
        return dict(self.params)


def query_key(search: SavedSearch) -> str:
    """Searches with the same API parameters share this key, and so one fetch."""
    return search.query_key()


def group_queries(searches: Iterable[SavedSearch]) -> dict[str, Query]:
    """The distinct queries of ``searches``, in the order they first appear."""
    grouped: dict[str, list[SavedSearch]] = {}
    for search in searches:
        grouped.setdefault(query_key(search), []).append(search)
    return {
        key: Query(key, tuple(sorted(group[0].query().items())), tuple(group))
        for key, group in grouped.items()
    }


class Verdict(enum.Enum):
    """What can be said locally about whether a query lists a job."""

    MATCH = "match"  # every filter is exact and the job meets it
    NO_MATCH = "no match"  # an exact filter proves it is not listed
    ASK = "ask"  # only the API can tell (free text, a field missing, case differs)


def _compare(wanted: str, have: Sequence[str]) -> Verdict:
    if wanted in have:
        return Verdict.MATCH
    if wanted.casefold() in {value.casefold() for value in have}:
        return Verdict.ASK
    return Verdict.NO_MATCH


# The API's filters whose meaning is exact: a job can be judged against them locally.
EXACT_FILTERS = ("category", "language", "country", "payType")


def _shown(job: Job, name: str) -> tuple[str, ...] | None:
    """What ``job`` shows for the exact filter ``name``; None when it shows nothing we can
    read (the API decides). ``country`` on a job open to every country is the caller's."""
    if name == "category":
        return (job.category,) if job.category else None
    if name == "language":
        return job.languages or None
    if name == "country":
        return job.countries or None
    paid = job.pay.payment_type if job.pay else None
    return (paid,) if paid else None


def _is_open_to_all(job: Job, name: str) -> bool:
    """A job with empty ``countries`` is open to everyone: a country filter passes it."""
    return name == "country" and job.countries == ()


def judge(job: Job, query: Mapping[str, str]) -> Verdict:
    """Whether ``GET /jobs`` with ``query`` lists the open ``job``, as far as we can prove.

    ``country`` follows the contract: a job with empty ``countries`` is open to everyone.
    A filter on a field the job does not show (null, or a shape we could not read) is
    the API's to decide, never a local "no" nor a local "yes".
    """
    verdicts: list[Verdict] = []
    for name in EXACT_FILTERS:
        wanted = query.get(name)
        if not wanted or _is_open_to_all(job, name):
            continue
        have = _shown(job, name)
        verdicts.append(_compare(wanted, have) if have else Verdict.ASK)
    if Verdict.NO_MATCH in verdicts:
        return Verdict.NO_MATCH
    if query.get("q") or Verdict.ASK in verdicts:
        return Verdict.ASK
    return Verdict.MATCH


class QueryIndex:
    """The distinct queries by the values of their exact filters, so that a changed job
    is judged only against the queries that may list it, not against every query.

    ``candidates(job)`` leaves out exactly the queries that ``judge`` would rule out with
    ``NO_MATCH``: an exact filter whose value the job does not show in any case. Values
    are indexed case-folded, so a value that differs only in case stays a candidate
    (``judge`` then leaves it to the API).
    """

    def __init__(self, queries: Mapping[str, Query]) -> None:
        self.queries = queries
        self.order = {key: position for position, key in enumerate(queries)}
        self.unfiltered: dict[str, frozenset[str]] = {}
        self.by_value: dict[str, dict[str, frozenset[str]]] = {}
        for name in EXACT_FILTERS:
            without: set[str] = set()
            values: dict[str, set[str]] = {}
            for key, query in queries.items():
                wanted = dict(query.params).get(name)
                if wanted:
                    values.setdefault(wanted.casefold(), set()).add(key)
                else:
                    without.add(key)
            self.unfiltered[name] = frozenset(without)
            self.by_value[name] = {value: frozenset(keys) for value, keys in values.items()}

    def candidates(self, job: Job) -> list[Query]:
        """The queries that may list ``job``, in the order of ``queries``."""
        allowed: list[set[str]] = []
        for name in EXACT_FILTERS:
            have = None if _is_open_to_all(job, name) else _shown(job, name)
            if have is None:
                continue  # this filter rules no query out for this job
            keys = set(self.unfiltered[name])
            for value in have:
                keys |= self.by_value[name].get(value.casefold(), frozenset())
            allowed.append(keys)
        if not allowed:
            return list(self.queries.values())
        found = set.intersection(*allowed)
        return [self.queries[key] for key in sorted(found, key=self.order.__getitem__)]


# -- the change feed ----------------------------------------------------------


def merge_events(
    pending: Mapping[str, Event], changes: Mapping[str, tuple[str, datetime | None]], now: datetime
) -> tuple[dict[str, Event], dict[str, datetime]]:
    """Fold what the feed said into the unresolved events: (still to resolve, closed now).

    Only a job's latest event matters (the feed keeps only that too). A closure resolves
    the job at once; a publication or an edit waits to be read.
    """
    events = dict(pending)
    closed: dict[str, datetime] = {}
    for job_id, (kind, at) in changes.items():
        # A time that cannot be right (none, year 1, days ahead) is taken as now.
        when = at if at is not None and EARLIEST <= at <= now + timedelta(days=1) else now
        if kind == EventKind.CLOSED:
            events.pop(job_id, None)
            closed[job_id] = when
            continue
        if kind not in (EventKind.PUBLISHED, EventKind.UPDATED):
            continue  # an event type this version does not know: the full refresh covers it
        earlier = events.get(job_id)
        if earlier is not None and earlier.occurred_at >= when:
            continue
        noticed = earlier.noticed_at if earlier is not None else now
        events[job_id] = Event(job_id, kind, when, noticed)
    return events, closed


def edited_jobs(changes: Mapping[str, tuple[str, datetime | None]]) -> set[str]:
    """Jobs edited since the last read: the feed shows a job closed and then edited only
    as edited, so an owed alert for one waits until the job is confirmed open."""
    return {job_id for job_id, (kind, _at) in changes.items() if kind == EventKind.UPDATED}


def is_fresh(job: Job, event: Event, now: datetime) -> bool:
    """Whether an answer about ``job`` shows it as of ``event`` (or can no longer wait).

    A cached answer from before the event is not, nor is an edited job's answer without
    ``updatedAt``; after ``HOLD_BOUND`` any answer is taken, so nothing waits forever on
    an API that never bumps ``updatedAt``.
    """
    if now - event.noticed_at > HOLD_BOUND:
        return True
    if job.updated_at is None:  # cannot tell; only a new job's URL cannot be cached yet
        return event.kind == EventKind.PUBLISHED
    return job.updated_at >= event.occurred_at - EDIT_SLACK


def should_give_up(event: Event, now: datetime) -> bool:
    """An event whose job could not be read for ``EVENT_GIVE_UP`` is left to the refresh."""
    return now - event.noticed_at > EVENT_GIVE_UP


def plan_reads(events: Mapping[str, Event]) -> list[str]:
    """Which jobs to read, oldest event first (the budget decides how many)."""
    return [e.job_id for e in sorted(events.values(), key=lambda e: (e.noticed_at, e.job_id))]


def forgettable(closed: Mapping[str, datetime], now: datetime) -> list[str]:
    """Closed jobs no page can show any more: their ids can leave every seen set."""
    return [job_id for job_id, at in closed.items() if now - at > CACHE_HORIZON]


def is_listed_stale(
    job_id: str, closed: Mapping[str, datetime], generated: datetime | None
) -> bool:
    """A page generated before (or when) the job closed still lists it: ignore it there."""
    at = closed.get(job_id)
    return at is not None and (generated is None or generated <= at)


# -- priming --------------------------------------------------------------------


def split_priming(
    jobs: Sequence[Job], since: datetime, generated_at: datetime | None
) -> tuple[list[Job], list[Job]] | None:
    """A priming search's page as (record silently, alert): None while the page predates
    the search (the edge cache), when everything on it is recorded silently and the
    search keeps priming. Jobs posted since the search began are the ones to alert."""
    if generated_at is not None and generated_at < since:
        return None
    later = [job for job in jobs if job.date_posted is not None and job.date_posted >= since]
    return [job for job in jobs if job not in later], later


def priming_start(api_now: datetime | None, now: datetime) -> datetime:
    """When a new search begins: by the API's clock when known, at the API's precision."""
    start = api_now or now
    return start.replace(microsecond=start.microsecond // 1000 * 1000)


# -- what to ask this cycle -----------------------------------------------------


def cycle_budget(requests_per_minute: int, poll_interval: float) -> int:
    """Requests one cycle may spend: a poll interval's share, and never less than a
    minute's worth (a cycle then overruns its interval rather than starve)."""
    return max(requests_per_minute, math.floor(requests_per_minute * poll_interval / 60))


# A cycle asks nothing new after this long, however short its poll interval: each cycle
# pays one feed read, so a tiny interval must still leave a cycle room for its queries.
MIN_ASK_WINDOW = 10.0


def ask_window(poll_interval: float) -> float:
    """Seconds into a cycle after which it starts no request (nor a retry): by then the
    next cycle is due, and its first delivery pass must not wait on queries. A request
    already on its way ends within ``request_timeout``, so a cycle's queries are over
    within ``ask_window + request_timeout``; what was not asked stays owed."""
    return max(poll_interval, MIN_ASK_WINDOW)


def is_refresh_due(state: QueryState | None, now: datetime, every: float) -> bool:
    """Whether a query's last whole fetch is older than the refresh interval."""
    if state is None or state.fetched_at is None:
        return True
    return now - state.fetched_at >= timedelta(seconds=every)


def plan_refresh(
    queries: Mapping[str, QueryState | None], now: datetime, every: float, poll_interval: float
) -> list[str]:
    """The queries to fetch whole this cycle, oldest first: an even share of those due,
    so a full refresh is spread over ``every`` instead of landing in one cycle."""
    due = [k for k, state in queries.items() if is_refresh_due(state, now, every)]
    epoch = datetime.min.replace(tzinfo=now.tzinfo)
    due.sort(key=lambda k: (getattr(queries[k], "fetched_at", None) or epoch, k))
    share = math.ceil(len(queries) * poll_interval / every) if every > 0 else len(queries)
    return due[: max(1, share)]


def answers(state: QueryState, generated_at: datetime | None) -> QueryState:
    """A query's state after a whole fetch whose pages were generated at ``generated_at``."""
    owed = state.owed_since
    if owed is not None and generated_at is not None and generated_at >= owed:
        owed = None
    fetched = generated_at or state.fetched_at
    return dataclasses.replace(state, fetched_at=fetched, owed_since=owed, failed_at=None)


def plan_owed(queries: Mapping[str, QueryState]) -> list[str]:
    """Queries that owe an answer, the one asked longest ago first: when the budget
    cannot ask them all in one cycle, it goes round them all over the next ones."""
    never = datetime.min.replace(tzinfo=UTC)
    owed = [(q.fetched_at or never, k) for k, q in queries.items() if q.owed_since is not None]
    return [key for _asked, key in sorted(owed)]


def owe_answer(state: QueryState | None, occurred_at: datetime) -> QueryState:
    """A query must be asked again, by a page generated at or after ``occurred_at``."""
    state = state or QueryState()
    owed = state.owed_since
    return dataclasses.replace(
        state, owed_since=occurred_at if owed is None else max(owed, occurred_at)
    )


def describe_capacity(
    queries: int, requests_per_minute: int, refresh_every: float
) -> tuple[str, bool]:
    """(a sentence on how long asking every query once takes, whether that is too slow)."""
    minutes = queries / requests_per_minute
    took = f"{minutes:.0f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"
    text = (
        f"{queries:,} distinct queries at {requests_per_minute}/min: "
        f"a full refresh (and a first start) takes {took}"
    )
    too_slow = minutes * 60 > refresh_every
    if too_slow:
        text += (
            f", longer than refresh_interval ({refresh_every / 60:.0f} min); "
            "it will run continuously — raise refresh_interval or requests_per_minute"
        )
    return text, too_slow


# -- deliveries -------------------------------------------------------------------


MAX_PERMANENT_DELAY = 24 * 3600.0


def retry_delay(schedule: Sequence[float], attempts: int, permanent: bool = False) -> float:
    """Seconds to wait after the ``attempts``-th failed send: the schedule, clamped to its end.

    A permanent failure (a revoked token, a deleted webhook) waits the longest step,
    doubling with each attempt up to a day: it is still owed, in case a person fixes
    the target (a changed URL is tried at once), but it stops hammering.
    """
    if permanent:
        doubled = schedule[-1] * 2.0 ** min(max(attempts - 1, 0), 20)
        return float(max(schedule[-1], min(doubled, MAX_PERMANENT_DELAY)))
    return schedule[min(max(attempts, 1), len(schedule)) - 1]


def is_expired(job: Job, now: datetime) -> bool:
    """A job past its ``validThrough`` can no longer be applied to: its alert is withdrawn."""
    return job.valid_through is not None and job.valid_through <= now


def overdue_holds(rows: Iterable[OutboxRow], now: datetime) -> list[str]:
    """Jobs held for longer than ``HOLD_BOUND``: an alert may wait, but never forever."""
    return sorted(
        {r.job_id for r in rows if r.held_since is not None and now - r.held_since > HOLD_BOUND}
    )


def _on(day: date, moment: time, tz: tzinfo) -> datetime:
    return datetime.combine(day, moment, tzinfo=tz).astimezone(UTC)


def gathered_until(pace: Pace, oldest: datetime, tz: tzinfo) -> datetime:
    """When what a target gathered since ``oldest`` (its oldest owed alert) goes out,
    quiet hours aside: at once, ``batch`` later, or at the next digest time."""
    if pace.batch is not None:
        return oldest + timedelta(seconds=pace.batch)
    if pace.digest:
        start = oldest.astimezone(tz).date()
        for day in (start + timedelta(days=n) for n in range(3)):
            for moment in pace.digest:
                at = _on(day, moment, tz)
                if at >= oldest:
                    return at
    return oldest


def quiet_end(pace: Pace, now: datetime, tz: tzinfo) -> datetime | None:
    """When the quiet hours ``now`` falls in end; None when ``now`` is not quiet."""
    if pace.quiet is None:
        return None
    start, end = pace.quiet
    local = now.astimezone(tz)
    at, today = local.time(), local.date()
    if start < end:
        return _on(today, end, tz) if start <= at < end else None
    if at >= start:
        return _on(today + timedelta(days=1), end, tz)
    return _on(today, end, tz) if at < end else None


def release_at(pace: Pace, oldest: datetime, tz: tzinfo) -> datetime:
    """When a target's gathered alerts will go out (for ``status`` and the tests)."""
    moment = gathered_until(pace, oldest, tz)
    return quiet_end(pace, moment, tz) or moment


def plan_messages(
    due: Sequence[Alert],
    paces: Mapping[str, Pace],
    now: datetime,
    tz: tzinfo,
    cap: int = MAX_ALERTS_PER_TARGET,
    spent: Mapping[str, int] | None = None,
) -> tuple[list[list[Alert]], list[Alert]]:
    """(messages to send now, each a list of alerts to one target; alerts to withdraw as
    expired) from the due alerts.

    Oldest first. A target that gathers (``batch``, ``digest``, ``quiet_hours``) gets
    everything due as one message once its pace allows; an instant one gets a message
    per job, or one summary when more than ``cap`` are due (a burst, not a trickle).
    ``spent``: messages each target was already sent this cycle (a cycle delivers
    before its queries and after them). The cap is per cycle: what is left of it decides
    between a message per job and one summary; a target with none left waits.
    """
    expired = [alert for alert in due if is_expired(alert.job, now)]
    by_target: dict[str, list[Alert]] = {}
    ordered = sorted(
        (a for a in due if not is_expired(a.job, now)),
        key=lambda a: (a.created_at or EARLIEST, a.job.date_posted or EARLIEST, a.job.id),
    )
    for alert in ordered:
        by_target.setdefault(alert.target_key, []).append(alert)
    messages: list[list[Alert]] = []
    for key, alerts in by_target.items():
        room = cap - (spent or {}).get(key, 0)
        if room <= 0:
            continue  # this cycle's share for the target is used: the rest wait for the next
        pace = paces.get(key, Pace())
        if pace.gathers:
            oldest = min(a.created_at or now for a in alerts)
            if release_at(pace, oldest, tz) <= now and quiet_end(pace, now, tz) is None:
                messages.extend(_one_message(alerts, room))
        elif len(alerts) > room:
            messages.extend(_one_message(alerts, room))
        else:
            messages.extend([alert] for alert in alerts)
    return messages, expired


SPLIT_AFTER = 2  # failed attempts after which a list message goes a job at a time


def _one_message(alerts: list[Alert], cap: int) -> list[list[Alert]]:
    """One message listing ``alerts``; a job at a time (at most ``cap``) once such a
    message has failed ``SPLIT_AFTER`` times, so one job a service refuses (a 400 for
    something in its text) cannot hold the others back for good."""
    if any(alert.attempts >= SPLIT_AFTER for alert in alerts):
        return [[alert] for alert in alerts[:cap]]
    return [alerts]
