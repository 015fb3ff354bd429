"""The API client against the stand-in: pages, budget, 429, back-off, bad data."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from datetime import UTC, datetime

import pytest

from alertd.api import OpenTrainClient, RateBudget, parse_retry_after
from alertd.errors import ApiError, ApiUnavailableError, StopRequestedError
from alertd.market import Market
from alertd.standin import EdgeState, Fault, StandInServer

FAST = (0.05, 0.05, 0.05)


def client_for(server: StandInServer, **kwargs: object) -> OpenTrainClient:
    options: dict[str, object] = {"retry_delays": FAST, "requests_per_minute": 120, "deadline": 2.0}
    options.update(kwargs)
    return OpenTrainClient(server.url, **options)  # type: ignore[arg-type]


def test_search_follows_every_page_once(market: Market, standin: StandInServer) -> None:
    ids = {market.add_job(category="Audio Annotation")["id"] for _ in range(250)}
    market.add_job(category="RLHF")
    with client_for(standin) as client:
        result = client.search_jobs({"category": "Audio Annotation"})
    assert result.pages == 3
    assert [j.id for j in result.jobs if j.id in ids] == [j.id for j in result.jobs]
    assert {j.id for j in result.jobs} == ids
    assert all("limit=100" in r.path for r in standin.requests("/jobs"))


def test_bad_pay_type_is_an_api_error_without_retries(standin: StandInServer) -> None:
    with client_for(standin) as client, pytest.raises(ApiError) as caught:
        client.search_jobs({"payType": "HOURLY"})
    assert caught.value.status == 400
    assert caught.value.code == "BAD_REQUEST"
    assert len(standin.requests("/jobs")) == 1


def test_429_waits_for_retry_after_then_succeeds(market: Market, standin: StandInServer) -> None:
    market.add_job()
    standin.add_fault(Fault("ratelimit", count=2, retry_after="1"))
    with client_for(standin) as client:
        result = client.search_jobs({})
    assert len(result.jobs) == 1
    served = standin.requests("/jobs")
    assert [r.status for r in served] == [429, 429, 200]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(served)]
    assert all(0.95 <= gap < 3 for gap in gaps), gaps  # waited what the server said, no more


def test_429_with_http_date_retry_after() -> None:
    now = datetime(2026, 6, 12, 8, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Fri, 12 Jun 2026 08:00:30 GMT", now) == 30.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("garbage", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize("kind", ["status", "nonjson", "truncated"])  # a deadline: not at once
def test_transient_faults_are_retried(market: Market, standin: StandInServer, kind: str) -> None:
    job = market.add_job()
    standin.add_fault(Fault(kind, count=2, delay=3.0))
    with client_for(standin, deadline=0.5) as client:
        result = client.search_jobs({})
    assert [j.id for j in result.jobs] == [job["id"]]
    assert len(standin.requests("/jobs")) == 3


def test_persistent_5xx_gives_up_with_a_clear_error(standin: StandInServer) -> None:
    standin.add_fault(Fault("status", status=503, count=10))
    with client_for(standin) as client, pytest.raises(ApiUnavailableError) as caught:
        client.search_jobs({})
    assert "HTTP 503" in str(caught.value)
    assert len(standin.requests("/jobs")) == 1 + len(FAST)


def test_broken_jobs_are_skipped_and_the_rest_kept(
    market: Market, standin: StandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = market.add_job(title="Fine job")
    bad_pay = market.add_job(title="Odd pay", pay="twenty dollars")
    market.add_raw({"title": "no id at all", "status": "OPEN", "datePosted": "2026-01-01"}, "x1")
    market.add_raw(["not", "an", "object"], "x2")
    odd_date = market.add_job(title="Odd date", datePosted="9999-12-31T23:59:59-01:00")
    caplog.set_level(logging.WARNING)
    with client_for(standin) as client:
        result = client.search_jobs({})
    assert {j.id for j in result.jobs} == {good["id"], bad_pay["id"], odd_date["id"]}
    assert result.skipped == 2
    odd = next(j for j in result.jobs if j.id == bad_pay["id"])
    assert odd.pay is None and odd.title == "Odd pay"
    assert "malformed pay" in caplog.text
    assert "no usable id" in caplog.text


class FakeClockBudget(RateBudget):
    """A budget whose waits advance a fake clock instead of sleeping."""

    def __init__(self, per_minute: int) -> None:
        self.now = 0.0
        self.waited: list[float] = []
        super().__init__(per_minute, clock=lambda: self.now, wait=self.advance)

    def advance(self, seconds: float) -> bool:
        self.waited.append(seconds)
        self.now += seconds
        return False


def most_in_any_minute(arrivals: list[float]) -> int:
    """The most arrivals a server counting a sliding 60 s window sees at once."""
    ordered = sorted(arrivals)
    return max(len([b for b in ordered if a <= b < a + 60.0]) for a in ordered)


def test_budget_holds_as_the_server_counts_whatever_the_latency() -> None:
    """Arrival lies anywhere between send and answer end; still never N+1 in 60 s."""
    rng = random.Random(3)
    budget = FakeClockBudget(per_minute=5)
    arrivals: list[float] = []
    for _ in range(60):
        with budget.slot():
            sent = budget.now
            budget.now += rng.choice([0.0, 0.1, 2.0, 9.0]) * rng.random()  # answer time varies
            arrivals.append(sent + (budget.now - sent) * rng.choice([0.0, 1.0, rng.random()]))
    assert most_in_any_minute(arrivals) <= 5
    assert budget.requests == 60
    assert budget.now < 12 * 75.0  # a full budget: about five requests a minute, not fewer


def test_budget_hold_from_retry_after_delays_every_endpoint() -> None:
    budget = FakeClockBudget(per_minute=100)
    budget.hold(30)
    budget.acquire()
    assert budget.now == pytest.approx(30)


SPEEDUP = 60.0  # one real second is a minute for both the client and the stand-in


def fast_clock() -> float:
    return time.monotonic() * SPEEDUP


class SlowUplinkEdge(EdgeState):
    """A stand-in edge where some requests arrive late: the first three of every six."""

    def over_limit(self, client: str) -> float | None:
        with self.lock:
            arrived = len(self.served)
        if arrived % 6 < 3:
            time.sleep(3.0 / SPEEDUP)  # three (fast) seconds on the way in
        return super().over_limit(client)


def test_budget_is_never_refused_by_a_server_counting_arrivals(market: Market) -> None:
    server = StandInServer(market, cache_ttl=0, rate_limit=3)
    server.edge = SlowUplinkEdge(rate_limit=3, cache_ttl=0, clock=fast_clock)
    server.start()
    stop = threading.Event()
    try:
        with client_for(server, requests_per_minute=3) as client:
            client.budget = RateBudget(
                3, stop=stop, clock=fast_clock, wait=lambda s: stop.wait(s / SPEEDUP)
            )
            for _ in range(7):
                client.facet_counts()
    finally:
        server.stop()
    statuses = [r.status for r in server.requests()]
    assert statuses == [200] * 7
    assert client.budget.requests == 7


def test_client_never_asks_for_more_than_the_api_allows(standin: StandInServer) -> None:
    with OpenTrainClient(standin.url, requests_per_minute=1000) as client:
        assert client.budget.per_minute == 120


def test_stop_interrupts_a_back_off_wait(standin: StandInServer) -> None:
    stop = threading.Event()
    standin.add_fault(Fault("status", status=503, count=10))
    client = OpenTrainClient(standin.url, retry_delays=(30.0,), stop=stop)
    threading.Timer(0.3, stop.set).start()
    started = datetime.now(UTC)
    with client, pytest.raises(StopRequestedError):
        client.search_jobs({})
    assert (datetime.now(UTC) - started).total_seconds() < 5


def test_facets(market: Market, standin: StandInServer) -> None:
    for _ in range(3):
        market.add_job(category="Audio Annotation")
    market.add_job(category="RLHF")
    with client_for(standin) as client:
        counts = client.facet_counts()
    assert counts["categories"][0] == ("Audio Annotation", 3)
