"""Shared fixtures: real servers on 127.0.0.1, a clean environment, and the CLI.

Nothing here talks to anything but loopback.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from alertd.cli import cli
from alertd.market import Market
from alertd.standin import StandInServer
from tests.webhook import WebhookCollector

LOOPBACK_NAMES = {None, "", "127.0.0.1", "::1", "localhost", b"127.0.0.1", b"localhost"}
LOOPBACK_IPS = {"127.0.0.1", "::1"}
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ALERTD_* or proxy settings leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("ALERTD_") or name in PROXY_VARS or name == "REQUESTS_CA_BUNDLE":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("TZ", "UTC")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any attempt to resolve or connect to anything but loopback.

    Name lookups other than loopback raise ``OSError`` (and are listed), as do
    connections to a non-loopback address; the test fails at teardown if any happened.
    ``gethostbyaddr``/``gethostbyname`` answer "unknown" (``gaierror``) without being
    listed: smtplib asks for the machine's own name for its EHLO and falls back to
    ``[127.0.0.1]`` when that fails, which keeps even that question off the resolver.
    """
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK_NAMES:
            attempts.append(f"resolve {host!r}")
            raise OSError(f"test blocked a name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(address: Any) -> None:
        if isinstance(address, tuple) and address[0] not in LOOPBACK_IPS:
            attempts.append(f"connect {address!r}")
            raise OSError(f"test blocked a connection to {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def unknown(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "host lookups are blocked in this test")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyaddr", unknown)
    monkeypatch.setattr(socket, "gethostbyname", unknown)
    monkeypatch.setattr(socket, "gethostbyname_ex", unknown)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempts
    assert attempts == [], f"something tried to leave 127.0.0.1: {attempts}"


@pytest.fixture
def market() -> Market:
    """An empty simulated marketplace."""
    return Market(seed=7)


@pytest.fixture
def standin(market: Market) -> Iterator[StandInServer]:
    """The stand-in API on 127.0.0.1, edge cache off so every poll sees the latest jobs."""
    server = StandInServer(market, cache_ttl=0).start()
    yield server
    server.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A fresh state directory."""
    return tmp_path / "state"


WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path, standin: StandInServer, state_dir: Path) -> WriteConfig:
    """Write alerts.yaml pointing at the stand-in; top-level keys in ``body`` win over defaults."""

    def write(body: str, name: str = "alerts.yaml") -> Path:
        path = tmp_path / name
        body = textwrap.dedent(body)
        defaults = {
            "api_url": standin.url,
            "state_dir": str(state_dir),
            "poll_interval": "1",
            "requests_per_minute": "120",
        }
        given = set(re.findall(r"^(\w+):", body, flags=re.MULTILINE))
        head = "".join(f"{k}: {v}\n" for k, v in defaults.items() if k not in given)
        path.write_text(head + body, encoding="utf-8")
        return path

    return write


RunCli = Callable[..., Result]


@pytest.fixture
def run_cli() -> RunCli:
    """Invoke ``alertd`` in-process, as a user would from a shell."""

    def invoke(*args: str | Path) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def webhook() -> Iterator[WebhookCollector]:
    """A webhook target on 127.0.0.1 (apprise ``json://``) that can be taken down and up."""
    server = WebhookCollector()
    yield server
    server.stop()


ALERTD = [sys.executable, "-m", "alertd"]


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


StartDaemon = Callable[[Path], subprocess.Popen[str]]


def log_until(start_daemon: StartDaemon, config: Path, log: Path, text: str) -> str:
    """Start ``alertd run`` on ``config``, stop it once its log (``log``) says ``text``;
    the whole log."""
    daemon = start_daemon(config)
    wait_for(lambda: text in log.read_text())
    daemon.terminate()
    daemon.wait(timeout=15)
    return log.read_text()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[StartDaemon]:
    """Start ``alertd run`` as a process (log in daemon-N.log); killed at teardown if still up."""
    started: list[subprocess.Popen[str]] = []

    def start(config: Path) -> subprocess.Popen[str]:
        log = (tmp_path / f"daemon-{len(started)}.log").open("w")
        proc = subprocess.Popen(
            [*ALERTD, "run", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, text=True
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless chromium the size of a phone (``tests/browser.py``), for the page's
    browser tests; imported here only when a test asks for it."""
    from tests.browser import open_browser

    with open_browser() as driver:
        yield driver
