"""The community page served for real: waitress on 127.0.0.1, the stand-in API, an SMTP
server catching its mails, and an httpx client that fills in forms as a browser would."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from alertd.api import OpenTrainClient
from alertd.community.config import CommunitySpec
from alertd.community.provider import MemberSearches
from alertd.community.serve import CommunityServer, serve_community
from alertd.config import Config, parse_config
from alertd.deliver import sender_for, with_feeds
from alertd.feeds import Feeds
from alertd.members import Members
from alertd.pipeline import run_once
from alertd.standin import StandInServer
from alertd.store import Store
from alertd.subscriptions import Subscriptions, of_config
from tests.servers import ReceivedMail, SMTPCollector

PUBLIC = "http://alerts.example.org"  # as behind a reverse proxy; links are mapped back
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def spec_for(smtp: SMTPCollector, **fields: object) -> CommunitySpec:
    """A community section that mails through ``smtp``; ``fields`` override."""
    values: dict[str, object] = {
        "name": "Annotators Guild",
        "public_url": PUBLIC,
        "mail": f"mailto://{smtp.host}:{smtp.port}?from=alerts@example.org",
        **fields,
    }
    return CommunitySpec.model_validate(values)


@dataclass
class PageWorld:
    """A served page and what it talks to."""

    server: CommunityServer
    members: Members
    smtp: SMTPCollector
    standin: StandInServer
    state_dir: Path

    def client(self, ip: str | None = None) -> httpx.Client:
        """A browser-like client; ``ip`` is sent as the reverse proxy would say it."""
        headers = {"X-Forwarded-For": ip} if ip else {}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=10)

    def local(self, link: str) -> str:
        """A link from a mail or page, as a path on the served page."""
        assert link.startswith(PUBLIC), link
        return link[len(PUBLIC) :]

    def mails_to(
        self, address: str | None, count: int = 1, wait: float = 10.0
    ) -> list[ReceivedMail]:
        """The mails sent to ``address`` (None: to anyone), once at least ``count``
        arrived (or ``wait`` ends)."""
        deadline = time.monotonic() + wait
        while True:
            found = [m for m in self.smtp.messages if address in (None, *m.rcpt_tos)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@contextmanager
def page_world(
    standin: StandInServer, state_dir: Path, channel_timeout: int = 30, **fields: object
) -> Iterator[PageWorld]:
    """Serve a page with ``fields`` in its community section until the block ends."""
    with SMTPCollector() as smtp:
        members = Members.open(state_dir)
        server = serve_community(
            spec_for(smtp, **fields),
            members,
            api_url=standin.url,
            state_dir=state_dir,
            requests_per_minute=60,
            port=0,  # any free port
            channel_timeout=channel_timeout,
            feeds=Feeds.open(state_dir),
        )
        try:
            yield PageWorld(server, members, smtp, standin, state_dir)
        finally:
            server.close()


def csrf_of(client: httpx.Client, path: str) -> str:
    """The CSRF token of the form at ``path`` (the session cookie lands in ``client``)."""
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    found = CSRF.search(answer.text)
    assert found, answer.text
    return found.group(1)


def link_in(mail: ReceivedMail) -> str:
    """The one link in a mail from the page."""
    text = "\n".join(mail.text_parts())
    found = re.search(r"https?://\S+", text)
    assert found, text
    return found.group(0)


def sign_up(
    world: PageWorld, client: httpx.Client, address: str | None, **fields: str
) -> httpx.Response:
    """Fill in and send the sign-up form (by e-mail when ``email``, else a feed)."""
    form = {
        "csrf_token": csrf_of(client, "/"),
        "q": "audio",
        "pace": "now",
        "delivery": "email" if address else "feed",
        "email": address or "",
        "action": "signup",
        **fields,
    }
    return client.post("/signup", data=form)


def confirm_by_mail(
    world: PageWorld, client: httpx.Client, email: str, nth: int = 1
) -> httpx.Response:
    """Press the button of the ``nth`` confirmation mail's page."""
    mail = world.mails_to(email, count=nth)[nth - 1]
    path = world.local(link_in(mail))
    token = csrf_of(client, path)
    return client.post(path, data={"csrf_token": token})


def member_config(world: PageWorld) -> Config:
    """A config whose community section is the page's, against its stand-in."""
    spec = world.server.page.spec
    text = (
        f"api_url: {world.standin.url}\nstate_dir: {world.state_dir}\n"
        f"community:\n  name: {spec.name}\n  public_url: {spec.public_url}\n"
        f"  mail: '{spec.mail}'\n"
    )
    return parse_config(text, str(world.state_dir.parent / "alerts.yaml"))


def member_cycle(
    world: PageWorld, config: Config, meanwhile: Callable[[], object] | None = None
) -> None:
    """One cycle of the members' searches; ``meanwhile`` runs once it took them."""
    assert config.community is not None
    provider = MemberSearches(world.members, config.community)
    subs = Subscriptions.gather([of_config(config.searches, config.owner), provider])
    if meanwhile is not None:
        meanwhile()
    with Store.open(config.state_dir) as store, OpenTrainClient(world.standin.url) as client:
        send = with_feeds(sender_for(10.0, config.tz), Feeds.open(config.state_dir))
        run_once(config, client, store, send, subscriptions=subs)
