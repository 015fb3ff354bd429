"""What the page said is done survives ``kill -9`` the instant after it said so: the
page runs in its own process, is killed right after its answer, and the members
table is read afresh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alertd.members import Members
from alertd.standin import StandInServer
from tests.pageworld import CSRF, PUBLIC, link_in
from tests.servers import SMTPCollector

SERVE = """
import sys, threading
from pathlib import Path
from alertd.community.config import CommunitySpec
from alertd.community.serve import serve_community
from alertd.members import Members
state, api, smtp_port = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
spec = CommunitySpec(name="Guild", public_url="http://alerts.example.org",
                     mail=f"mailto://127.0.0.1:{smtp_port}?from=alerts@example.org")
server = serve_community(spec, Members.open(state), api_url=api, state_dir=state,
                         requests_per_minute=60, port=0)
print(server.url, flush=True)
threading.Event().wait()
"""


@pytest.fixture
def page(
    standin: StandInServer, state_dir: Path
) -> Iterator[tuple[subprocess.Popen[str], str, SMTPCollector]]:
    with SMTPCollector() as smtp:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(state_dir), standin.url, str(smtp.port)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), url
            yield process, url, smtp
        finally:
            process.kill()
            process.wait(10)


def _csrf(client: httpx.Client, path: str) -> str:
    found = CSRF.search(client.get(path).text)
    assert found
    return found.group(1)


def _killed(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(10) == -signal.SIGKILL


def test_a_confirmed_signup_survives_kill_9_right_after_the_answer(
    page: tuple[subprocess.Popen[str], str, SMTPCollector], state_dir: Path
) -> None:
    process, url, smtp = page
    with httpx.Client(base_url=url, timeout=10) as client:
        form = {
            "csrf_token": _csrf(client, "/"),
            "q": "audio",
            "pace": "now",
            "delivery": "email",
            "email": "ana@example.org",
            "action": "signup",
        }
        assert client.post("/signup", data=form).status_code == 200
        deadline = time.monotonic() + 10
        while not smtp.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        path = link_in(smtp.messages[0])[len(PUBLIC) :]
        answer = client.post(path, data={"csrf_token": _csrf(client, path)})
        assert answer.status_code == 303
        _killed(process)
    [(member, search)] = Members.open(state_dir).active()
    assert member.email == "ana@example.org" and search.q == "audio"


def test_an_unsubscribe_survives_kill_9_right_after_the_answer(
    page: tuple[subprocess.Popen[str], str, SMTPCollector], state_dir: Path
) -> None:
    process, url, _ = page
    with httpx.Client(base_url=url, timeout=10) as client:
        form = {
            "csrf_token": _csrf(client, "/"),
            "q": "audio",
            "pace": "now",
            "delivery": "feed",
            "action": "signup",
        }
        assert client.post("/signup", data=form).status_code == 303
        members = Members.open(state_dir)
        [(_, search)] = members.active()
        link = members.unsubscribe_url(search.id, PUBLIC)[len(PUBLIC) :]
        answer = client.post(link, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
        _killed(process)
    assert Members.open(state_dir).active() == []
