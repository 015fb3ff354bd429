"""A target that misbehaves on purpose: an answer that never ends, one that trickles, a
redirect to another host. Each answer is read within the send's deadline and a size cap,
an accepted send is never repeated, a redirect is a failure the operator sees, and a
SIGTERM during a send ends the daemon within about a second."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import alertd.deliver as deliver
from alertd.deliver import Outcome, Webhook, send
from alertd.market import Market
from alertd.models import Job, Target
from alertd.render import Item, Message
from tests.conftest import RunCli, StartDaemon, WriteConfig, wait_for
from tests.rawserver import RawServer

MESSAGE = Message((Item(Job(id="j1", title="A job", date_posted=datetime.now(UTC)), ("all",)),))
HEAD_200 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"


class Counting:
    """A raw server that counts the requests it was sent and answers with ``answer``."""

    def __init__(self, answer: Callable[[socket.socket, threading.Event], None]) -> None:
        self.requests: list[bytes] = []
        self.lock = threading.Lock()

        def behave(conn: socket.socket, stop: threading.Event) -> None:
            answer(conn, stop)

        self.server = RawServer(behave)
        self.url = self.server.url
        original = self.server._one

        def one(conn: socket.socket) -> None:  # record the request's head, then answer
            conn.settimeout(5)
            head = conn.recv(65536, socket.MSG_PEEK)
            with self.lock:
                self.requests.append(head)
            original(conn)

        self.server._one = one  # type: ignore[method-assign]

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)


def endless(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(HEAD_200)
    block = b"x" * 65536
    while not stop.is_set():
        conn.sendall(block)


def trickle(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(HEAD_200)
    while not stop.wait(0.3):
        conn.sendall(b".")


def redirect(status: int, to: str) -> Callable[[socket.socket, threading.Event], None]:
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(
            f"HTTP/1.1 {status} Moved\r\nLocation: {to}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )

    return answer


@pytest.fixture
def servers() -> Iterator[list[Counting]]:
    made: list[Counting] = []
    yield made
    for each in made:
        each.server.close()


def serve(
    servers: list[Counting], answer: Callable[[socket.socket, threading.Event], None]
) -> Counting:
    server = Counting(answer)
    servers.append(server)
    return server


def timed_send(target: Target, timeout: float, limit: float) -> tuple[Outcome, float]:
    """``send``, on a thread the test gives up on after ``limit`` seconds (today's code
    reads an endless answer for ever)."""
    box: list[Outcome] = []
    started = time.monotonic()
    thread = threading.Thread(
        target=lambda: box.append(send(target, MESSAGE, timeout)), daemon=True
    )
    thread.start()
    thread.join(limit)
    assert box, f"the send was still reading the answer after {limit}s"
    return box[0], time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("answer", [endless, trickle], ids=["endless", "trickling"])
def test_an_accepted_send_whose_answer_never_ends_is_sent_within_its_deadline(
    servers: list[Counting], answer: Callable[[socket.socket, threading.Event], None]
) -> None:
    target_server = serve(servers, answer)
    target = Target.for_url(f"json://127.0.0.1:{target_server.url.rsplit(':', 1)[1]}/hook", "hook")
    outcome, took = timed_send(target, timeout=4.0, limit=15.0)
    assert outcome.accepted, outcome
    assert took < 6.0
    assert target_server.count == 1


@pytest.mark.slow
@pytest.mark.parametrize("answer", [endless, trickle], ids=["endless", "trickling"])
def test_a_discord_webhook_whose_answer_never_ends_is_sent_within_its_deadline(
    servers: list[Counting],
    answer: Callable[[socket.socket, threading.Event], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target_server = serve(servers, answer)
    hook = Webhook("Discord", f"{target_server.url}/api/webhooks/1/tok")
    monkeypatch.setattr(deliver, "webhook_for", lambda url: hook)
    target = Target.for_url("discord://1/tok", "discord")
    outcome, took = timed_send(target, timeout=4.0, limit=15.0)
    assert outcome.accepted, outcome
    assert took < 6.0
    assert target_server.count == 1


def test_a_huge_refusal_is_read_only_up_to_the_cap(servers: list[Counting]) -> None:
    def refuse(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n")
        while not stop.is_set():
            conn.sendall(b"y" * 65536)

    target_server = serve(servers, refuse)
    target = Target.for_url(f"json://127.0.0.1:{target_server.url.rsplit(':', 1)[1]}/hook", "hook")
    outcome, took = timed_send(target, timeout=5.0, limit=10.0)
    assert not outcome.accepted and "500" in (outcome.error or ""), outcome
    assert took < 3.0  # stopped at the cap, not at the deadline


def json_url(server: Counting, query: str = "") -> str:
    return f"json://127.0.0.1:{server.url.rsplit(':', 1)[1]}/hook{query}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_and_nothing_reaches_the_other_host(
    servers: list[Counting], status: int
) -> None:
    other = serve(servers, redirect(200, "/"))  # would accept anything
    first = serve(servers, redirect(status, f"{other.url}/elsewhere?token=abcd1234"))
    target = Target.for_url(json_url(first, "?+X-Token=sekrit-value"), "team-hook")
    outcome, _ = timed_send(target, timeout=5.0, limit=10.0)
    assert not outcome.accepted
    assert f"answered {status} to {other.url} (a redirect)" in (outcome.error or ""), outcome
    assert "abcd1234" not in (outcome.error or "") and "sekrit" not in (outcome.error or "")
    assert outcome.permanent is (status in (301, 308))
    assert first.count == 1 and other.count == 0


def test_a_redirect_loop_is_one_post(servers: list[Counting]) -> None:
    loop = serve(servers, redirect(200, "/"))
    loop.server.behave = redirect(307, "/hook")
    outcome, _ = timed_send(Target.for_url(json_url(loop), "loop"), timeout=5.0, limit=10.0)
    assert not outcome.accepted and "307" in (outcome.error or "")
    assert loop.count == 1


def test_a_discord_redirect_is_a_failure(
    servers: list[Counting], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = serve(servers, redirect(200, "/"))
    first = serve(servers, redirect(308, f"{other.url}/api"))
    monkeypatch.setattr(deliver, "webhook_for", lambda url: Webhook("Discord", f"{first.url}/x"))
    outcome, _ = timed_send(Target.for_url("discord://1/tok", "discord"), 5.0, 10.0)
    assert not outcome.accepted and outcome.permanent
    assert "answered 308" in (outcome.error or "") and other.count == 0


def test_a_redirected_alert_stays_owed_with_one_line_naming_the_target(
    servers: list[Counting], write_config: WriteConfig, run_cli: RunCli, market: Market
) -> None:
    other = serve(servers, redirect(200, "/"))
    first = serve(servers, redirect(307, f"{other.url}/hook"))
    url = json_url(first, "?+X-Token=sekrit-value")
    config = write_config(
        f"retry_schedule: [60]\nsearches:\n  - name: all\n    notify: ['{url}']\n"
    )
    assert run_cli("once", "-c", config).exit_code == 0  # primes
    market.add_job(title="Redirected away")
    result = run_cli("once", "-c", config)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "redirect" in line]
    assert len(lines) == 1, result.output
    assert "did not accept job" in lines[0] and "127.0.0.1" in lines[0]
    assert "sekrit" not in result.output
    assert other.count == 0
    status = run_cli("status", "-c", config)
    assert "sent: 0  owed: 1" in status.output
    assert f"last error: answered 307 to {other.url} (a redirect)" in status.output
    assert "sekrit" not in status.output


@pytest.mark.slow
def test_sigterm_during_a_trickling_send_ends_within_a_second_and_never_resends(
    servers: list[Counting],
    write_config: WriteConfig,
    run_cli: RunCli,
    market: Market,
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    target = serve(servers, trickle)
    config = write_config(
        f"send_timeout: 60s\nsearches:\n  - name: all\n    notify: ['{json_url(target)}']\n"
    )
    assert run_cli("once", "-c", config).exit_code == 0  # primes
    market.add_job(title="Accepted, then trickled")
    daemon = start_daemon(config)
    wait_for(lambda: target.count == 1, timeout=30)
    time.sleep(1.0)  # the status line is in; the body trickles
    daemon.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    daemon.wait(timeout=20)
    assert time.monotonic() - asked < 4.0  # about 1 s on a quiet machine; a busy CI is slower
    run_cli("once", "-c", config)
    assert target.count == 1  # accepted once, never sent again


@pytest.mark.slow
def test_a_urls_own_read_timeout_is_the_deadline_when_longer(servers: list[Counting]) -> None:
    def late(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait(2.5)  # answers after the send_timeout, within the URL's rto
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    server = serve(servers, late)
    outcome, _ = timed_send(Target.for_url(json_url(server, "?rto=6"), "slow"), 1.0, 10.0)
    assert outcome.accepted, outcome
