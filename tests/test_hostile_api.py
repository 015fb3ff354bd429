"""An API that means harm, or is very broken: alertd never hangs, never blows up, and one
bad answer costs one query this cycle, never the cycle or the process."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from alertd.api import MAX_RETRY_AFTER, ChangeFeed, OpenTrainClient, parse_retry_after
from alertd.errors import ApiDataError, ApiError
from alertd.market import Market
from alertd.standin import Fault, StandInServer
from tests.conftest import RunCli, WriteConfig
from tests.rawserver import RawServer, gz
from tests.world import alerts_in

NO_WAIT = (0.0, 0.0)


def client(server: StandInServer, **options: Any) -> OpenTrainClient:
    return OpenTrainClient(server.url, retry_delays=NO_WAIT, **options)


def within(seconds: float, call: Callable[[], object]) -> object:
    """Run ``call`` in a thread; fail the test if it has not returned after ``seconds``."""
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(_catch(call)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds}s"
    return outcome[0]


def _catch(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as exc:
        return exc


@pytest.mark.parametrize("value", ["99999999", "901", "Wed, 01 Jan 2099 00:00:00 GMT"])
def test_an_absurd_retry_after_is_capped(value: str) -> None:
    assert parse_retry_after(value, datetime.now(UTC)) == MAX_RETRY_AFTER == 900


@pytest.mark.parametrize("value", ["1e999", "inf", "-inf", "nan"])
def test_a_non_finite_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after(value, datetime.now(UTC)) is None


def test_a_server_that_trickles_its_answer_costs_one_deadline(
    market: Market, standin: StandInServer
) -> None:
    standin.add_fault(Fault("trickle", path="/jobs/changes", delay=0.3, count=3))
    with client(standin, deadline=1.0) as api:
        started = time.monotonic()
        failed = within(15, lambda: api.changes(datetime.now(UTC)))
        assert isinstance(failed, ApiError) and "took longer than 1s" in str(failed)
        assert time.monotonic() - started < 3  # one try of 1 s, not the body's 45 s
        assert len(standin.requests("/jobs/changes")) == 1  # not tried again at once
        standin.edge.faults.clear()
        assert api.changes(datetime.now(UTC)).until is not None  # the next answer is fine


def test_a_compression_bomb_is_refused_at_the_size_limit(
    market: Market, standin: StandInServer
) -> None:
    standin.add_fault(Fault("bomb", path="/jobs?", size=50_000_000, count=3))
    with client(standin, max_body=1_000_000) as api:
        failed = within(15, lambda: api.search_jobs({}))
        assert isinstance(failed, ApiError) and "larger than 1,000,000 bytes" in str(failed)


def test_any_httpx_error_is_an_api_error(market: Market, standin: StandInServer) -> None:
    standin.add_fault(Fault("badgzip", path="/jobs?", count=3))
    with client(standin) as api:
        failed = _catch(lambda: api.search_jobs({}))
    assert isinstance(failed, ApiError) and "could not be decoded" in str(failed)


def test_a_cursor_that_never_ends_fails_the_query_at_the_page_limit(
    market: Market, standin: StandInServer
) -> None:
    standin.add_fault(Fault("endless", path="/jobs?", count=1000))
    with client(standin, requests_per_minute=120, api_limit=10**6) as api:
        failed = within(30, lambda: api.search_jobs({}))
    assert isinstance(failed, ApiError) and "more than 100 pages" in str(failed)


def test_a_job_id_is_one_path_segment_and_within_the_contract(
    market: Market, standin: StandInServer
) -> None:
    with client(standin) as api:
        unknown = _catch(lambda: api.job(".."))
        assert isinstance(unknown, ApiError) and unknown.status == 404  # not the API root
        assert standin.requests()[-1].path == "/jobs/%2E%2E"
        served = len(standin.requests())
        for bad in ("", "x" * 65):
            assert isinstance(_catch(lambda bad=bad: api.job(bad)), ApiDataError)
        assert len(standin.requests()) == served  # refused before any request


def test_a_listed_job_whose_id_is_not_an_api_id_is_skipped_not_sent(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("searches:\n  - name: all\n    q: audio\n")  # free text: pages
    run_cli("once", "-c", config)
    market.add_job(id="x" * 5000, title="Audio with five thousand characters of id")
    market.add_job(title="Audio, a fine job")
    result = run_cli("once", "-c", config)
    assert "=== New OpenTrain job: Audio, a fine job" in result.stdout
    assert "five thousand" not in result.stdout and "x" * 100 not in result.output
    assert "is not an id the API gives" in result.output


def test_one_hostile_answer_fails_one_search_and_the_others_still_alert(
    market: Market, standin: StandInServer, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config(
        "searches:\n  - name: pods\n    q: podcast\n  - name: audio\n    category: RLHF\n"
    )
    run_cli("once", "-c", config)
    market.add_job(title="A podcast job", category="Audio Annotation")
    market.add_job(title="An RLHF job", category="RLHF")
    standin.add_fault(Fault("badgzip", path="/jobs?q=podcast", count=10))
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1  # the podcast search failed, and says so
    assert "search 'pods' skipped this cycle" in result.output
    assert alerts_in(result.stdout) == ["An RLHF job"]
    standin.edge.faults.clear()  # the server mends
    assert alerts_in(run_cli("once", "-c", config).stdout) == ["A podcast job"]


def _gzip_then_junk(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = gz(b"{}")
    conn.sendall(b"%x\r\n%s\r\n" % (len(body), body))
    junk = b"J" * 65536
    while not stop.wait(0.01):
        conn.sendall(b"%x\r\n%s\r\n" % (len(junk), junk))


def _empty_deflate_blocks(conn: socket.socket, stop: threading.Event) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n"
    conn.sendall(head + b"2\r\n\x78\x9c\r\n")
    block = b"\x00\x00\x00\xff\xff" * 1000  # empty stored blocks: inflate to nothing
    while not stop.wait(0.05):
        conn.sendall(b"%x\r\n%s\r\n" % (len(block), block))


@pytest.mark.parametrize("behave", [_gzip_then_junk, _empty_deflate_blocks])
def test_a_body_that_never_inflates_to_anything_still_meets_the_deadline(
    behave: Callable[[socket.socket, threading.Event], None],
) -> None:
    server = RawServer(behave)
    try:
        api = OpenTrainClient(server.url, deadline=1.0, retry_delays=())
        assert isinstance(within(6, lambda: api.get_json("jobs/changes")), ApiError)
    finally:
        server.close()


def test_a_layered_compression_bomb_is_refused_without_inflating_it() -> None:
    body = gz(gz(bytes(50_000_000)))

    def bomb(conn: socket.socket, stop: threading.Event) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, gzip\r\nContent-Length: %d\r\n\r\n"
        conn.sendall(head % len(body) + body)

    server = RawServer(bomb)
    try:
        api = OpenTrainClient(server.url, max_body=1_000_000, retry_delays=())
        tracemalloc.start()
        failed = _catch(lambda: api.get_json("jobs"))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert isinstance(failed, ApiError) and "does not accept" in str(failed)
        assert peak < 20_000_000
    finally:
        server.close()


def test_a_feed_answer_nested_past_reason_is_an_api_error() -> None:
    nested = b"[" * 50_000 + b"]" * 50_000

    def deep(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(nested), nested))

    server = RawServer(deep)
    try:
        api = OpenTrainClient(server.url, retry_delays=())
        assert isinstance(_catch(lambda: api.changes(datetime.now(UTC))), ApiError)
    finally:
        server.close()


def test_one_job_with_an_absurd_pay_number_does_not_silence_its_query(
    market: Market, write_config: WriteConfig, run_cli: RunCli
) -> None:
    config = write_config("searches:\n  - name: pods\n    q: podcast\n")
    run_cli("once", "-c", config)
    market.add_job(title="A podcast job")
    market.add_job(title="A podcast job paying 1e400", pay={"hourlyRate": 10**400})
    result = run_cli("once", "-c", config)
    assert result.exit_code == 0, result.output
    assert sorted(alerts_in(result.stdout)) == ["A podcast job", "A podcast job paying 1e400"]


def test_one_absurd_feed_timestamp_does_not_abort_the_cycle(
    market: Market, write_config: WriteConfig, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config("searches:\n  - name: all\n")
    run_cli("once", "-c", config)
    odd = market.add_job(title="Edited at the dawn of time")
    market.add_job(title="A fine new job")
    real = OpenTrainClient.changes

    def changes(self: OpenTrainClient, since: datetime) -> ChangeFeed:
        feed = real(self, since)  # as if the API had said year 1 for this one event
        feed.events[odd["id"]] = ("UPDATED", datetime(1, 1, 1, tzinfo=UTC))
        return feed

    monkeypatch.setattr(OpenTrainClient, "changes", changes)
    result = run_cli("once", "-c", config)
    assert "cycle failed unexpectedly" not in result.output
    assert sorted(alerts_in(result.stdout)) == ["A fine new job", odd["title"]]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_answer_split_into_small_reads_is_read_whole(encoding: str) -> None:
    payload = b'{"since": "x", "until": "y", "changes": [], "pad": "' + b"p" * 5000 + b'"}'
    body = gz(payload) if encoding == "gzip" else zlib.compress(payload)

    def chunked(conn: socket.socket, stop: threading.Event) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n"
        conn.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 7):
            piece = body[start : start + 7]
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.001)
        conn.sendall(b"0\r\n\r\n")

    server = RawServer(chunked)
    try:
        api = OpenTrainClient(server.url, retry_delays=())
        answer = api.get_json("jobs/changes")
        assert answer["pad"] == "p" * 5000
    finally:
        server.close()


def _serve_once(body: bytes, encoding: str) -> RawServer:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: {len(body)}"
        conn.sendall(head.encode() + b"\r\n\r\n" + body)

    return RawServer(answer)


@pytest.mark.parametrize(
    ("body", "encoding", "accepted"),
    [
        (gz(b'{"a": 1}')[:-8], "gzip", False),  # its trailer (the CRC) cut off
        (gz(b'{"a": 1}') + b"junk", "gzip", False),  # junk in the same read
        (zlib.compress(b'{"a": 1}')[2:-4], "deflate", True),  # raw deflate, as some send
        (zlib.compress(b'{"a": 1}'), "deflate", True),
    ],
)
def test_a_compressed_answer_is_taken_only_whole(
    body: bytes, encoding: str, accepted: bool
) -> None:
    server = _serve_once(body, encoding)
    try:
        answer = _catch(lambda: OpenTrainClient(server.url, retry_delays=()).get_json("x"))
        assert (answer == {"a": 1}) is accepted, answer
    finally:
        server.close()


def test_response_headers_sent_a_byte_at_a_time_meet_the_deadline() -> None:
    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: ")
        while not stop.wait(0.3):
            conn.sendall(b"a")

    server = RawServer(trickle)
    try:
        api = OpenTrainClient(server.url, deadline=1.0, retry_delays=())
        started = time.monotonic()
        failed = within(6, lambda: api.get_json("jobs/changes"))
        assert isinstance(failed, ApiError) and time.monotonic() - started < 3
    finally:
        server.close()


def test_a_retry_after_past_what_a_cycle_waits_fails_the_search_at_once(
    market: Market, standin: StandInServer
) -> None:
    standin.add_fault(Fault("ratelimit", path="/jobs?", retry_after="900", count=10))
    with client(standin) as api:
        failed = within(5, lambda: api.search_jobs({}))  # not 15 minutes of sleep
    assert isinstance(failed, ApiError) and "rate limited by the API for another" in str(failed)


def test_a_cursor_the_api_gave_before_fails_the_query_instead_of_a_partial_list() -> None:
    asked: list[bytes] = []

    def same_cursor(conn: socket.socket, stop: threading.Event) -> None:
        asked.append(b"")
        body = b'{"jobs": [], "nextCursor": "again"}'
        head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
        conn.sendall(head % len(body) + body)

    server = RawServer(same_cursor)
    try:
        api = OpenTrainClient(server.url, retry_delays=())
        failed = within(5, lambda: api.search_jobs({}))
        assert isinstance(failed, ApiError) and "cursor before" in str(failed)
        assert len(asked) == 2  # the first page, and the one that repeated its cursor
    finally:
        server.close()
