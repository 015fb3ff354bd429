"""Pure client-side filtering on top of the API's own filters.

The API already applied ``q``, ``category``, ``language``, ``country`` and
``payType``; what is left for us is whether a job can still be applied to, and each
search's own filters (``Filters``): what the API cannot ask, such as a minimum pay.
``now`` is an argument so that tests never patch the clock.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from datetime import datetime

from alertd.models import Filters, Job, Pay
from alertd.render import strip_hidden


def is_open(job: Job, now: datetime) -> bool:
    """True when a person could still apply: listed as ``OPEN`` and not past ``validThrough``."""
    if (job.status or "").upper() != "OPEN":
        return False
    return job.valid_through is None or job.valid_through > now


def select_open(jobs: Iterable[Job], now: datetime) -> list[Job]:
    """The open jobs, each id once, in the order the API gave them."""
    seen: set[str] = set()
    selected: list[Job] = []
    for job in jobs:
        if job.id in seen or not is_open(job, now):
            continue
        seen.add(job.id)
        selected.append(job)
    return selected


# -- the client-side filters: what the API cannot ask ------------------------------


def _folded(text: str) -> str:
    """Text compared without regard to case, width or hidden characters: ``STRASSE``
    finds ``straße``, fullwidth ``ｍｅｄｉｃａｌ`` finds ``medical``, and a poster cannot
    hide "transcription" from an exclude by writing "tran\u200bscription"."""
    return unicodedata.normalize("NFKC", strip_hidden(text)).casefold()


@functools.lru_cache(maxsize=4096)
def _phrase(phrase: str) -> re.Pattern[str]:
    """A whole word or phrase, any case, any run of white space between its words."""
    words = (re.escape(word) for word in _folded(phrase).split())
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)")


def _top_amount(pay: Pay) -> tuple[str, float] | None:
    """(kind, the most the job pays of that kind): a range counts by its top."""
    kind = (pay.payment_type or "").upper()
    # The most of any hourly figure: a range written backwards ($50–$5) counts by $50.
    hourly = max(
        (a for a in (pay.hourly_max, pay.hourly_rate, pay.hourly_min) if a is not None),
        default=None,
    )
    if kind == "PAY_PER_HOUR" or (not kind and hourly is not None):
        return None if hourly is None else ("hourly", hourly)
    if kind == "FIXED_PRICE" or (not kind and pay.fixed_price is not None):
        return None if pay.fixed_price is None else ("fixed", pay.fixed_price)
    if kind == "PAY_PER_LABEL" or (not kind and pay.per_label_rate is not None):
        return None if pay.per_label_rate is None else ("per_label", pay.per_label_rate)
    return None


def _any_of(name: str, wanted: tuple[str, ...], have: tuple[str, ...] | str | None) -> str | None:
    if not wanted or have is None:
        return None
    values = (have,) if isinstance(have, str) else have
    if not values:
        return None  # not stated
    if {v.casefold() for v in values} & {w.casefold() for w in wanted}:
        return None
    return f"{name} {', '.join(values)} is not one of {', '.join(wanted)}"


def why_dropped(job: Job, filters: Filters) -> str | None:
    """None when ``job`` passes every filter; otherwise the first one it fails, said so
    a person sees why an expected job did not alert (``alertd preview --explain``)."""
    if not filters:
        return None
    amount = None if job.pay is None else _top_amount(job.pay)
    if amount is None and filters.pay_required:
        return "pay_required: the job does not state its pay"
    if amount is not None and filters.min_pay is not None:
        kind, top = amount
        least = getattr(filters.min_pay, kind)
        if least is not None and top < least:
            currency = (job.pay.currency if job.pay else None) or ""
            return (
                f"min_pay.{kind}: pays at most {top:g} {currency}".rstrip() + f", below {least:g}"
            )
    for field_name, value in (("title", job.title), ("summary", job.summary)):
        hit = _excluded(value, filters.exclude)
        if hit:
            return f"exclude: {hit!r} in the {field_name}"
    hit = _excluded(job.description, filters.exclude)
    if hit:
        return f"exclude: {hit!r} in the description"
    level = job.experience_level
    reason = _any_of("experience", filters.experience, level)
    if reason:
        return reason
    if filters.countries and job.countries:
        wanted = {c.casefold() for c in filters.countries}
        if not wanted & {c.casefold() for c in job.countries}:
            return f"countries: open to {', '.join(job.countries)} only"
    return (
        _any_of("labelTypes", filters.label_types, job.label_types)
        or _any_of("dataType", filters.data_types, job.data_type)
        or _any_of("employmentTypes", filters.employment_types, job.employment_types)
    )


def _excluded(text: str | None, phrases: tuple[str, ...]) -> str | None:
    """The first excluded phrase found in ``text`` as whole words, if any."""
    if not text or not phrases:
        return None
    visible = _folded(text)
    return next((p for p in phrases if _phrase(p).search(visible)), None)


def passes(job: Job, filters: Filters) -> bool:
    """Whether ``job`` passes a search's own filters."""
    return why_dropped(job, filters) is None


def pay_raised(before: Pay | None, after: Pay | None) -> bool:
    """Whether the job now pays more than ``before``, of the same kind (a change from
    hourly to fixed, or to or from "not stated", is not a raise)."""
    old = None if before is None else _top_amount(before)
    new = None if after is None else _top_amount(after)
    if old is None or new is None or old[0] != new[0]:
        return False
    same_currency = (before.currency if before else None) == (after.currency if after else None)
    return same_currency and new[1] > old[1]
