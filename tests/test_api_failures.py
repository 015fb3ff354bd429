"""What a failed API request costs: a deadline is not retried at once, an unreachable API
ends the cycle's asking in one line, and a bug of ours surfaces as a bug."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import httpx
import pytest

from alertd.api import LIMIT_CODE, LimitBackoff, OpenTrainClient
from alertd.config import load_config
from alertd.deliver import Outcome
from alertd.errors import ApiUnavailableError
from alertd.market import Market
from alertd.pipeline import Cycle, make_client, run_once
from alertd.render import Message
from alertd.standin import Fault, StandInServer
from alertd.store import Store
from tests.conftest import RunCli, WriteConfig
from tests.relay import Relay

SLOW = "/jobs?q=slow"


def alerts_in(output: str) -> list[str]:
    """The job titles the dry-run / stdout target printed, in order."""
    mark = "=== New OpenTrain job: "
    return [line.split(mark, 1)[1] for line in output.splitlines() if mark in line]


def two_searches(write_config: WriteConfig, **top: str) -> Path:
    """One search whose answer will trickle (``slow``) and one that is fine."""
    head = "".join(f"{key}: {value}\n" for key, value in top.items())
    return write_config(
        head + "searches:\n  - name: slow\n    q: slow\n  - name: fine\n    q: fine\n"
    )


# -- 1. a deadline is not retried at once -------------------------------------------


@pytest.mark.slow
def test_a_trickling_query_costs_one_try_a_cycle_and_the_others_are_answered(
    market: Market, standin: StandInServer, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = two_searches(write_config, request_timeout="1s")
    standin.add_fault(Fault("trickle", path=SLOW, delay=0.5, count=100))
    run_cli("once", "-c", config)  # primes 'fine'; 'slow' fails its priming
    assert len(standin.requests(SLOW)) == 1
    market.add_job(title="A fine job")
    started = time.monotonic()
    result = run_cli("once", "-c", config)
    took = time.monotonic() - started
    assert len(standin.requests(SLOW)) == 2  # one try this cycle, not four
    assert alerts_in(result.stdout) == ["A fine job"]
    assert "search 'slow' skipped this cycle" in result.output
    assert "took longer than 1s; not tried again before the next cycle" in result.output
    assert took < 5, took  # one deadline, not four and their back-off


def test_an_answer_over_the_size_limit_is_not_tried_again_at_once(
    market: Market, standin: StandInServer
) -> None:
    standin.add_fault(Fault("bomb", path="/jobs?", size=5_000_000, count=10))
    api = OpenTrainClient(standin.url, max_body=1_000_000, retry_delays=(0.01,) * 3)
    with api, pytest.raises(ApiUnavailableError) as caught:
        api.search_jobs({})
    assert caught.value.code == LIMIT_CODE
    assert "larger than 1,000,000 bytes" in str(caught.value)
    assert len(standin.requests("/jobs?")) == 1


def test_a_5xx_is_still_retried_within_the_cycle(market: Market, standin: StandInServer) -> None:
    market.add_job(title="Behind a hiccup")
    standin.add_fault(Fault("status", path="/jobs?", status=503, count=2))
    with OpenTrainClient(standin.url, retry_delays=(0.01,) * 3) as api:
        assert [job.title for job in api.search_jobs({}).jobs] == ["Behind a hiccup"]
    assert [r.status for r in standin.requests("/jobs?")] == [503, 503, 200]


@pytest.mark.slow
def test_a_query_that_keeps_trickling_skips_cycles_and_the_daemon_asks_again_later(
    market: Market, standin: StandInServer, write_config: WriteConfig, state_dir: Path
) -> None:
    # The daemon's way: one client for every cycle. poll 20 s: a skipped cycle is 20 s.
    path = two_searches(write_config, request_timeout="1s", poll_interval="20s")
    config = load_config(path)
    standin.add_fault(Fault("trickle", path=SLOW, delay=0.5, count=100))
    tries = []
    with Store.open(state_dir) as store, make_client(config) as client:
        for _ in range(3):
            run_once(config, client, store, lambda target, message: Outcome(True))
            tries.append(len(standin.requests(SLOW)))
        assert tries == [1, 2, 2]  # failed, asked the next cycle, then left alone a while
        client.limits.clock = lambda: time.monotonic() + 25  # past the first pause
        run_once(config, client, store, lambda target, message: Outcome(True))
        assert len(standin.requests(SLOW)) == 3


def test_the_pause_doubles_from_one_poll_interval_and_an_answer_ends_it() -> None:
    now = [0.0]
    limits = LimitBackoff(10.0, clock=lambda: now[0])
    pauses = []
    for _ in range(6):
        limits.failed("q")
        pauses.append(limits.failing["q"][1] - now[0])
    assert pauses == [0.0, 10.0, 30.0, 70.0, 150.0, 310.0]
    for _ in range(20):
        limits.failed("q")
    assert limits.failing["q"][1] - now[0] == 3600.0  # never more than an hour
    with pytest.raises(ApiUnavailableError) as caught:
        limits.check("q")
    assert caught.value.code == LIMIT_CODE
    limits.check("other")  # others go as usual
    limits.answered("q")
    limits.check("q")


# -- 3. fail fast when nothing can work -----------------------------------------------


def refused_url() -> str:
    """A 127.0.0.1 URL on which nothing listens: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_once_against_a_refused_port_says_so_in_one_line_within_seconds(
    write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config(
        f"api_url: {refused_url()}\npoll_interval: 5m\nsearches:\n"
        + "".join(f"  - name: s{i}\n    q: word{i}\n" for i in range(4))
    )
    started = time.monotonic()
    result = run_cli("once", "-c", config, "--dry-run")
    took = time.monotonic() - started
    assert result.exit_code == 1
    assert took < 4, took
    said = [line for line in result.output.splitlines() if "cannot be reached" in line]
    assert len(said) == 1, result.output
    assert "Connection refused" in said[0] and "the next cycle tries again" in said[0]
    assert "skipped this cycle" not in result.output  # no line per search
    assert "1 request" in result.output


def test_the_next_cycle_tries_again_and_recovers(
    market: Market, write_config: WriteConfig, state_dir: Path
) -> None:
    url = refused_url()
    path = write_config(f"api_url: {url}\nsearches:\n  - name: all\n")
    config = load_config(path)
    sent: list[Message] = []

    def send(target: object, message: Message) -> Outcome:
        sent.append(message)
        return Outcome(True)

    with Store.open(state_dir) as store, make_client(config) as client:
        for _ in range(2):  # the daemon's client: a cycle after an unreachable one tries
            report = run_once(config, client, store, send)
            assert report.api_unreachable and report.requests == 1
        server = StandInServer(market, port=int(url.rsplit(":", 1)[1]), cache_ttl=0).start()
        try:
            report = run_once(config, client, store, send)
            assert not report.api_unreachable and report.primed == ["all"], report.summary()
            market.add_job(title="After the outage")
            run_once(config, client, store, send)
        finally:
            server.stop()
    assert [item.job.title for message in sent for item in message.items] == ["After the outage"]


def test_an_api_gone_in_the_middle_of_a_cycle_ends_its_asking(
    standin: StandInServer,
    state_dir: Path,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    front = Relay(standin.server_address[1])
    path = write_config(
        f"api_url: {front.url}\nsearches:\n"
        + "".join(f"  - name: s{i}\n    q: word{i}\n" for i in range(4))
    )
    config = load_config(path)
    read_feed = Cycle.read_feed

    def read_then_go_away(self: Cycle) -> bool:
        answered = read_feed(self)
        front.close()  # the API goes away once the feed has answered
        return answered

    monkeypatch.setattr(Cycle, "read_feed", read_then_go_away)
    with Store.open(state_dir) as store, make_client(config) as client:
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            report = run_once(config, client, store, lambda target, message: Outcome(True))
    assert time.monotonic() - started < 3
    assert len(report.failed_searches) == 1  # the first search found no API; no other asked
    said = [r.getMessage() for r in caplog.records if r.name.startswith("alertd")]
    assert len(said) == 1 and "cannot be reached" in said[0], said
    assert [r.path.split("?")[0] for r in standin.requests()] == ["/jobs/changes"]


# -- 4. errors where they are -------------------------------------------------------------


def test_a_bug_in_a_request_is_not_retried_and_is_logged_once_with_its_traceback(
    market: Market,
    standin: StandInServer,
    write_config: WriteConfig,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config("searches:\n  - name: buggy\n    q: buggy\n  - name: fine\n    q: fine\n")
    run_cli("once", "-c", config)
    market.add_job(title="A fine job")
    real = OpenTrainClient._read_body

    def read_body(self: OpenTrainClient, response: httpx.Response, started: float) -> bytes:
        if "q=buggy" in str(response.url):
            raise TypeError("injected bug in our own code")
        return real(self, response, started)

    monkeypatch.setattr(OpenTrainClient, "_read_body", read_body)
    before = len(standin.requests("/jobs?q=buggy"))
    result = run_cli("once", "-c", config)
    assert len(standin.requests("/jobs?q=buggy")) == before + 1  # not retried
    assert result.output.count("Traceback (most recent call last)") == 1, result.output
    assert result.output.count("TypeError: injected bug in our own code") == 1
    assert "search 'buggy' failed unexpectedly this cycle" in result.output
    assert "request failed" not in result.output
    assert alerts_in(result.stdout) == ["A fine job"]
    assert result.exit_code == 1


def test_a_bug_inside_a_request_goes_up_as_itself_not_as_a_failed_request(
    standin: StandInServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(encoding: str, first: bytes) -> None:
        raise TypeError("injected bug")

    monkeypatch.setattr("alertd.api._inflater", broken)
    kinds: list[str] = []
    with OpenTrainClient(standin.url, retry_delays=(0.01,) * 3) as api:
        api.on_request = lambda endpoint, kind: kinds.append(kind)
        with pytest.raises(TypeError, match="injected bug"):
            api.get_json("jobs/changes", {"since": "2026-01-01T00:00:00.000Z"})
    assert len(standin.requests("/jobs/changes")) == 1
    assert kinds == ["error"]
