"""Pure client-side filtering on top of the API's own filters.

The API already applied ``q``, ``category``, ``language``, ``country`` and
``payType``; what is left for us is whether a job can still be applied to.
``now`` is an argument so that tests never patch the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from alertd.models import Job


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
