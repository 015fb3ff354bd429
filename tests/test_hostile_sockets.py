"""Listening sockets against a client that opens many connections and says nothing: the
metrics port (and the stand-in API) close what is over their cap at once and what is
idle or too old after a while, so the daemon keeps its descriptors for its state and
its sends."""

from __future__ import annotations

import resource
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alertd.market import Market
from alertd.metrics import MetricsServer, bind_metrics
from alertd.standin import StandInServer
from tests.conftest import ALERTD, RunCli, WriteConfig, wait_for
from tests.webhook import WebhookCollector

IDLE = 250  # connections that connect and say nothing


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing (those the server refuses outright too)."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        held.append(sock)
    return held


def ok(environ: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
    start("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def idle() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def test_the_metrics_port_keeps_at_most_its_cap_and_closes_idle_ones(
    idle: list[socket.socket],
) -> None:
    server = bind_metrics(0)
    server.idle_timeout = 1.0
    server.connection_deadline = 2.0
    port = server.server_address[1]
    server.set_app(ok)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    ).start()
    try:
        idle += open_idle(port, IDLE)
        time.sleep(0.5)
        assert server.connections <= MetricsServer.max_connections
        wait_for(lambda: server.connections == 0, timeout=10)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickling_client_is_cut_at_the_whole_deadline(idle: list[socket.socket]) -> None:
    server = bind_metrics(0)
    server.idle_timeout = 5.0
    server.connection_deadline = 1.0
    port = server.server_address[1]
    server.set_app(ok)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    ).start()
    try:
        (sock,) = open_idle(port, 1)
        idle.append(sock)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 8 and not closed:
            try:
                sock.sendall(b"G")  # a byte well within the idle timeout, for ever
                time.sleep(0.3)
            except OSError:
                closed = True
        assert closed and time.monotonic() - started < 4
    finally:
        server.shutdown()
        server.server_close()


def test_the_standin_closes_connections_over_its_cap(
    standin: StandInServer, idle: list[socket.socket]
) -> None:
    port = int(standin.url.rsplit(":", 1)[1])
    idle += open_idle(port, 100)
    time.sleep(0.5)
    assert standin.connections <= StandInServer.max_connections


def few_descriptors() -> None:  # in the daemon: what a small container or a unit might give
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))


@pytest.mark.slow
def test_250_idle_metrics_connections_do_not_stop_the_daemon_delivering(
    write_config: WriteConfig,
    run_cli: RunCli,
    webhook: WebhookCollector,
    market: Market,
    state_dir: Path,
    tmp_path: Path,
    idle: list[socket.socket],
) -> None:
    port = free_port()
    config = write_config(
        f"metrics_port: {port}\npoll_interval: 0.5\n"
        f"searches:\n  - name: all\n    notify: ['{webhook.url}']\n"
    )
    assert run_cli("once", "-c", config).exit_code == 0  # primes
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*ALERTD, "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=few_descriptors,
        )
    try:
        wait_for(lambda: (state_dir / "heartbeat.json").exists())
        idle += open_idle(port, IDLE)
        market.add_job(title="Delivered while the metrics port is flooded")
        wait_for(lambda: len(webhook.received) == 1, timeout=20)
        wait_for(lambda: answers(port), timeout=40)  # once the idle ones are cut
        assert "Too many open files" not in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_the_unit_sets_a_descriptor_limit_with_room_for_the_state() -> None:
    unit = (Path(__file__).parent.parent / "systemd" / "alertd.service").read_text()
    limits = [
        line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("LimitNOFILE=")
    ]
    assert len(limits) == 1 and int(limits[0]) >= 256  # the metrics cap (16) is far below
