"""The API client honours HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY as httpx does by
default, and keeps its whole-request deadline and prompt stop through a proxy.

The API's host names here (``opentrain.test``) resolve nowhere: a request that does not
go through the proxy fails, and the loopback guard in conftest says so.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alertd.api import LIMIT_CODE, OpenTrainClient
from alertd.errors import ApiUnavailableError, StopRequestedError
from alertd.market import Market
from alertd.models import format_time
from alertd.standin import Fault, StandInServer
from tests.conftest import ALERTD, RunCli, WriteConfig
from tests.rawserver import RawServer
from tests.relay import Relay
from tests.servers import CapturedRequest, Reply, TLSInterceptProxy

API_HOST = "opentrain.test"


def outcome_within(seconds: float, call: Callable[[], object]) -> BaseException | object:
    """What ``call()`` returned or raised; fails the test if it takes over ``seconds``."""
    box: list[BaseException | object] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # the outcome under test
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"still waiting after {seconds}s"
    return box[0]


@pytest.fixture
def proxy(standin: StandInServer) -> Iterator[Relay]:
    """A forward proxy on 127.0.0.1 that sends every request to the stand-in."""
    relay = Relay(standin.server_address[1])
    yield relay
    relay.close()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_an_http_api_is_reached_through_the_proxy_the_environment_names(
    proxy: Relay,
    write_config: WriteConfig,
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost")  # conftest's names 127.0.0.1; not the API here
    config = write_config(f"api_url: http://{API_HOST}/\nsearches:\n  - name: all\n")
    result = run_cli("once", "-c", config, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "primed silently: all" in result.output
    assert proxy.targets[0].startswith(f"http://{API_HOST}/jobs/changes?since=")
    assert any(t.startswith(f"http://{API_HOST}/jobs?") for t in proxy.targets)


@pytest.mark.parametrize(
    ("no_proxy", "proxied"), [("127.0.0.1", False), ("", True), ("example.org,127.0.0.1", False)]
)
def test_no_proxy_sends_the_api_direct(
    standin: StandInServer,
    proxy: Relay,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
    proxied: bool,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    with OpenTrainClient(standin.url, retry_delays=()) as api:
        api.changes(datetime.now(UTC))
    assert bool(proxy.targets) is proxied
    assert len(standin.requests("/jobs/changes")) == 1


def api_reply(request: CapturedRequest) -> Reply:
    """What the API answers, as the intercepting proxy plays it."""
    now = format_time(datetime.now(UTC))
    if request.path.endswith("/jobs/changes"):
        return Reply.json(200, {"since": now, "until": now, "changes": [], "generatedAt": now})
    job = {"id": "via-proxy", "title": "Seen through the tunnel", "status": "OPEN"}
    return Reply.json(200, {"jobs": [job], "nextCursor": None, "generatedAt": now})


def test_an_https_api_is_reached_through_https_proxy_by_connect(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    host = f"api.{API_HOST}"
    with TLSInterceptProxy(hosts=(host,)) as tunnel:
        tunnel.set_reply(host, api_reply)
        monkeypatch.setenv("SSL_CERT_FILE", str(tunnel.write_ca(tmp_path / "ca.pem")))
        monkeypatch.setenv("HTTPS_PROXY", tunnel.url)
        monkeypatch.delenv("NO_PROXY")
        with OpenTrainClient(f"https://{host}/api/public/v1", retry_delays=()) as api:
            feed = api.changes(datetime.now(UTC))
            result = api.search_jobs({"q": "tunnel"})
        seen = [(r.method, r.path) for r in tunnel.requests(host)]
        assert tunnel.refused == [] and tunnel.errors == []
    assert feed.events == {}
    assert [job.title for job in result.jobs] == ["Seen through the tunnel"]
    assert seen == [("GET", "/api/public/v1/jobs/changes"), ("GET", "/api/public/v1/jobs")]


def test_a_proxied_request_keeps_its_whole_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    def trickle_headers(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: ")
        while not stop.wait(0.3):
            conn.sendall(b"a")

    server = RawServer(trickle_headers)
    relay = Relay(int(server.url.rsplit(":", 1)[1]))
    monkeypatch.setenv("HTTP_PROXY", relay.url)
    monkeypatch.delenv("NO_PROXY")
    try:
        with OpenTrainClient(f"http://{API_HOST}", deadline=1.0, retry_delays=(0.01,) * 3) as api:
            started = time.monotonic()
            failed = outcome_within(5, lambda: api.changes(datetime.now(UTC)))
            took = time.monotonic() - started
    finally:
        relay.close()
        server.close()
    assert isinstance(failed, ApiUnavailableError) and failed.code == LIMIT_CODE, failed
    assert took < 3, took
    assert len(relay.targets) == 1


def test_a_proxied_request_stops_within_a_second(
    market: Market, standin: StandInServer, proxy: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY")
    standin.add_fault(Fault("trickle", path="/jobs/changes", delay=0.3, count=1))
    stop = threading.Event()
    with OpenTrainClient(f"http://{API_HOST}", deadline=30.0, stop=stop) as api:
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        stopped = outcome_within(5, lambda: api.changes(datetime.now(UTC)))
    assert isinstance(stopped, StopRequestedError), stopped
    assert time.monotonic() - started < 2.5
    assert json.dumps(proxy.targets).count("/jobs/changes") == 1


@pytest.mark.parametrize("value", ["socks5://user:pw-secret@127.0.0.1:1", "ftp://127.0.0.1:1"])
def test_a_proxy_httpx_cannot_use_is_one_line_and_exit_2(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    config = write_config("searches:\n  - name: all\n")
    env = {**os.environ, "ALL_PROXY": value}
    done = subprocess.run(
        [*ALERTD, "once", "-c", str(config), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ALL_PROXY" in lines[0], done.stderr
    assert "pw-secret" not in done.stderr
