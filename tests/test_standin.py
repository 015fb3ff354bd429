"""The stand-in against /work/shared/opentrain-api.md, over real HTTP on 127.0.0.1.

Every test talks to a real ``StandInServer`` with httpx on loopback.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from alertd.market import Market
from alertd.models import format_time
from alertd.standin import Fault, StandInServer

TIMEOUT = 2.0
CACHE_CONTROL = "public, s-maxage=300, stale-while-revalidate=3600"
ISO_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
LONG_AGO = "2000-01-01T00:00:00.000Z"
JOB_FIELDS = {
    "id",
    "slug",
    "title",
    "companyName",
    "descriptionText",
    "descriptionHtml",
    "seoTitle",
    "summary",
    "status",
    "datePosted",
    "validThrough",
    "updatedAt",
    "employmentTypes",
    "countries",
    "languages",
    "category",
    "dataType",
    "labelTypes",
    "labelingSoftware",
    "experienceLevel",
    "skills",
    "pay",
    "url",
    "applyUrl",
}
PAY_FIELDS = {
    "paymentType",
    "currency",
    "hourlyRate",
    "hourlyMin",
    "hourlyMax",
    "fixedPrice",
    "perLabelRate",
}


# -- helpers --------------------------------------------------------------------


@contextmanager
def serving(market: Market, **settings: Any) -> Iterator[StandInServer]:
    """A stand-in with non-default settings, stopped afterwards."""
    server = StandInServer(market, **settings).start()
    try:
        yield server
    finally:
        server.stop()


def http(server: StandInServer, timeout: float = TIMEOUT) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=timeout)


@pytest.fixture
def client(standin: StandInServer) -> Iterator[httpx.Client]:
    """An httpx client for the conftest stand-in (edge cache off)."""
    with http(standin) as c:
        yield c


def error_code(response: httpx.Response) -> str:
    """The code of the standard error envelope; fails on any other body shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    code = body["error"]["code"]
    assert isinstance(code, str)
    return code


def all_pages(client: httpx.Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of GET /jobs for ``params``, following nextCursor."""
    bodies: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = dict(params, cursor=cursor) if cursor else dict(params)
        response = client.get("/jobs", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        bodies.append(body)
        cursor = body["nextCursor"]
        if cursor is None:
            return bodies
        assert isinstance(cursor, str) and cursor
        assert len(bodies) < 100, "pagination never ended"


def listed_ids(client: httpx.Client, **params: str) -> set[str]:
    return {job["id"] for body in all_pages(client, params) for job in body["jobs"]}


def changes(client: httpx.Client, since: str) -> dict[str, Any]:
    response = client.get("/jobs/changes", params={"since": since})
    assert response.status_code == 200, response.text
    return response.json()


def make_cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def hourly() -> dict[str, Any]:
    return {"paymentType": "PAY_PER_HOUR", "currency": "USD", "hourlyMin": 15, "hourlyMax": 25}


def fixed() -> dict[str, Any]:
    return {"paymentType": "FIXED_PRICE", "currency": "USD", "fixedPrice": 300}


def per_label() -> dict[str, Any]:
    return {"paymentType": "PAY_PER_LABEL", "currency": "USD", "perLabelRate": 0.05}


# -- rate limit -----------------------------------------------------------------


def test_rate_limit_is_120_per_minute_across_all_endpoints_and_spares_control(
    market: Market, standin: StandInServer, client: httpx.Client
) -> None:
    job = market.add_job()
    gone = market.add_job()
    market.close_job(gone["id"])
    paths = [
        "/jobs",
        "/jobs/facets",
        f"/jobs/changes?since={LONG_AGO}",
        f"/jobs/{job['id']}",
        f"/jobs/{gone['id']}",
        "/jobs?payType=HOURLY",
        "/jobs/changes",
        "/nowhere",
    ]

    def hit(i: int) -> int:
        if i % 10 == 0:  # control calls in between must not use up the budget
            assert client.get("/_control/requests").status_code == 200
            assert client.post("/_control/jobs", json={}).status_code == 201
        return client.get(paths[i % len(paths)]).status_code

    # concurrent, only to keep this fast (each answer costs the stand-in ~40 ms)
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(hit, range(120)))
    assert 429 not in statuses
    assert set(statuses) == {200, 400, 404}  # errors count too

    over = client.get("/jobs/facets")
    assert over.status_code == 429
    assert error_code(over) == "RATE_LIMITED"
    retry_after = over.headers["Retry-After"]
    assert re.fullmatch(r"\d+", retry_after), retry_after
    assert 1 <= int(retry_after) <= 60
    for path in paths[:5]:  # one budget for every endpoint
        assert client.get(path).status_code == 429

    # the control interface still answers while the client is limited
    assert client.post("/_control/jobs", json={}).status_code == 201
    assert client.get("/_control/requests").status_code == 200
    served = standin.requests()
    assert len(served) == 126
    assert [r.status for r in served].count(429) == 6
    # the budget is per client IP: another address still has its full minute
    assert standin.edge.over_limit("192.0.2.7") is None


def test_rate_window_slides_and_retry_after_is_the_seconds_left(market: Market) -> None:
    now = [1000.0]
    with serving(market, cache_ttl=0, rate_limit=3) as server, http(server) as client:
        server.edge.clock = lambda: now[0]
        assert client.get("/jobs").status_code == 200  # t=0
        now[0] += 20
        assert client.get("/jobs/facets").status_code == 200  # t=20
        assert client.get("/jobs/missing").status_code == 404  # t=20
        now[0] += 25.5  # t=45.5: the oldest request leaves the window at t=60
        over = client.get("/jobs")
        assert over.status_code == 429
        assert error_code(over) == "RATE_LIMITED"
        assert over.headers["Retry-After"] == "15"  # 14.5 s, rounded up to whole seconds
        now[0] += 14.5  # t=60
        assert client.get("/jobs").status_code == 200
        over = client.get("/jobs")
        assert over.status_code == 429
        assert over.headers["Retry-After"] == "20"  # the two t=20 requests leave at t=80


# -- GET /jobs: pages, limits, filters -------------------------------------------------


def test_cursor_pages_list_every_open_job_exactly_once(
    market: Market, client: httpx.Client
) -> None:
    open_ids = {market.add_job()["id"] for _ in range(23)}
    for _ in range(2):
        market.close_job(market.add_job()["id"])
    pages = all_pages(client, {"limit": 10})
    assert [len(p["jobs"]) for p in pages] == [10, 10, 3]
    assert pages[-1]["nextCursor"] is None
    ids = [job["id"] for page in pages for job in page["jobs"]]
    assert len(ids) == len(set(ids)) == 23
    assert set(ids) == open_ids
    posted = [job["datePosted"] for page in pages for job in page["jobs"]]
    assert posted == sorted(posted, reverse=True)
    for page in pages:
        assert ISO_MS.fullmatch(page["generatedAt"])


def test_limit_defaults_to_50_and_is_capped_at_100(market: Market, client: httpx.Client) -> None:
    ids = {market.add_job()["id"] for _ in range(130)}
    assert [len(p["jobs"]) for p in all_pages(client, {})] == [50, 50, 30]
    assert [len(p["jobs"]) for p in all_pages(client, {"limit": 100})] == [100, 30]
    for too_big in (101, 1000):  # more than 100 is capped, and the cursor carries on from there
        pages = all_pages(client, {"limit": too_big})
        assert [len(p["jobs"]) for p in pages] == [100, 30]
        assert {j["id"] for p in pages for j in p["jobs"]} == ids
    # a last page that is exactly full still ends with a null cursor
    assert [len(p["jobs"]) for p in all_pages(client, {"limit": 65})] == [65, 65]
    empty = client.get("/jobs", params={"q": "no job says this"}).json()
    assert empty["jobs"] == [] and empty["nextCursor"] is None


@pytest.mark.parametrize("limit", ["0", "-5", "ten", "1.5"])
def test_malformed_limit_is_400(client: httpx.Client, limit: str) -> None:
    response = client.get("/jobs", params={"limit": limit})
    assert response.status_code == 400
    assert error_code(response) == "BAD_REQUEST"


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "garbage!!",
        "abc",
        make_cursor({"o": -1}),
        make_cursor({"o": "10"}),
        make_cursor({"o": True}),
        make_cursor({"o": 1.5}),
        make_cursor({"offset": 10}),
        make_cursor([10]),
    ],
)
def test_malformed_cursor_is_400(market: Market, client: httpx.Client, cursor: str) -> None:
    for _ in range(3):
        market.add_job()
    response = client.get("/jobs", params={"cursor": cursor, "limit": 2})
    assert response.status_code == 400
    assert error_code(response) == "BAD_REQUEST"


@pytest.mark.parametrize("pay_type", ["HOURLY", "pay_per_hour", "FIXED", "PAY_PER_HOUR "])
def test_unknown_pay_type_is_400(market: Market, client: httpx.Client, pay_type: str) -> None:
    market.add_job()
    response = client.get("/jobs", params={"payType": pay_type})
    assert response.status_code == 400
    assert error_code(response) == "BAD_REQUEST"


def test_filters_behave_as_documented(market: Market, client: httpx.Client) -> None:
    a = market.add_job(
        title="Transcribe Spanish podcasts",
        category="Audio Annotation",
        languages=["Spanish"],
        countries=[],
        pay=hourly(),
    )["id"]
    b = market.add_job(
        title="Rate chatbot answers",
        descriptionText="Native Spanish speakers wanted for RLHF work.",
        category="RLHF",
        languages=["Spanish", "English"],
        countries=["US"],
        pay=fixed(),
    )["id"]
    c = market.add_job(
        title="Label street scenes",
        category="Image Annotation",
        languages=["German"],
        countries=["DE", "AT"],
        pay=per_label(),
    )["id"]
    closed = market.add_job(
        title="Spanish RLHF street podcasts", category="RLHF", languages=["Spanish"], pay=hourly()
    )["id"]
    market.close_job(closed)

    assert listed_ids(client) == {a, b, c}
    # q: words over titles and descriptions, case-insensitive, every word must match
    assert listed_ids(client, q="spanish") == {a, b}
    assert listed_ids(client, q="SPANISH podcasts") == {a}
    assert listed_ids(client, q="spanish rlhf") == {b}
    assert listed_ids(client, q="street") == {c}
    # category: exact value
    assert listed_ids(client, category="RLHF") == {b}
    assert listed_ids(client, category="Audio Annotation") == {a}
    assert listed_ids(client, category="Audio") == set()
    # language: one of the job's languages
    assert listed_ids(client, language="Spanish") == {a, b}
    assert listed_ids(client, language="English") == {b}
    assert listed_ids(client, language="German") == {c}
    # country: allowed country; a job with no countries is open everywhere
    assert listed_ids(client, country="US") == {a, b}
    assert listed_ids(client, country="DE") == {a, c}
    assert listed_ids(client, country="FR") == {a}
    # payType
    assert listed_ids(client, payType="PAY_PER_HOUR") == {a}
    assert listed_ids(client, payType="FIXED_PRICE") == {b}
    assert listed_ids(client, payType="PAY_PER_LABEL") == {c}
    # filters combine
    assert listed_ids(client, language="Spanish", country="DE") == {a}
    assert listed_ids(client, q="spanish", payType="FIXED_PRICE", country="US") == {b}


# -- GET /jobs/changes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"since": ""},
        {"since": "yesterday"},
        {"since": "2026-13-45T00:00:00.000Z"},
        {"since": "1718179200"},
    ],
)
def test_changes_without_a_parseable_since_is_400(
    client: httpx.Client, params: dict[str, str]
) -> None:
    response = client.get("/jobs/changes", params=params)
    assert response.status_code == 400
    assert error_code(response) == "BAD_REQUEST"


def test_changes_give_the_latest_event_per_job_and_until_is_the_next_since(
    market: Market, client: httpx.Client
) -> None:
    a = market.add_job()["id"]
    b = market.add_job()["id"]
    market.update_job(b, title="Rate chatbot answers (German)")
    c = market.add_job()["id"]
    market.update_job(c, title="Tag product photos (French)")
    market.close_job(c)
    time.sleep(0.005)  # the window's end is in a later millisecond than these events

    first = changes(client, LONG_AGO)
    assert set(first) >= {"since", "until", "changes", "generatedAt"}
    assert first["since"] == LONG_AGO
    for key in ("until", "generatedAt"):
        assert ISO_MS.fullmatch(first[key])
    for entry in first["changes"]:
        assert set(entry) == {"jobId", "eventType", "occurredAt"}
        assert ISO_MS.fullmatch(entry["occurredAt"])
        assert entry["occurredAt"] <= first["until"]
    events = sorted((e["jobId"], e["eventType"]) for e in first["changes"])
    assert events == sorted([(a, "PUBLISHED"), (b, "UPDATED"), (c, "CLOSED")])

    market.update_job(a, title="Transcribe call-center audio (Hindi)")
    d = market.add_job()["id"]
    second = changes(client, first["until"])
    assert second["since"] == first["until"]
    events = sorted((e["jobId"], e["eventType"]) for e in second["changes"])
    assert events == sorted([(a, "UPDATED"), (d, "PUBLISHED")])
    assert all(e["occurredAt"] >= second["since"] for e in second["changes"])


def test_changes_are_capped_at_5000_and_until_advances_to_the_rest(
    market: Market, client: httpx.Client
) -> None:
    since = format_time(datetime.now(UTC) - timedelta(seconds=1))
    ids = [market.add_job()["id"] for _ in range(5_150)]

    first = changes(client, since)
    assert len(first["changes"]) == 5_000
    assert len({e["jobId"] for e in first["changes"]}) == 5_000
    # capped: the window ends at the last event returned, not "now"
    assert first["until"] == first["changes"][-1]["occurredAt"]
    assert set(ids[:4_999]) <= {e["jobId"] for e in first["changes"]}

    second = changes(client, first["until"])
    assert 150 <= len(second["changes"]) < 5_000
    assert all(e["occurredAt"] >= first["until"] for e in second["changes"])
    assert second["until"] == second["generatedAt"]  # not capped: the window ends now
    seen = {e["jobId"] for e in first["changes"] + second["changes"]}
    assert seen == set(ids)


class SteppingClock:
    """A market clock that moves 1 ms per reading and can run a hook at its next reading."""

    def __init__(self) -> None:
        self._now = datetime(2026, 6, 12, 8, 0, tzinfo=UTC)
        self._lock = threading.Lock()
        self.on_next_reading: Callable[[], None] | None = None

    def __call__(self) -> datetime:
        with self._lock:
            self._now += timedelta(milliseconds=1)
            reading, hook, self.on_next_reading = self._now, self.on_next_reading, None
        if hook is not None:
            hook()
        return reading


def test_changes_never_lose_an_event_published_while_a_poll_runs() -> None:
    """An event stamped before a poll's ``until`` must be in that poll or the next one.

    Regression: Market used to read clock() outside its lock, both when stamping an
    event and when computing ``until``, so a poll in between lost the event for good.
    """
    clock = SteppingClock()
    market = Market(clock=clock, seed=3)
    since = format_time(clock())
    with serving(market, cache_ttl=0) as server, http(server) as client:
        polled: list[dict[str, Any]] = []

        def poll() -> None:
            response = httpx.get(
                f"{server.url}/jobs/changes", params={"since": since}, timeout=TIMEOUT
            )
            polled.append(response.json())

        poller = threading.Thread(target=poll)

        def poll_while_publishing() -> None:
            # another client polls after the new job's event time was taken, before it's stored
            poller.start()
            poller.join(0.5)

        clock.on_next_reading = poll_while_publishing
        created = client.post("/_control/jobs", json={"title": "Label radar frames"})
        assert created.status_code == 201
        poller.join(TIMEOUT)
        first = polled[0]
        second = changes(client, first["until"])
        seen = {e["jobId"] for e in first["changes"] + second["changes"]}
        assert created.json()["id"] in seen


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_changes_with_an_out_of_range_since_is_400(client: httpx.Client, since: str) -> None:
    # regression: converting these to UTC overflowed, and the connection dropped unanswered
    response = client.get("/jobs/changes", params={"since": since})
    assert response.status_code == 400
    assert error_code(response) == "BAD_REQUEST"


# -- edge cache -----------------------------------------------------------------------


def test_edge_cache_returns_the_same_body_for_the_same_url(market: Market) -> None:
    job = market.add_job()
    with serving(market, cache_ttl=300) as server, http(server) as client:
        urls = ["/jobs", "/jobs/facets", f"/jobs/changes?since={LONG_AGO}", f"/jobs/{job['id']}"]
        first = {url: client.get(url) for url in urls}
        assert all(r.status_code == 200 for r in first.values())
        time.sleep(0.005)  # a recomputed generatedAt would differ
        market.add_job()
        market.update_job(job["id"], title="Changed title")
        for url in urls:
            again = client.get(url)
            assert again.status_code == 200
            assert again.content == first[url].content, url  # generatedAt included
            assert again.headers["Cache-Control"] == CACHE_CONTROL
        # a different URL is computed now
        fresh = client.get("/jobs", params={"limit": 10}).json()
        assert len(fresh["jobs"]) == 2
        assert fresh["generatedAt"] > first["/jobs"].json()["generatedAt"]
        assert client.get(f"/jobs/{job['id']}?x=1").json()["title"] == "Changed title"


def test_edge_cache_off_answers_fresh_every_time(market: Market, client: httpx.Client) -> None:
    market.add_job()
    before = client.get("/jobs").json()
    market.add_job()
    assert len(client.get("/jobs").json()["jobs"]) == len(before["jobs"]) + 1


def test_edge_cache_serves_stale_once_after_expiry_then_revalidates(market: Market) -> None:
    market.add_job()
    with serving(market, cache_ttl=0.2) as server, http(server) as client:
        original = client.get("/jobs")
        market.add_job()
        assert client.get("/jobs").content == original.content  # still fresh
        time.sleep(0.3)
        stale = client.get("/jobs")
        assert stale.status_code == 200
        assert stale.content == original.content  # expired: served stale while revalidating
        revalidated = client.get("/jobs")
        assert len(revalidated.json()["jobs"]) == 2
        assert revalidated.json()["generatedAt"] > original.json()["generatedAt"]
        assert client.get("/jobs").content == revalidated.content  # and cached again


# -- GET /jobs/{id} ---------------------------------------------------------------------


def test_get_open_job_has_the_job_shape(market: Market, client: httpx.Client) -> None:
    job = market.add_job(countries=["US"], skills=["English C2"])
    response = client.get(f"/jobs/{job['id']}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= JOB_FIELDS
    assert set(body["pay"]) >= PAY_FIELDS
    assert body["id"] == job["id"]
    assert body["status"] == "OPEN"
    for key in ("datePosted", "validThrough", "updatedAt"):
        assert ISO_MS.fullmatch(body[key])
    assert body["countries"] == ["US"]
    assert body == client.get("/jobs").json()["jobs"][0]  # the same shape as search


@pytest.mark.parametrize("status", ["CLOSED", "ARCHIVED", "UNLISTED"])
def test_job_no_longer_listed_is_404_with_the_minimal_body(
    market: Market, client: httpx.Client, status: str
) -> None:
    job_id = market.add_job()["id"]
    if status == "CLOSED":
        market.close_job(job_id)
    else:
        market.update_job(job_id, status=status)
    response = client.get(f"/jobs/{job_id}")
    assert response.status_code == 404
    assert response.json() == {"id": job_id, "status": "closed"}


def test_job_that_never_existed_is_404_with_the_error_envelope(client: httpx.Client) -> None:
    response = client.get("/jobs/job_never_was")
    assert response.status_code == 404
    assert error_code(response) == "NOT_FOUND"


def test_job_id_length_limits(client: httpx.Client) -> None:
    at_limit = client.get("/jobs/" + "x" * 64)
    assert at_limit.status_code == 404
    assert error_code(at_limit) == "NOT_FOUND"
    for path in ("/jobs/" + "x" * 65, "/jobs/"):
        response = client.get(path)
        assert response.status_code == 400, path
        assert error_code(response) == "BAD_REQUEST"


# -- GET /jobs/facets ---------------------------------------------------------------------


def test_facets_count_open_jobs_most_first(market: Market, client: httpx.Client) -> None:
    specs = [
        ("Audio Annotation", ["Spanish"], ["US"], hourly()),
        ("Audio Annotation", ["Spanish", "English"], ["US", "MX"], hourly()),
        ("Audio Annotation", ["English"], [], fixed()),
        ("RLHF", ["English"], ["US"], per_label()),
        ("Image Annotation", ["English", "German"], ["DE"], hourly()),
        ("Image Annotation", ["Spanish"], [], hourly()),
    ]
    for category, languages, countries, pay in specs:
        market.add_job(category=category, languages=languages, countries=countries, pay=pay)
    market.close_job(
        market.add_job(category="Transcription", languages=["Hindi"], countries=["IN"])["id"]
    )

    body = client.get("/jobs/facets").json()
    assert body["totalJobs"] == 6
    assert ISO_MS.fullmatch(body["generatedAt"])
    expected = {
        "categories": {"Audio Annotation": 3, "Image Annotation": 2, "RLHF": 1},
        "languages": {"English": 4, "Spanish": 3, "German": 1},
        "countries": {"US": 3, "MX": 1, "DE": 1},
        "payTypes": {"PAY_PER_HOUR": 4, "FIXED_PRICE": 1, "PAY_PER_LABEL": 1},
    }
    for key, counts in expected.items():
        items = body[key]
        assert all(set(item) == {"value", "count"} for item in items)
        assert {item["value"]: item["count"] for item in items} == counts, key
        listed = [item["count"] for item in items]
        assert listed == sorted(listed, reverse=True), key


# -- CORS and headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/jobs", "/jobs/facets", f"/jobs/changes?since={LONG_AGO}", "/jobs/job_1"]
)
def test_options_answers_204_with_cors(client: httpx.Client, path: str) -> None:
    response = client.options(path)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_responses_carry_cache_control_and_cors(market: Market, client: httpx.Client) -> None:
    job = market.add_job()
    for path in ("/jobs", "/jobs/facets", f"/jobs/changes?since={LONG_AGO}", f"/jobs/{job['id']}"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == CACHE_CONTROL
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Content-Type"].startswith("application/json")


# -- faults on demand ---------------------------------------------------------------------


def test_status_fault_from_the_control_interface_respects_count(
    market: Market, standin: StandInServer, client: httpx.Client
) -> None:
    market.add_job()
    fault = {"kind": "status", "path": "/jobs", "count": 2, "status": 503}
    assert client.post("/_control/faults", json=fault).status_code == 201
    for _ in range(2):
        response = client.get("/jobs")
        assert response.status_code == 503
        error_code(response)
    recovered = client.get("/jobs")
    assert recovered.status_code == 200
    assert len(recovered.json()["jobs"]) == 1
    assert [r.status for r in standin.requests("/jobs")] == [503, 503, 200]


def test_fault_only_hits_its_path(market: Market, client: httpx.Client) -> None:
    market.add_job()
    fault = {"kind": "status", "path": "/jobs/facets", "status": 500}
    assert client.post("/_control/faults", json=fault).status_code == 201
    assert client.get("/jobs").status_code == 200
    assert client.get("/jobs/facets").status_code == 500
    assert client.get("/jobs/facets").status_code == 200


def test_ratelimit_fault_sends_retry_after(standin: StandInServer, client: httpx.Client) -> None:
    standin.add_fault(Fault("ratelimit", retry_after="7"))
    response = client.get("/jobs")
    assert response.status_code == 429
    assert error_code(response) == "RATE_LIMITED"
    assert response.headers["Retry-After"] == "7"
    assert client.get("/jobs").status_code == 200


def test_nonjson_fault_sends_a_body_that_is_not_json(
    standin: StandInServer, client: httpx.Client
) -> None:
    standin.add_fault(Fault("nonjson"))
    response = client.get("/jobs")
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert client.get("/jobs").json()["jobs"] == []


def test_truncated_fault_cuts_the_body_short(
    market: Market, standin: StandInServer, client: httpx.Client
) -> None:
    for _ in range(5):
        market.add_job()
    standin.add_fault(Fault("truncated"))
    received = bytearray()
    with client.stream("GET", "/jobs") as response:
        promised = int(response.headers["Content-Length"])
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in response.iter_bytes():
                received += chunk
    assert len(received) < promised
    with pytest.raises(json.JSONDecodeError):
        json.loads(received)
    assert len(client.get("/jobs").json()["jobs"]) == 5


def test_slow_fault_delays_a_normal_answer(standin: StandInServer, client: httpx.Client) -> None:
    standin.add_fault(Fault("slow", delay=0.3))
    started = time.monotonic()
    response = client.get("/jobs/facets")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert response.json()["totalJobs"] == 0
    started = time.monotonic()
    assert client.get("/jobs/facets").status_code == 200
    assert time.monotonic() - started < 0.3


def test_timeout_fault_makes_the_client_time_out(
    standin: StandInServer, client: httpx.Client
) -> None:
    body = {"kind": "timeout", "delay": 5}
    assert client.post("/_control/faults", json=body).status_code == 201
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.get("/jobs", timeout=0.2)
    assert time.monotonic() - started < 1.0
    assert client.get("/jobs").status_code == 200


def test_control_rejects_an_unknown_fault_kind(client: httpx.Client) -> None:
    # regression: any kind was accepted, and blew up later inside the API request it hit
    response = client.post("/_control/faults", json={"kind": "explode"})
    assert response.status_code == 400
    assert client.get("/jobs").status_code == 200


# -- control interface --------------------------------------------------------------------


def test_control_jobs_publish_update_and_close(client: httpx.Client) -> None:
    created = client.post(
        "/_control/jobs", json={"title": "Transcribe Basque radio", "category": "Transcription"}
    )
    assert created.status_code == 201
    job_id = created.json()["id"]
    listed = client.get("/jobs").json()["jobs"]
    assert [(j["id"], j["title"]) for j in listed] == [(job_id, "Transcribe Basque radio")]

    updated = client.post(f"/_control/jobs/{job_id}", json={"title": "Transcribe Basque podcasts"})
    assert updated.status_code == 200
    assert client.get(f"/jobs/{job_id}").json()["title"] == "Transcribe Basque podcasts"
    assert [j["id"] for j in client.get("/jobs", params={"q": "podcasts"}).json()["jobs"]] == [
        job_id
    ]

    assert client.post(f"/_control/jobs/{job_id}/close").status_code == 200
    assert client.get("/jobs").json()["jobs"] == []
    gone = client.get(f"/jobs/{job_id}")
    assert gone.status_code == 404
    assert gone.json() == {"id": job_id, "status": "closed"}
    events = changes(client, LONG_AGO)["changes"]
    assert [(e["jobId"], e["eventType"]) for e in events] == [(job_id, "CLOSED")]


def test_control_requests_lists_the_api_requests_served(
    market: Market, client: httpx.Client
) -> None:
    job_id = market.add_job()["id"]
    client.post("/_control/jobs", json={})
    client.get("/jobs", params={"limit": 5})
    client.get(f"/jobs/{job_id}")
    client.get("/jobs", params={"payType": "HOURLY"})
    client.get("/jobs/missing")
    served = client.get("/_control/requests").json()["requests"]
    assert [(r["method"], r["path"], r["status"]) for r in served] == [
        ("GET", "/jobs?limit=5", 200),
        ("GET", f"/jobs/{job_id}", 200),
        ("GET", "/jobs?payType=HOURLY", 400),
        ("GET", "/jobs/missing", 404),
    ]
