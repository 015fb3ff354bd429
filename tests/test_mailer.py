"""Members' mail goes over one SMTP session (a real aiosmtpd server on 127.0.0.1): a
burst of members' alerts is one connection, a refused address fails only that member
(and is never named in the error), and an idle session is opened anew."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from alertd import mailer
from alertd.deliver import send
from alertd.mailer import MEMBER_ADDRESS, SmtpServer, mailer_for
from alertd.models import Job, Target
from alertd.render import Item, Links, Message
from tests.servers import EphemeralController

LINKS = Links(
    manage="https://alerts.example.org/m/M",
    unsubscribe="https://alerts.example.org/u/U",
    list_id="l",
)


class Counting:
    """Keeps every message; counts sessions (EHLOs); refuses addresses at ``nobody``."""

    def __init__(self) -> None:
        self.sessions = 0
        self.received: list[tuple[str, ...]] = []

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody"):
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(tuple(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Counting, int]]:
    handler = Counting()
    controller = EphemeralController(handler, hostname="127.0.0.1", port=0, ready_timeout=5.0)
    controller.start()
    port = int(controller.port)
    yield handler, port
    mailer.close_all()
    controller.stop()


def member(port: int, address: str) -> Target:
    url = f"mailto://127.0.0.1:{port}?from=alerts@example.org&to={address}"
    return Target(key=f"member:{address}", label="member e-mail", url=url)


def alert(n: int) -> Message:
    job = Job(id=f"j{n}", title=f"Spanish audio {n}", url="https://x.example/j")
    return Message((Item(job, ("Audio",)),), links=LINKS)


def test_a_burst_of_members_mail_is_one_session(smtp: tuple[Counting, int]) -> None:
    handler, port = smtp
    for n in range(40):
        assert send(member(port, f"m{n}@example.com"), alert(n), 10).accepted
    assert handler.sessions == 1
    assert handler.received == [(f"m{n}@example.com",) for n in range(40)]


def test_a_refused_address_fails_that_member_only_and_is_not_named(
    smtp: tuple[Counting, int],
) -> None:
    handler, port = smtp
    refused = send(member(port, "nobody@example.com"), alert(1), 10)
    assert not refused.accepted and refused.permanent
    assert "nobody@example.com" not in (refused.error or "")
    assert MEMBER_ADDRESS in (refused.error or "")
    assert send(member(port, "ana@example.com"), alert(2), 10).accepted
    assert handler.received == [("ana@example.com",)] and handler.sessions == 1


def test_an_idle_session_is_opened_anew(
    smtp: tuple[Counting, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = smtp
    assert send(member(port, "a@example.com"), alert(1), 10).accepted
    server = SmtpServer.from_url(f"mailto://127.0.0.1:{port}?from=alerts@example.org")
    assert server is not None
    mailer_for(server, 10).used -= mailer.IDLE + 1  # as if it sat unused that long
    assert send(member(port, "b@example.com"), alert(2), 10).accepted
    assert handler.sessions == 2 and len(handler.received) == 2


def test_the_community_url_means_what_apprise_says() -> None:
    server = SmtpServer.from_url(
        "mailtos://alerts:pw@smtp.example.org?from=Guild%20Alerts%3Calerts@example.org%3E"
    )
    assert server is not None
    assert (server.host, server.port, server.mode) == ("smtp.example.org", 587, "starttls")
    assert (server.user, server.password, server.sender) == ("alerts", "pw", "alerts@example.org")
    assert server.sender_name == "Guild Alerts"
