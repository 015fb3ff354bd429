"""A simulated OpenTrain marketplace: jobs, their events, and the API's query semantics.

``standin`` serves this over HTTP exactly as the public API would; the demo and the
tests change it (add, update, close jobs) through methods or the control interface.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from alertd.models import PAY_TYPES, format_time, parse_time

CHANGES_CAP = 5000
OPENTRAIN = "https://app.opentrain.ai"
MAX_LIMIT = 100
DEFAULT_LIMIT = 50

CATEGORIES = (
    "Audio Annotation",
    "Image Annotation",
    "Text Annotation",
    "Video Annotation",
    "RLHF",
    "Transcription",
)
LANGUAGES = ("English", "Spanish", "German", "French", "Portuguese", "Hindi", "Japanese")
COUNTRIES = ("US", "GB", "DE", "ES", "MX", "IN", "BR")
TASKS = (
    "Transcribe call-center audio",
    "Label street scenes",
    "Rate chatbot answers",
    "Tag product photos",
    "Segment medical images",
    "Review translated subtitles",
    "Classify customer emails",
)
# What a job of each category asks for: the demo's titles match their category.
TASKS_BY_CATEGORY = {
    "Audio Annotation": ("Transcribe call-center audio", "Label speaker turns in podcasts"),
    "Image Annotation": ("Label street scenes", "Tag product photos"),
    "Text Annotation": ("Classify customer emails", "Tag named entities in news"),
    "Video Annotation": ("Track players in match footage", "Segment cooking videos"),
    "RLHF": ("Rate chatbot answers", "Rank model summaries"),
    "Transcription": ("Review translated subtitles", "Transcribe doctor dictations"),
}


class BadRequestError(Exception):
    """The request is malformed; answered with 400 BAD_REQUEST."""


def encode_cursor(offset: int) -> str:
    """An opaque cursor for the page that starts at ``offset``."""
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The offset inside a cursor; BadRequestError for anything we did not make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = data["o"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadRequestError("malformed cursor") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise BadRequestError("malformed cursor")
    return offset


def make_job(
    now: datetime, rng: random.Random | None = None, link_base: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A complete job in the API's shape; ``fields`` override the generated values.
    ``link_base``: where its links lead (OpenTrain's own pages unless said)."""
    rng = rng or random.Random()
    category = fields.get("category") or rng.choice(CATEGORIES)
    languages = fields.get("languages")
    language = languages[0] if isinstance(languages, list) and languages else rng.choice(LANGUAGES)
    title = (
        fields.get("title") or f"{rng.choice(TASKS_BY_CATEGORY.get(category, TASKS))} ({language})"
    )
    job_id = str(fields.get("id") or f"job_{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}")
    slug = (
        title.lower().replace(" ", "-").replace("(", "").replace(")", "")[:60] + "-" + job_id[-6:]
    )
    low = rng.choice((12, 15, 18, 20, 25))
    job: dict[str, Any] = {
        "id": job_id,
        "slug": slug,
        "title": title,
        "companyName": rng.choice(("Acme Data", "LabelWorks", "Polyglot AI", "Northwind ML")),
        "descriptionText": f"{title}. Flexible hours, fully remote. Training provided.",
        "descriptionHtml": f"<p>{title}. Flexible hours, fully remote.</p>",
        "seoTitle": None,
        "summary": f"{title}: remote, flexible hours.",
        "status": "OPEN",
        "datePosted": format_time(now),
        "validThrough": format_time(now + timedelta(days=30)),
        "updatedAt": format_time(now),
        "employmentTypes": ["CONTRACTOR"],
        "countries": [],
        "languages": [language],
        "category": category,
        "dataType": "audio" if "Audio" in category else "text",
        "labelTypes": ["classification"],
        "labelingSoftware": None,
        "experienceLevel": "ENTRY",
        "skills": [],
        "pay": {
            "paymentType": "PAY_PER_HOUR",
            "currency": "USD",
            "hourlyRate": None,
            "hourlyMin": low,
            "hourlyMax": low + 10,
            "fixedPrice": None,
            "perLabelRate": None,
        },
        # OpenTrain's page; where a stand-in serves the jobs, the stand-in's own answer.
        "url": f"{link_base}/jobs/{job_id}" if link_base else f"{OPENTRAIN}/jobs/{slug}",
        "applyUrl": f"{link_base or OPENTRAIN}/jobs/{slug}/apply",
    }
    job.update(fields)
    job["id"] = job_id
    return job


def _pay(job: dict[str, Any]) -> dict[str, Any]:
    pay = job.get("pay")
    return pay if isinstance(pay, dict) else {}


def matches_query(job: dict[str, Any], query: dict[str, str]) -> bool:
    """Whether GET /jobs with ``query`` lists ``job`` (open, and every filter matches)."""
    if job.get("status") != "OPEN":
        return False
    if query.get("q"):
        text = f"{job.get('title', '')} {job.get('descriptionText', '')}".lower()
        if not all(word in text for word in query["q"].lower().split()):
            return False
    if query.get("category") and job.get("category") != query["category"]:
        return False
    if query.get("language") and query["language"] not in (job.get("languages") or []):
        return False
    countries = job.get("countries") or []
    if query.get("country") and countries and query["country"] not in countries:
        return False
    pay = _pay(job)
    return not (query.get("payType") and pay.get("paymentType") != query["payType"])


class Market:
    """Thread-safe marketplace state: jobs in posting order and every event that happened."""

    def __init__(self, clock: Callable[[], datetime] | None = None, seed: int | None = None):
        self.clock = clock or (lambda: datetime.now(UTC))
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[datetime, str, str]] = []
        self.link_base: str | None = None  # where jobs' links lead; OpenTrain's pages if None

    # -- changes made by tests, the demo and the control interface ----------

    def add_job(self, **fields: Any) -> dict[str, Any]:
        """Publish a job (generated, with ``fields`` overriding) and return it."""
        with self.lock:  # stamp inside the lock: events are appended in time order
            now = self.clock()
            job = make_job(now, self.rng, self.link_base, **fields)
            self.jobs[job["id"]] = job
            self.events.append((now, job["id"], "PUBLISHED"))
            return dict(job)

    def add_past_jobs(self, count: int) -> None:
        """Publish ``count`` jobs posted an hour apart before now: a market that is
        already open when the demo or the stand-in starts."""
        now = self.clock()
        for hour in range(1, count + 1):
            self.add_job(datePosted=format_time(now - timedelta(hours=hour)))

    def add_raw(self, raw: Any, job_id: str) -> None:
        """Publish a job exactly as given, malformed or not (for bad-data tests)."""
        with self.lock:
            self.jobs[job_id] = raw
            self.events.append((self.clock(), job_id, "PUBLISHED"))

    def update_job(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a job; it keeps its id."""
        with self.lock:
            now = self.clock()
            job = self.jobs[job_id]
            job.update(fields, updatedAt=format_time(now))
            self.events.append((now, job_id, "UPDATED"))
            return dict(job)

    def close_job(self, job_id: str) -> None:
        """Take a job off the market: search stops listing it, GET answers 404 closed."""
        with self.lock:
            now = self.clock()
            self.jobs[job_id].update(status="CLOSED", updatedAt=format_time(now))
            self.events.append((now, job_id, "CLOSED"))

    # -- the API's answers ---------------------------------------------------

    def search(self, query: dict[str, str]) -> dict[str, Any]:
        """GET /jobs."""
        if query.get("payType") and query["payType"] not in PAY_TYPES:
            raise BadRequestError(f"payType must be one of {', '.join(PAY_TYPES)}")
        try:
            limit = int(query.get("limit") or DEFAULT_LIMIT)
        except ValueError:
            raise BadRequestError("limit must be a whole number") from None
        if limit < 1:
            raise BadRequestError("limit must be at least 1")
        limit = min(limit, MAX_LIMIT)
        offset = decode_cursor(query["cursor"]) if query.get("cursor") else 0
        with self.lock:
            listed = [
                j for j in self.jobs.values() if isinstance(j, dict) and matches_query(j, query)
            ]
            listed += [j for j in self.jobs.values() if not isinstance(j, dict)]
            listed.sort(
                key=lambda j: str(j.get("datePosted", "")) if isinstance(j, dict) else "",
                reverse=True,
            )
            page = [json.loads(json.dumps(j)) for j in listed[offset : offset + limit]]
        more = offset + limit < len(listed)
        return {
            "jobs": page,
            "nextCursor": encode_cursor(offset + limit) if more else None,
            "generatedAt": format_time(self.clock()),
        }

    def facets(self) -> dict[str, Any]:
        """GET /jobs/facets: counts over listed jobs, most first."""
        counts: dict[str, dict[str, int]] = {
            k: {} for k in ("categories", "languages", "countries", "payTypes")
        }
        with self.lock:
            listed = [
                j for j in self.jobs.values() if isinstance(j, dict) and j.get("status") == "OPEN"
            ]
        for job in listed:
            pay = _pay(job)
            values = {
                "categories": [job.get("category")],
                "languages": job.get("languages") or [],
                "countries": job.get("countries") or [],
                "payTypes": [pay.get("paymentType")],
            }
            for key, items in values.items():
                for item in items:
                    if isinstance(item, str):
                        counts[key][item] = counts[key].get(item, 0) + 1
        body: dict[str, Any] = {"totalJobs": len(listed)}
        for key, tally in counts.items():
            ordered = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
            body[key] = [{"value": v, "count": c} for v, c in ordered]
        body["generatedAt"] = format_time(self.clock())
        return body

    def changes(self, since_text: str | None) -> dict[str, Any]:
        """GET /jobs/changes: the latest event per job at or after ``since``, capped."""
        since = parse_time(since_text) if since_text else None
        if since is None:
            raise BadRequestError("since is required, as an ISO-8601 instant")
        with self.lock:  # 'until' and the events it covers are read together
            now = self.clock()
            latest: dict[str, tuple[datetime, str, str]] = {}
            for event in self.events:
                if event[0] >= since:
                    latest[event[1]] = event
        ordered = sorted(latest.values(), key=lambda e: (e[0], e[1]))
        until = now
        if len(ordered) > CHANGES_CAP:
            ordered = ordered[:CHANGES_CAP]
            until = ordered[-1][0]
        return {
            "since": format_time(since),
            "until": format_time(until),
            "changes": [
                {"jobId": job_id, "eventType": kind, "occurredAt": format_time(at)}
                for at, job_id, kind in ordered
            ],
            "generatedAt": format_time(now),
        }

    def get(self, job_id: str) -> tuple[int, dict[str, Any]]:
        """GET /jobs/{id}: (status, body)."""
        if not job_id or len(job_id) > 64:
            raise BadRequestError("id must be 1 to 64 characters")
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return 404, {"error": {"code": "NOT_FOUND", "message": f"no job {job_id}"}}
            if not isinstance(job, dict) or job.get("status") != "OPEN":
                return 404, {"id": job_id, "status": "closed"}
            return 200, json.loads(json.dumps(job))
