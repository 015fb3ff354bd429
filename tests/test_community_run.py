"""``alertd run`` serves the community page beside the cycle when the config has a
``community:`` section, and stops it with the daemon."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from alertd.market import Market
from alertd.standin import StandInServer
from tests.conftest import ALERTD, RunCli, WriteConfig
from tests.pageworld import CSRF, link_in
from tests.servers import SMTPCollector


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_serves_the_page_beside_the_cycle(write_config: WriteConfig, tmp_path: Path) -> None:
    port = _free_port()
    config = write_config(
        "poll_interval: 0.5\n"
        "community:\n"
        "  name: Guild\n"
        "  public_url: https://alerts.example.org\n"
        f"  listen: 127.0.0.1:{port}\n"
    )
    log = (tmp_path / "log.txt").open("w")
    daemon = subprocess.Popen([*ALERTD, "run", "-c", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=2)
                if "seconds ago" in status.text:  # a cycle has ended and the page knows
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert status is not None and status.status_code == 200, (tmp_path / "log.txt").read_text()
        assert re.search(r'id="last-cycle">\d+ seconds ago', status.text)
        assert 'id="api">answers' in status.text
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    assert "community page on http://127.0.0.1:" in (tmp_path / "log.txt").read_text()
    try:
        httpx.get(f"http://127.0.0.1:{port}/status", timeout=2)
        raise AssertionError("the page still answers after the daemon stopped")
    except httpx.TransportError:
        pass


def _wait(condition: object, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.slow
def test_a_member_signs_up_on_the_running_daemon_and_gets_alerts_until_one_click(
    write_config: WriteConfig, tmp_path: Path, market: Market, standin: StandInServer
) -> None:
    port = _free_port()
    with SMTPCollector() as smtp:
        config = write_config(
            "poll_interval: 0.5\n"
            "community:\n"
            "  name: Guild\n"
            "  public_url: http://alerts.example.org\n"
            f"  listen: 127.0.0.1:{port}\n"
            f"  mail: mailto://127.0.0.1:{smtp.port}?from=alerts@example.org\n"
        )
        log = (tmp_path / "log.txt").open("w")
        daemon = subprocess.Popen([*ALERTD, "run", "-c", str(config)], stdout=log, stderr=log)
        try:
            page = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            _wait(lambda: _answers(page), "the page never answered")
            found = CSRF.search(page.get("/").text)
            assert found
            form = {
                "csrf_token": found.group(1),
                "q": "audio",
                "pace": "now",
                "delivery": "email",
                "email": "ana@example.org",
                "action": "signup",
            }
            assert page.post("/signup", data=form).status_code == 200
            _wait(lambda: smtp.messages, "no confirmation mail")
            path = link_in(smtp.messages[0]).removeprefix("http://alerts.example.org")
            found = CSRF.search(page.get(path).text)
            assert found and page.post(path, data={"csrf_token": found.group(1)}).status_code == 303
            time.sleep(1.5)  # a cycle or two: the new search primes, silent
            market.add_job(title="Spanish audio transcription")
            _wait(lambda: len(smtp.messages) >= 2, "no alert mail", 30)
            alert = smtp.messages[1].message
            assert "Spanish audio transcription" in str(alert["Subject"]) + str(alert)
            assert alert["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            one_click = str(alert["List-Unsubscribe"]).strip().strip("<>")
            one_click = one_click.removeprefix("http://alerts.example.org")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as provider:
                answer = provider.post(one_click, data={"List-Unsubscribe": "One-Click"})
            assert answer.status_code == 200
            market.add_job(title="More audio work")
            time.sleep(3)  # several cycles
            assert len(smtp.messages) == 2
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0
    assert "ana@example.org" not in (tmp_path / "log.txt").read_text()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/status").status_code == 200
    except httpx.TransportError:
        return False


def test_a_damaged_members_table_stops_the_start_with_one_line(
    write_config: WriteConfig, run_cli: RunCli, state_dir: Path
) -> None:
    config = write_config(
        "community:\n  name: G\n  public_url: https://a.example\n"
        f"  listen: 127.0.0.1:{_free_port()}\n"
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "members.json").write_text("{not json")
    result = run_cli("run", "-c", config)
    assert result.exit_code == 1
    assert "members.json is not valid JSON" in result.output
    assert "Traceback" not in result.output
