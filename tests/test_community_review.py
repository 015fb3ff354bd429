"""A second, hostile review of the community page, served for real on 127.0.0.1: what a
member who deletes everything leaves behind, and the attacks the first review did not
try (cross-member links, spoofed proxy headers, replayed links, the one-click POST's
edges)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alertd import mailer
from alertd.deliver import send
from alertd.errors import StoreError
from alertd.mailer import MEMBER_ADDRESS
from alertd.market import Market
from alertd.members import MEMBERS_FILE, SearchDraft
from alertd.models import Job, Target
from alertd.render import Item, Links, Message
from alertd.standin import StandInServer
from tests.pageworld import (
    PUBLIC,
    PageWorld,
    confirm_by_mail,
    csrf_of,
    link_in,
    member_config,
    member_cycle,
    page_world,
    sign_up,
)
from tests.servers import EphemeralController

STRANGER = 54321  # a uid that is neither root nor the one running the tests


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[PageWorld]:
    with page_world(standin, state_dir) as world:
        yield world


def _member(world: PageWorld, client: httpx.Client, email: str, nth: int = 1, **fields: str) -> str:
    sign_up(world, client, email, **fields)
    return str(confirm_by_mail(world, client, email, nth).headers["location"]).split("?")[0]


def _files_holding(state_dir: Path, text: str) -> list[str]:
    """Every file under the state directory whose bytes hold ``text``."""
    needle = text.encode()
    return sorted(
        str(path.relative_to(state_dir))
        for path in state_dir.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    )


def test_delete_everything_forgets_a_sign_up_not_yet_confirmed(world: PageWorld) -> None:
    """A member asks for a second search, then deletes everything before confirming it:
    their address must leave members.json now (not in 48 hours), and the old link must
    not bring them back."""
    address = "ha@example.org"
    with world.client() as client:
        manage = _member(world, client, address)
        assert sign_up(world, client, address, q="german").status_code == 200
        second = world.local(link_in(world.mails_to(address, count=2)[1]))
        token = csrf_of(client, second)
        answer = client.post(f"{manage}/delete", data={"csrf_token": csrf_of(client, manage)})
        assert "Everything about you is deleted" in answer.text
        assert _files_holding(world.state_dir, address) == []
        assert client.post(second, data={"csrf_token": token}).status_code == 404
    assert world.members.member_by_email(address) is None


def test_sub_addresses_of_one_mailbox_share_its_mail_limit(world: PageWorld) -> None:
    """victim+1@, victim+2@ ... land in one mailbox (RFC 5233 sub-addressing): they must
    not each get the page's three mails a day, or one client mails anyone 10 an hour."""
    with world.client() as client:
        for n in range(6):
            assert sign_up(world, client, f"Victim+{n}@example.org").status_code == 200
    sent = world.mails_to(None, count=4, wait=3)
    assert len(sent) == 3


def test_a_stranger_cannot_mail_a_link_of_their_own_through_the_confirmation(
    world: PageWorld,
) -> None:
    """Anyone can make the page mail any address a confirmation; the search title they
    typed is in it. It must not arrive as a link (phishing under the community's name)."""
    title = "Your account is locked, verify at https://evil.example/login or evil.example"
    with world.client() as client:
        assert sign_up(world, client, "victim@example.org", title=title).status_code == 200
    [mail] = world.mails_to("victim@example.org")
    parts = "\n".join(mail.text_parts())
    assert "Your account is locked" in parts  # the title is there, as text
    assert "evil.example" not in parts and "://evil" not in parts
    assert all(url.startswith(PUBLIC) for url in re.findall(r"https?://[^\s\"<>]+", parts))


def test_a_search_left_while_the_cycle_runs_lists_no_job_in_its_summary(
    world: PageWorld, market: Market
) -> None:
    """The member leaves "German" after the cycle took its searches (its queries can
    take minutes); 21 German jobs and one audio job are due. The audio job still comes;
    no German one does, though a summary of all 22 would carry the audio search's links."""
    _, token = world.members.start_signup("ana@example.org", SearchDraft(title="Audio", q="audio"))
    member = world.members.confirm(token, limit=10).member
    german = world.members.add_search(member.id, SearchDraft(title="German", q="german"), 10)
    config = member_config(world)
    member_cycle(world, config)  # primes
    market.add_job(title="Audio one")
    for n in range(21):
        market.add_job(title=f"German {n}")
    member_cycle(world, config, meanwhile=lambda: world.members.unsubscribe(german.id))
    [mail] = world.mails_to("ana@example.org", count=2, wait=2)
    text = "".join(mail.text_parts())
    assert "Audio one" in text and "German" not in text


def test_one_ipv6_network_is_one_client_to_the_rate_limits(world: PageWorld) -> None:
    """An IPv6 host has a /64 of its own: an address per request is free, so the limits
    count the /64 (the proxy says 2001:db8:1:2::1, ::2, ...), as they count one IPv4."""
    answers = []
    for n in range(12):
        with world.client(ip=f"2001:db8:1:2::{n + 1:x}") as client:
            answers.append(sign_up(world, client, None).status_code)
    assert answers == [303] * 10 + [429] * 2
    with world.client(ip="2001:db8:1:3::1") as neighbour:  # the next /64: someone else
        assert sign_up(world, neighbour, None).status_code == 303


def test_delete_everything_deletes_the_members_feed_too(world: PageWorld, market: Market) -> None:
    """A member's personal feed holds what they searched for ("Matched: <their title>")
    and the jobs it found: after "delete everything" no file in the state holds it."""
    config = member_config(world)
    with world.client() as client:
        manage = _member(world, client, "jo@example.org", title="Zanzibar dialects")
        member_cycle(world, config)  # primes
        market.add_job(title="Audio transcription")
        member_cycle(world, config)
        assert _files_holding(world.state_dir / "feeds", "Zanzibar dialects") != []
        answer = client.post(f"{manage}/delete", data={"csrf_token": csrf_of(client, manage)})
        assert "Everything about you is deleted" in answer.text
    member_cycle(world, config)
    assert _files_holding(world.state_dir, "Zanzibar dialects") == []


class Lowering:
    """An SMTP server that refuses every recipient, naming it as it stores it: lower case."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return f"550 5.1.1 <{address.lower()}>: Recipient address rejected"


def test_a_refusal_names_no_address_in_another_case() -> None:
    """A member typed Nobody@Example.com; the server says nobody@example.com: the
    outcome (which reaches the log) must not carry it either."""
    controller = EphemeralController(Lowering(), hostname="127.0.0.1", port=0, ready_timeout=5)
    controller.start()
    try:
        url = f"mailto://127.0.0.1:{controller.port}?from=alerts@example.org&to=Nobody@Example.com"
        target = Target(key="member:x:now", label="member x", url=url)
        job = Job(id="j1", title="Spanish audio", url="https://x.example/j")
        links = Links(manage=f"{PUBLIC}/m/M", unsubscribe=f"{PUBLIC}/u/U", list_id="l")
        refused = send(target, Message((Item(job, ("Audio",)),), links=links), 10)
    finally:
        mailer.close_all()
        controller.stop()
    assert not refused.accepted and refused.permanent
    assert "nobody@example.com" not in (refused.error or "").lower()
    assert MEMBER_ADDRESS in (refused.error or "")


def test_a_members_table_linked_by_another_user_is_not_read(
    market: Market, standin: StandInServer, tmp_path: Path
) -> None:
    """Whoever can write the state directory plants members.json as a link to a table of
    their own (its addresses would get the operator's mail). Refused, as the store's
    own files are, before the page serves anyone."""
    state = tmp_path / "state"
    state.mkdir()
    planted = tmp_path / "theirs.json"
    table = {"format": 1, "version": 1, "pending": {}, "searches": {}}
    table["members"] = {"m1": {"email": "spam-target@example.org", "feed": False}}
    planted.write_text(json.dumps(table))
    (state / MEMBERS_FILE).symlink_to(planted)
    os.lchown(state / MEMBERS_FILE, STRANGER, STRANGER)
    with pytest.raises(StoreError, match="symbolic link"), page_world(standin, state):
        pass
