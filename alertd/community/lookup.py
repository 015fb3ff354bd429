"""The API calls the page makes: the form's choices and "how many jobs match now".

They count against the same request window as the cycle (``budget.open_window`` in the
state directory), and the page never waits for a slot: it may use only half of
``requests_per_minute``, so a busy page cannot starve the cycle, and when that half is
spent the count is skipped (the form still works). The facets are kept for
``FACETS_TTL`` seconds and a count for ``COUNT_TTL``, so a crowd at the form costs
the API next to nothing. One request at a time: another thread that wants one meanwhile
skips it rather than queue behind it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alertd import budget
from alertd.api import OpenTrainClient
from alertd.community.rules import Facets
from alertd.errors import AlertdError
from alertd.match import passes, select_open
from alertd.members import SearchDraft
from alertd.models import api_query, parse_job

log = logging.getLogger(__name__)

FACETS_TTL = 600.0
COUNT_TTL = 60.0
PAGE_DEADLINE = 10.0  # seconds for one of the page's requests: a member is waiting
MAX_COUNTS = 1000
COUNT_PAGE = 100


class _SpentError(AlertdError):
    """The page's share of the request window is used up for now."""


def _never_wait(seconds: float) -> bool:
    raise _SpentError(f"no request slot for {seconds:.1f}s")


@dataclass(frozen=True)
class Count:
    """How many open jobs match a search now: ``at_least`` when there are more pages."""

    jobs: int
    at_least: bool = False


class Lookup:
    """The page's view of the API, within its share of the shared request budget."""

    def __init__(
        self, client: OpenTrainClient, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        client.budget.wait = _never_wait  # a spent budget skips the call, never waits
        self.clock = clock
        self._lock = threading.Lock()
        self._facets: tuple[float, Facets] | None = None
        self._counts: dict[str, tuple[float, Count]] = {}

    @classmethod
    def for_config(cls, api_url: str, state_dir: Path, requests_per_minute: int) -> Lookup:
        """A lookup sharing the request window of ``state_dir``."""
        window = budget.open_window(state_dir, PAGE_DEADLINE, create=True)
        client = OpenTrainClient(
            api_url,
            requests_per_minute=max(1, requests_per_minute // 2),
            deadline=PAGE_DEADLINE,
            retry_delays=(),
            window=window,
        )
        return cls(client)

    def close(self) -> None:
        """Release the client's connections."""
        self.client.close()

    def _ask(self, call: Callable[[], object]) -> object | None:
        if not self._lock.acquire(blocking=False):
            return None  # another thread is asking: skip rather than queue
        try:
            return call()
        except (AlertdError, OSError, ValueError) as exc:
            log.info("community page: the API was not asked or did not answer: %s", exc)
            return None
        finally:
            self._lock.release()

    def facets(self) -> Facets:
        """The form's choices: cached; the last ones (or none) when the API cannot say."""
        now = self.clock()
        if self._facets is not None and now - self._facets[0] < FACETS_TTL:
            return self._facets[1]
        counts = self._ask(self.client.facet_counts)
        if isinstance(counts, dict):
            self._facets = (
                now,
                Facets(
                    categories=tuple(counts.get("categories", ())),
                    languages=tuple(counts.get("languages", ())),
                    countries=tuple(counts.get("countries", ())),
                ),
            )
        return self._facets[1] if self._facets is not None else Facets()

    def count(self, draft: SearchDraft) -> Count | None:
        """How many open jobs match ``draft`` now, from one page of GET /jobs and the
        search's own filters; None when the budget or the API says not now."""
        query = api_query(draft.q, draft.category, draft.language, draft.country, draft.pay_type)
        key = json.dumps([query, draft.filters.describe()], sort_keys=True)
        now = self.clock()
        known = self._counts.get(key)
        if known is not None and now - known[0] < COUNT_TTL:
            return known[1]
        page = self._ask(lambda: self.client.get_json("jobs", {**query, "limit": str(COUNT_PAGE)}))
        if not isinstance(page, dict):
            return None
        count = _count_page(page, draft)
        if len(self._counts) >= MAX_COUNTS:
            self._counts.clear()
        self._counts[key] = (now, count)
        return count

    def api_answers(self) -> bool | None:
        """Whether the last request the page made got an answer (None: none made yet)."""
        status = self.client.status
        return None if status is None else status < 500


def _count_page(page: dict[str, object], draft: SearchDraft) -> Count:
    raw = page.get("jobs")
    jobs = []
    for item in raw if isinstance(raw, list) else []:
        try:
            jobs.append(parse_job(item).job)
        except Exception:  # one odd job never costs the count
            continue
    now = datetime.now(UTC)
    matching = [job for job in select_open(jobs, now) if passes(job, draft.filters)]
    more = isinstance(page.get("nextCursor"), str) and bool(page.get("nextCursor"))
    return Count(len(matching), at_least=more)
