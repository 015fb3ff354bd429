"""An attack review of the community page, each attack with the defence that stops it:
forged forms, guessed and expired tokens, floods, mail-bombing, header injection and
script in every field."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alertd.market import Market
from alertd.members import MEMBERS_FILE, SearchDraft
from alertd.standin import StandInServer
from tests.pageworld import PageWorld, confirm_by_mail, csrf_of, link_in, page_world, sign_up

FIELDS = ("q", "title", "exclude", "category", "language", "country", "min_pay", "email")


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[PageWorld]:
    with page_world(standin, state_dir) as world:
        yield world


def _member(world: PageWorld, client: httpx.Client, email: str) -> str:
    sign_up(world, client, email)
    return str(confirm_by_mail(world, client, email).headers["location"]).split("?")[0]


def _state(world: PageWorld) -> str:
    path = world.state_dir / MEMBERS_FILE
    return path.read_text() if path.exists() else ""


def test_a_forged_form_without_its_csrf_token_changes_nothing(world: PageWorld) -> None:
    with world.client() as client:
        manage = _member(world, client, "ana@example.org")
        [(_, search)] = world.members.active()
        mails = len(world.smtp.messages)
        form = {"q": "x", "delivery": "email", "email": "victim@example.org", "action": "signup"}
        forged = [
            client.post("/signup", data=form),
            client.post("/signup", data={**form, "csrf_token": "made-up"}),
            client.post("/lost", data={"email": "ana@example.org"}),
            client.post(f"{manage}/delete", data={}),
            client.post(f"{manage}/s/{search.id}/delete", data={}),
            client.post(f"{manage}/s/{search.id}", data={"q": "changed"}),
        ]
        with world.client() as stranger:  # another browser: the token is not its session's
            token = csrf_of(client, "/")
            forged.append(stranger.post("/signup", data={**form, "csrf_token": token}))
    assert [a.status_code for a in forged] == [400] * len(forged)
    assert world.members.active()[0][1] == search
    assert "victim@example.org" not in _state(world)
    assert len(world.mails_to(None, count=mails + 1, wait=0.5)) == mails


def test_guessed_and_tampered_tokens_are_not_found(world: PageWorld) -> None:
    with world.client() as client:
        manage = _member(world, client, "bo@example.org")
        [(member, search)] = world.members.active()
        good = manage.rsplit("/", 1)[1]
        unsub = world.members.unsubscribe_token(search.id)
        guesses = [
            f"{member.id}.{secrets.token_urlsafe(32)}",  # the right id, a made-up MAC
            f"{member.id}.{good.split('.')[1][:-1]}",  # one character short
            f"{search.id}.{good.split('.')[1]}",  # a real MAC under another id
            unsub,  # an unsubscribe token is not a manage token
            "x" * 5000,
        ]
        for guess in guesses:
            assert client.get(f"/m/{guess}").status_code == 404
            assert client.get(f"/c/{guess}").status_code == 404
        with world.client() as provider:
            for guess in [*guesses[:3], good]:
                answer = provider.post(f"/u/{guess}", data={"List-Unsubscribe": "One-Click"})
                assert answer.status_code == 404
        assert world.members.active() != []
        # a link the member replaced stops working
        token = csrf_of(client, manage)
        fresh = client.post(f"{manage}/new-link", data={"csrf_token": token})
        assert client.get(manage).status_code == 404
        assert client.get(fresh.headers["location"]).status_code == 200


def test_an_expired_confirmation_link_confirms_nothing(world: PageWorld) -> None:
    with world.client() as client:
        sign_up(world, client, "cy@example.org")
        path = world.local(link_in(world.mails_to("cy@example.org")[0]))
        token = csrf_of(client, path)
        data = json.loads(_state(world))  # 48 hours later
        for row in data["pending"].values():
            row["expires"] = "2000-01-01T00:00:00Z"
        (world.state_dir / MEMBERS_FILE).write_text(json.dumps(data))
        assert client.get(path).status_code == 404
        assert client.post(path, data={"csrf_token": token}).status_code == 404
        sign_up(world, client, None)  # any later write forgets the address
    assert world.members.active()[0][0].email is None
    assert "cy@example.org" not in _state(world)


def test_a_signup_flood_from_one_address_is_stopped(world: PageWorld) -> None:
    with world.client(ip="203.0.113.9") as flood:
        answers = [sign_up(world, flood, None).status_code for _ in range(12)]
    assert answers[:10] == [303] * 10
    assert answers[10:] == [429, 429]
    with world.client(ip="198.51.100.7") as other:
        assert sign_up(world, other, None).status_code == 303
    assert len(world.members.active()) == 11


def test_one_address_cannot_be_mail_bombed_through_the_forms(world: PageWorld) -> None:
    victim = "victim@example.org"
    for n in range(8):  # from many addresses, so no per-IP limit is reached
        with world.client(ip=f"192.0.2.{n + 1}") as client:
            assert sign_up(world, client, victim).status_code == 200
            token = csrf_of(client, "/lost")
            client.post("/lost", data={"csrf_token": token, "email": victim})
    assert len(world.mails_to(victim, count=4, wait=3)) == 3


def test_cr_lf_is_refused_in_every_field(world: PageWorld) -> None:
    with world.client() as client:
        for name in FIELDS:
            value = "a@example.org\r\nBcc: all@example.org" if name == "email" else "x\r\nBcc: y"
            answer = sign_up(world, client, "ok@example.org", **{name: value})
            assert answer.status_code == 400, name
            assert "line break" in answer.text, name
        for email in (
            "a@example.org,victim@example.org",
            "a@127.0.0.1",
            "a@localhost",
            "a b@x.org",
        ):
            assert sign_up(world, client, email).status_code == 400, email
    assert world.mails_to(None, wait=0.5) == []
    assert _state(world) == ""


def test_script_in_every_field_is_shown_as_text(world: PageWorld) -> None:
    attack = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    with world.client() as client:
        token = csrf_of(client, "/")
        for name in FIELDS:  # echoed back in the form it failed or was counted in
            form = {"csrf_token": token, name: attack, "action": "count"}
            answer = client.post("/signup", data=form)
            assert "<script>" not in answer.text and "<img src=x" not in answer.text, name
            assert "&lt;script&gt;" in answer.text, name
        # stored, then shown on the manage page, the confirm page and the unsubscribe page
        sign_up(world, client, "ed@example.org", q=attack, title=attack, exclude="<b>x</b>")
        path = world.local(link_in(world.mails_to("ed@example.org")[0]))
        pages = [client.get(path)]
        token = csrf_of(client, path)
        manage = client.post(path, data={"csrf_token": token}).headers["location"]
        pages.append(client.get(manage))
        [(_, search)] = world.members.active()
        pages.append(client.get(world.local(world.members.unsubscribe_url(search.id, world_url()))))
    assert search.title == attack.strip()
    for page in pages:
        assert page.status_code == 200
        assert "<script>" not in page.text and "<img src=x" not in page.text


def world_url() -> str:
    from tests.pageworld import PUBLIC

    return PUBLIC


def test_a_member_cannot_pass_the_search_cap(
    market: Market, standin: StandInServer, state_dir: Path
) -> None:
    with page_world(standin, state_dir, limits={"searches_per_member": 2}) as world:
        with world.client() as client:
            manage = _member(world, client, "fi@example.org")
            token = csrf_of(client, manage)
            form = {"csrf_token": token, "q": "second", "pace": "now"}
            assert client.post(f"{manage}/add", data=form).status_code == 303
            assert client.post(f"{manage}/add", data={**form, "q": "third"}).status_code == 400
            # nor by signing up the same address again
            sign_up(world, client, "fi@example.org", q="fourth")
            answer = confirm_by_mail(world, client, "fi@example.org", nth=2)
            assert answer.status_code == 400
        assert len(world.members.active()) == 2


def test_the_honeypot_signs_up_nothing(world: PageWorld) -> None:
    with world.client() as client:
        answer = sign_up(world, client, "gu@example.org", website="http://spam.example")
    assert "Check your mail" in answer.text
    assert world.mails_to("gu@example.org", wait=0.5) == []
    assert "gu@example.org" not in _state(world)


@pytest.mark.parametrize(
    ("signup", "code", "allowed"),
    [
        ("off", None, False),
        ("invite:guild-2026-code", "wrong-code", False),
        ("invite:guild-2026-code", "guild-2026-code", True),
    ],
)
def test_sign_up_follows_the_operator_setting(
    standin: StandInServer, state_dir: Path, signup: str, code: str | None, allowed: bool
) -> None:
    with page_world(standin, state_dir, signup=signup) as world, world.client() as client:
        if signup == "off":
            assert "Sign-up is closed" in client.get("/").text
            answer = client.post("/signup", data={"q": "x"})
            assert answer.status_code in (400, 403)
        else:
            answer = sign_up(world, client, None, invite=code or "")
            assert (answer.status_code == 303) is allowed
        assert (len(world.members.active()) == 1) is allowed


def test_the_members_table_holds_no_token_a_link_could_be_made_from(world: PageWorld) -> None:
    confirmed = world.members.add_feed_member(SearchDraft(title="t"))
    token = world.members.manage_token(confirmed.member.id)
    text = _state(world)
    assert token not in text and token.split(".")[1] not in text
    assert (world.state_dir / "members.key").stat().st_mode & 0o777 == 0o600
