"""Frozen value types shared by every stage: jobs, saved searches, targets, alerts.

Jobs come from third parties through the API, so ``parse_job`` treats every field
but ``id`` as possibly missing, null or of a new shape, and says what it dropped.
"""

from __future__ import annotations

import bisect
import enum
import functools
import hashlib
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, time
from typing import Any

PAY_TYPES = ("PAY_PER_HOUR", "FIXED_PRICE", "PAY_PER_LABEL")
MAX_JOB_ID = 64  # characters: the API's own limit (GET /jobs/{id} answers 400 past it)
# What else a search may ask to be told about a job it already alerted (``also:``).
CHANGES = ("pay_raised", "reopened")
STDOUT_TARGET_KEY = "stdout"
FEED_PREFIX = "feed:"  # a target key: its alerts go into that feed (alertd.feeds)


class DeliveryStatus(enum.StrEnum):
    """Where one alert to one target stands."""

    PENDING = "pending"  # owed; due at ``next_attempt_at``
    HELD = "held"  # owed, but its job changed and must be confirmed open before it is sent
    SENDING = "sending"  # written just before the send; outcome not yet recorded
    SENT = "sent"  # the target accepted it
    WITHDRAWN = "withdrawn"  # the job closed or expired before the target accepted it


OWED = (DeliveryStatus.PENDING, DeliveryStatus.HELD, DeliveryStatus.SENDING)


@dataclass(frozen=True)
class Pay:
    """What a job pays. Every amount is optional; the API may leave any of them null."""

    payment_type: str | None = None
    currency: str | None = None
    hourly_rate: float | None = None
    hourly_min: float | None = None
    hourly_max: float | None = None
    fixed_price: float | None = None
    per_label_rate: float | None = None


@dataclass(frozen=True)
class Job:
    """One OpenTrain job, as much of it as alertd uses. Times are aware UTC datetimes."""

    id: str
    title: str = "(untitled job)"
    company: str | None = None
    status: str | None = None
    url: str | None = None
    summary: str | None = None
    category: str | None = None
    languages: tuple[str, ...] | None = ()  # None: missing, or of a shape we cannot read
    countries: tuple[str, ...] | None = ()  # () means open to every country
    date_posted: datetime | None = None
    valid_through: datetime | None = None
    updated_at: datetime | None = None
    pay: Pay | None = None
    slug: str | None = None
    experience_level: str | None = None
    data_type: str | None = None
    label_types: tuple[str, ...] | None = ()
    employment_types: tuple[str, ...] | None = ()
    # The whole description, for the client-side filters only: never stored (it may be
    # 50,000 characters of a stranger's text), so a job read back from the store has none.
    description: str | None = field(default=None, compare=False, repr=False)

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict for the store (times as ISO-8601 UTC; no description)."""
        return {
            "id": self.id,
            "title": self.title,
            "company": self.company,
            "status": self.status,
            "url": self.url,
            "summary": self.summary,
            "category": self.category,
            "languages": None if self.languages is None else list(self.languages),
            "countries": None if self.countries is None else list(self.countries),
            "date_posted": _iso(self.date_posted),
            "valid_through": _iso(self.valid_through),
            "updated_at": _iso(self.updated_at),
            "pay": None if self.pay is None else self.pay.__dict__.copy(),
            "slug": self.slug,
            "experience_level": self.experience_level,
            "data_type": self.data_type,
            "label_types": None if self.label_types is None else list(self.label_types),
            "employment_types": (
                None if self.employment_types is None else list(self.employment_types)
            ),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Job:
        """Rebuild a job that ``to_record`` wrote."""
        pay = record.get("pay")
        return cls(
            id=str(record["id"]),
            title=record.get("title") or "(untitled job)",
            company=record.get("company"),
            status=record.get("status"),
            url=record.get("url"),
            summary=record.get("summary"),
            category=record.get("category"),
            languages=_strings(record.get("languages")),
            countries=_strings(record.get("countries")),
            date_posted=parse_time(record.get("date_posted")),
            valid_through=parse_time(record.get("valid_through")),
            updated_at=parse_time(record.get("updated_at")),
            pay=Pay(**pay) if isinstance(pay, dict) else None,
            slug=record.get("slug"),
            experience_level=record.get("experience_level"),
            data_type=record.get("data_type"),
            label_types=_strings(record.get("label_types", [])),
            employment_types=_strings(record.get("employment_types", [])),
        )


@dataclass(frozen=True)
class Pace:
    """When a target wants its alerts: at once (the default), gathered for ``batch``
    seconds, at the ``digest`` times of day, and never inside ``quiet`` (start, end),
    times of day in the config's time zone."""

    batch: float | None = None
    digest: tuple[time, ...] = ()
    quiet: tuple[time, time] | None = None

    @property
    def gathers(self) -> bool:
        """Whether alerts wait to go out together (as one message listing them)."""
        return self.batch is not None or bool(self.digest) or self.quiet is not None


@dataclass(frozen=True)
class Target:
    """Somewhere an alert goes: an apprise URL, a feed, or standard output.

    ``key`` identifies the destination in the store without holding its secrets;
    ``label`` is what a person reads in logs (a channel name or a redacted URL).
    ``mention_roles`` are the Discord role IDs the operator chose to ping with each
    message (the channel's ``mention_roles:``); no other mention ever pings.
    """

    key: str
    label: str
    url: str | None = field(default=None, repr=False)  # None: standard output, or a feed
    pace: Pace = field(default_factory=Pace, compare=False)
    mention_roles: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def stdout(cls) -> Target:
        """The embedded default: print alerts, no account needed."""
        return cls(key=STDOUT_TARGET_KEY, label="stdout")

    @classmethod
    def feed(cls, feed_key: str, label: str) -> Target:
        """A feed (``alertd.feeds``): its alerts are added to that Atom feed."""
        return cls(key=f"{FEED_PREFIX}{feed_key}", label=label)

    @property
    def feed_key(self) -> str | None:
        """The feed this target writes, or None for a service or standard output."""
        return self.key.removeprefix(FEED_PREFIX) if self.key.startswith(FEED_PREFIX) else None

    @classmethod
    def for_url(cls, url: str, label: str) -> Target:
        """A target for an apprise URL; the key is a digest, so the store never holds tokens."""
        digest = hashlib.sha256(url.encode()).hexdigest()[:20]
        return cls(key=f"url:{digest}", label=label, url=url)


@dataclass(frozen=True)
class MinPay:
    """The least a search accepts, per kind of pay, in the job's own currency."""

    hourly: float | None = None
    fixed: float | None = None
    per_label: float | None = None


@dataclass(frozen=True)
class Filters:
    """A saved search's own filters, applied to each job after the API's.

    Lists are any-of and compared without regard to case. A job that does not state a
    field passes that field's filter (it is not known to fail it); ``pay_required``
    is how a search asks for pay to be stated.
    """

    min_pay: MinPay | None = None
    pay_required: bool = False
    exclude: tuple[str, ...] = ()
    experience: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    label_types: tuple[str, ...] = ()
    data_types: tuple[str, ...] = ()
    employment_types: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self != Filters()

    def describe(self) -> dict[str, object]:
        """The filters that are set, as a JSON-ready dict (for a search's fingerprint)."""
        shown: dict[str, object] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, MinPay):
                shown[name] = {k: v for k, v in value.__dict__.items() if v is not None}
            elif value:
                shown[name] = list(value) if isinstance(value, tuple) else value
        return shown


def api_query(
    q: str | None,
    category: str | None,
    language: str | None,
    country: str | None,
    pay_type: str | None,
) -> dict[str, str]:
    """The query parameters GET /jobs takes for these filters (unset ones left out)."""
    params = {
        "q": q,
        "category": category,
        "language": language,
        "country": country,
        "payType": pay_type,
    }
    return {k: v for k, v in params.items() if v}


@dataclass(frozen=True)
class SavedSearch:
    """A saved search (the operator's or a member's): the API's own filters and where its
    alerts go."""

    name: str
    q: str | None = None
    category: str | None = None
    language: str | None = None
    country: str | None = None
    pay_type: str | None = None
    targets: tuple[Target, ...] = ()
    notify_existing: bool = False
    feed: bool = False  # opted in to a public Atom feed (``alertd.feeds.public_feed_slug``)
    also: frozenset[str] = frozenset()  # of CHANGES
    filters: Filters = field(default_factory=lambda: Filters())
    line: int | None = None
    source: str = ""  # its owner: the config file it came from, or "members" (forgotten per owner)
    file: str = ""  # the file it is written in (an included one, or source); ``line`` is there
    title: str = ""  # as a person reads it, where that is not ``name`` (a member's search)

    @property
    def id(self) -> str:
        """Its stable id: the store's key (unique in a state directory)."""
        return self.name

    @property
    def owner(self) -> str:
        """Who it belongs to (``alertd.subscriptions``): what forgets it."""
        return self.source

    def query(self) -> dict[str, str]:
        """The query parameters GET /jobs takes for this search (unset filters left out)."""
        known = self.__dict__.get("_query")  # asked of every search every cycle
        if known is None:
            known = self.__dict__["_query"] = api_query(
                self.q, self.category, self.language, self.country, self.pay_type
            )
        return dict(known)

    def query_key(self) -> str:
        """The query's parameters as one string: searches with the same key share a fetch."""
        known: str | None = self.__dict__.get("_query_key")  # asked every cycle: once
        if known is None:
            text = json.dumps(self.query(), sort_keys=True, separators=(",", ":"))
            known = self.__dict__["_query_key"] = text
        return known

    def fingerprint(self) -> str:
        """Changes when the filters change, so an edited search starts silent again (its
        own filters count only when set: a search without them keeps its fingerprint)."""
        known: str | None = self.__dict__.get("_fingerprint")  # a frozen value: once
        if known is None:
            described: dict[str, object] = dict(self.query())
            if self.filters:
                described["filters"] = self.filters.describe()
            text = json.dumps(described, sort_keys=True).encode()
            known = self.__dict__["_fingerprint"] = hashlib.sha256(text).hexdigest()[:16]
        return known


@dataclass(frozen=True)
class OutboxRow:
    """One job owed (or once owed) to one target: the unit of "once, and never lost".

    ``(target, job_id)`` identifies the row. ``searches`` are every search of that target
    that matched the job, so one alert names them all. ``held_since`` is set while the row
    is ``HELD``; ``done_at`` when it was sent or withdrawn.
    """

    target: str
    job_id: str
    searches: tuple[str, ...]
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    last_error: str | None = None
    held_since: datetime | None = None
    done_at: datetime | None = None
    title: str | None = None
    refused_by: str | None = None  # digest of the URL that refused it for good, if one did
    change: str | None = None  # None: a new job; or what changed (see ``CHANGES``)
    old_pay: Pay | None = None  # for a "pay_raised" alert: the pay the target was told
    pay: Pay | None = None  # on a sent row: the pay the alert showed

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the row: (target key, job id)."""
        return (self.target, self.job_id)

    def but(self, **changes: Any) -> OutboxRow:
        """This row with ``changes``: what ``dataclasses.replace`` makes, without its
        per-field work (a busy cycle copies a row three times per alert)."""
        if unknown := changes.keys() - ROW_FIELDS:
            raise TypeError(f"OutboxRow has no field {', '.join(sorted(unknown))}")
        row = object.__new__(OutboxRow)
        row.__dict__.update(self.__dict__, **changes)  # frozen: no __setattr__, same fields
        return row


ROW_FIELDS = frozenset(f.name for f in fields(OutboxRow))


class SeenIds(AbstractSet[str]):
    """The job ids one search has matched: a sorted tuple of interned strings.

    A community's state holds one of these per search (10,000 searches, half a million
    ids): a ``set`` costs about 35 bytes an id, this 8, and searches that share a query
    share the id strings themselves. Membership is a binary search.
    """

    __slots__ = ("_ids",)

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: tuple[str, ...] = tuple(sorted({sys.intern(str(i)) for i in ids}))

    def __contains__(self, job_id: object) -> bool:
        ids = self._ids
        at = bisect.bisect_left(ids, job_id) if isinstance(job_id, str) else len(ids)
        return at < len(ids) and ids[at] == job_id

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"SeenIds({list(self._ids)!r})"

    def update(self, ids: Iterable[str]) -> int:
        """Add these ids; how many were new."""
        fresh = {sys.intern(str(i)) for i in ids if i not in self}
        if fresh:
            self._ids = tuple(sorted((*self._ids, *fresh)))
        return len(fresh)

    def discard_all(self, ids: Iterable[str]) -> int:
        """Remove these ids; how many were there."""
        gone = {i for i in ids if i in self}
        if gone:
            self._ids = tuple(i for i in self._ids if i not in gone)
        return len(gone)


@dataclass
class SearchState:
    """What the store remembers of one saved search.

    ``fingerprint`` is the filters it was primed with (edited filters start silent
    again); ``since`` is when its silent first run began, by the API's clock; ``seen``
    every job id it has matched, so each is alerted once; ``targets`` the keys of the
    targets it notified last cycle (a replaced URL inherits what the old one was owed).
    """

    name: str
    fingerprint: str
    owner: str
    since: datetime
    primed: bool = False
    seen: SeenIds = field(default_factory=SeenIds)
    targets: tuple[str, ...] = ()


class EventKind(enum.StrEnum):
    """The change feed's event types."""

    PUBLISHED = "PUBLISHED"
    UPDATED = "UPDATED"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class Event:
    """The latest change the feed reported for one job, and when alertd first learnt of it."""

    job_id: str
    kind: str
    occurred_at: datetime
    noticed_at: datetime


@dataclass(frozen=True)
class QueryState:
    """One distinct API query: when it was last fetched whole, and an answer it still owes.

    ``owed_since`` is set when an event may have changed what the query lists: the next
    page that answers for it must have been generated at or after that instant.
    """

    fetched_at: datetime | None = None
    owed_since: datetime | None = None
    # When its last try failed (None once it answers): a cycle asks it only after every
    # other query it wants, so a broken query cannot take each cycle's ask window.
    failed_at: datetime | None = None


@dataclass(frozen=True)
class Alert:
    """One job owed to one target, with every search of that target that matched it."""

    target_key: str
    job: Job
    searches: tuple[str, ...]
    attempts: int = 0
    created_at: datetime | None = None
    change: str | None = None  # None: a new job; "pay_raised" or "reopened"
    old_pay: Pay | None = None


@dataclass
class ParsedJob:
    """A job parsed from the API plus what had to be dropped from it on the way."""

    job: Job
    warnings: list[str] = field(default_factory=list)


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 string as an aware UTC datetime; ``None`` for null, empty or unparseable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # malformed, or an offset that leaves datetime's range
        return None


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds, the API's own format.

    Remembered for the last few thousand moments in UTC: a busy cycle writes the same
    few (its ``now``, each row's creation) tens of thousands of times. Others are not:
    two datetimes of one zone compare (and hash) by their wall clock alone, so the two
    01:30 of a night the clocks go back were one entry, an hour apart."""
    if moment.tzinfo is UTC:
        return _format_utc(moment)
    return _format_utc.__wrapped__(moment.astimezone(UTC))


@functools.lru_cache(maxsize=4096)
def _format_utc(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def _text(value: object) -> str | None:
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    return None


def _strings(value: object) -> tuple[str, ...] | None:
    """A list of strings as a tuple; None when absent or of another shape (unknown)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return tuple(value)


def _amount(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"amount {value!r} is not a number")
    try:
        amount = float(value)
    except OverflowError:
        amount = math.inf
    if not math.isfinite(amount):
        raise ValueError("amount is not a finite number")
    return amount


def _parse_pay(raw: object) -> Pay | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"pay is {type(raw).__name__}, not an object")
    return Pay(
        payment_type=_text(raw.get("paymentType")),
        currency=_text(raw.get("currency")),
        hourly_rate=_amount(raw.get("hourlyRate")),
        hourly_min=_amount(raw.get("hourlyMin")),
        hourly_max=_amount(raw.get("hourlyMax")),
        fixed_price=_amount(raw.get("fixedPrice")),
        per_label_rate=_amount(raw.get("perLabelRate")),
    )


def parse_job(raw: object) -> ParsedJob:
    """Parse one job from the API. Raises ValueError only when there is no usable ``id``.

    Any other malformed part is dropped and named in ``warnings``, so one odd field
    never costs the user the alert.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"job is {type(raw).__name__}, not an object")
    job_id = raw.get("id")
    if isinstance(job_id, bool) or not isinstance(job_id, str | int) or str(job_id) == "":
        raise ValueError(f"job has no usable id ({job_id!r})")
    if len(str(job_id)) > MAX_JOB_ID or not str(job_id).isprintable():
        raise ValueError(f"job id {str(job_id)[:20]!r}… is not an id the API gives (1-64)")
    warnings: list[str] = []
    try:
        pay = _parse_pay(raw.get("pay"))
    except (ValueError, TypeError, OverflowError) as exc:
        warnings.append(f"malformed pay dropped: {exc}")
        pay = None
    url = _text(raw.get("url")) or _text(raw.get("applyUrl"))
    return ParsedJob(
        job=Job(
            id=str(job_id),
            title=_text(raw.get("title")) or _text(raw.get("seoTitle")) or "(untitled job)",
            company=_text(raw.get("companyName")),
            status=_text(raw.get("status")),
            url=url,
            summary=_text(raw.get("summary")) or _text(raw.get("descriptionText")),
            category=_text(raw.get("category")),
            languages=_strings(raw.get("languages")),
            countries=_strings(raw.get("countries")),
            date_posted=parse_time(raw.get("datePosted")),
            valid_through=parse_time(raw.get("validThrough")),
            updated_at=parse_time(raw.get("updatedAt")),
            pay=pay,
            slug=_text(raw.get("slug")),
            experience_level=_text(raw.get("experienceLevel")),
            data_type=_text(raw.get("dataType")),
            label_types=_strings(raw.get("labelTypes")),
            employment_types=_strings(raw.get("employmentTypes")),
            description=_text(raw.get("descriptionText")),
        ),
        warnings=warnings,
    )
