"""The community page as a member uses it: served by waitress, driven over HTTP, its mails
caught by a real SMTP server, its choices and counts from the stand-in API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from alertd.market import Market
from alertd.members import MEMBERS_FILE, Members
from alertd.standin import StandInServer
from tests.pageworld import (
    PageWorld,
    confirm_by_mail,
    csrf_of,
    link_in,
    page_world,
    sign_up,
)


@pytest.fixture
def world(market: Market, standin: StandInServer, state_dir: Path) -> Iterator[PageWorld]:
    for _ in range(3):
        market.add_job(category="Audio Transcription", title="Spanish audio transcription")
    market.add_job(category="Text Annotation", title="Sentiment labeling")
    with page_world(standin, state_dir) as world:
        yield world


def test_signup_by_email_is_live_only_after_the_button(world: PageWorld) -> None:
    with world.client() as client:
        form = client.get("/")
        assert "Audio Transcription (3)" in form.text  # the choices come from /jobs/facets
        answer = sign_up(world, client, "ana@example.org", category="Audio Transcription")
        assert answer.status_code == 200 and "Check your mail" in answer.text
        assert world.members.active() == []
        mail = world.mails_to("ana@example.org")[0]
        assert mail.message["Subject"] == "Annotators Guild: confirm your job alerts"
        path = world.local(link_in(mail))
        for _ in range(3):  # a mail scanner following the link changes nothing
            assert "Yes, send me these alerts" in client.get(path).text
        assert world.members.active() == []
        confirmed = confirm_by_mail(world, client, "ana@example.org")
        assert confirmed.status_code == 303
        manage = client.get(confirmed.headers["location"])
    [(member, search)] = world.members.active()
    assert member.email == "ana@example.org"
    assert (search.q, search.category, search.pace) == ("audio", "Audio Transcription", "now")
    assert "ana@example.org" in manage.text and search.title in manage.text


def test_the_form_counts_matching_jobs_with_one_request(world: PageWorld) -> None:
    with world.client() as client:
        token = csrf_of(client, "/")
        before = len(world.standin.requests("/jobs?"))
        form = {"csrf_token": token, "category": "Audio Transcription", "action": "count"}
        answer = client.post("/signup", data=form)
        again = client.post("/signup", data=form)  # kept a minute: no second request
    assert "3 open jobs match now" in answer.text
    assert "3 open jobs match now" in again.text
    assert len(world.standin.requests("/jobs?")) == before + 1


def test_the_count_is_skipped_when_the_page_has_spent_its_budget(
    market: Market, standin: StandInServer, state_dir: Path
) -> None:
    market.add_job(category="Audio Transcription")
    with page_world(standin, state_dir) as world:
        lookup = world.server.page.lookup
        assert lookup is not None
        for _ in range(30):  # the page's half of 60 a minute, spent by others
            lookup.client.budget.acquire()
            lookup.client.budget.release()
        with world.client() as client:
            token = csrf_of(client, "/")
            form = {"csrf_token": token, "q": "x", "action": "count"}
            answer = client.post("/signup", data=form)
    assert answer.status_code == 200
    assert "cannot count matching jobs just now" in answer.text


def test_a_feed_member_needs_no_address(world: PageWorld) -> None:
    with world.client() as client:
        answer = sign_up(world, client, None)
        assert answer.status_code == 303
        manage = client.get(answer.headers["location"])
    [(member, _)] = world.members.active()
    assert member.email is None and member.feed
    assert "/feed/" in manage.text
    assert world.smtp.messages == []


def _manage_path(world: PageWorld, client: object, email: str) -> str:
    from httpx import Client

    assert isinstance(client, Client)
    sign_up(world, client, email)
    return str(confirm_by_mail(world, client, email).headers["location"]).split("?")[0]


def test_manage_edit_pause_delete_and_export(world: PageWorld) -> None:
    with world.client() as client:
        manage = _manage_path(world, client, "bo@example.org")
        [(_, search)] = world.members.active()
        edit = f"{manage}/s/{search.id}"
        token = csrf_of(client, edit)
        form = {"csrf_token": token, "q": "german", "pace": "daily", "digest_hour": "7"}
        assert client.post(edit, data=form).status_code == 303
        edited = world.members.search(search.id)
        assert edited is not None
        assert (edited.q, edited.pace, edited.digest_hour) == ("german", "daily", 7)

        token = csrf_of(client, manage)
        assert client.post(f"{edit}/pause", data={"csrf_token": token}).status_code == 303
        assert world.members.active() == []
        assert "(paused)" in client.get(manage).text
        client.post(f"{edit}/resume", data={"csrf_token": token})
        assert len(world.members.active()) == 1

        exported = client.get(f"{manage}/export")
        assert exported.headers["content-type"].startswith("application/json")
        data = exported.json()
        assert data["member"]["email"] == "bo@example.org"
        assert data["searches"][0]["q"] == "german"
        assert "hash" not in exported.text and "nonce" not in exported.text

        client.post(f"{edit}/delete", data={"csrf_token": token})
        assert world.members.searches_of(data["member"]["id"]) == []


def test_delete_everything_leaves_no_address_in_the_state(world: PageWorld) -> None:
    with world.client() as client:
        manage = _manage_path(world, client, "cy@example.org")
        token = csrf_of(client, manage)
        answer = client.post(f"{manage}/delete", data={"csrf_token": token})
        assert "Everything about you is deleted" in answer.text
        assert client.get(manage).status_code == 404
    text = (world.state_dir / MEMBERS_FILE).read_text()
    assert "cy@example.org" not in text
    assert json.loads(text)["searches"] == {}


def test_lost_link_answers_the_same_for_any_address(world: PageWorld) -> None:
    with world.client() as client:
        manage = _manage_path(world, client, "di@example.org")
        answers = []
        for email in ("di@example.org", "nobody@example.org"):
            token = csrf_of(client, "/lost")
            answer = client.post("/lost", data={"csrf_token": token, "email": email})
            answers.append((answer.status_code, answer.text))
    assert answers[0] == answers[1]
    [_, lost] = world.mails_to("di@example.org", count=2)
    assert world.local(link_in(lost)) == manage
    assert world.mails_to("nobody@example.org", wait=0.5) == []


def test_one_click_unsubscribe_removes_the_search_at_once(world: PageWorld) -> None:
    with world.client() as client:
        _manage_path(world, client, "ed@example.org")
    [(_, search)] = world.members.active()
    link = world.members.unsubscribe_url(search.id, "http://alerts.example.org")
    path = world.local(link)
    with world.client() as scanner:  # a GET (a mail scanner) changes nothing
        assert "Unsubscribe" in scanner.get(path).text
    assert len(world.members.active()) == 1
    with world.client() as provider:  # no cookie, no CSRF token: the mailbox provider
        answer = provider.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 200 and "location" not in answer.headers
    assert world.members.active() == []
    # the member's page still works; the search is gone from it
    assert Members.open(world.state_dir).search(search.id) is None


def test_the_status_page_counts_without_addresses(world: PageWorld) -> None:
    with world.client() as client:
        _manage_path(world, client, "fa@example.org")
        sign_up(world, client, None)
        status = client.get("/status")
    assert re.search(r'id="members">2<', status.text)
    assert re.search(r'id="searches">2<', status.text)
    assert "fa@example.org" not in status.text
    assert "not yet" in status.text  # no cycle has ended in this state


def test_every_answer_carries_the_security_headers(world: PageWorld) -> None:
    with world.client() as client:
        manage = _manage_path(world, client, "gu@example.org")
        front, personal = client.get("/"), client.get(manage)
    for answer in (front, personal):
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert "noindex" in personal.headers["x-robots-tag"]
    assert personal.headers["cache-control"] == "no-store"
    assert "x-robots-tag" not in front.headers


def test_without_a_mail_server_the_page_offers_feeds_only(
    standin: StandInServer, state_dir: Path
) -> None:
    with page_world(standin, state_dir, mail=None) as world, world.client() as client:
        form = client.get("/")
        assert 'value="email"' not in form.text and 'value="feed" checked' in form.text
        refused = sign_up(world, client, "ana@example.org")
        assert refused.status_code == 400 and "delivery" in refused.text
        assert sign_up(world, client, None).status_code == 303
    assert "ana@example.org" not in (state_dir / MEMBERS_FILE).read_text()


def test_a_digest_hour_in_odd_digits_is_refused_with_a_message(world: PageWorld) -> None:
    with world.client() as client:
        manage = _manage_path(world, client, "cy@example.org")
        [(_, search)] = world.members.active()
        edit = f"{manage}/s/{search.id}"
        form = {"csrf_token": csrf_of(client, edit), "q": "x", "pace": "daily"}
        answer = client.post(edit, data={**form, "digest_hour": "²"})  # isdigit(), not int()
        assert answer.status_code == 400 and "choose an hour" in answer.text
        assert world.members.search(search.id).pace == "now"  # type: ignore[union-attr]
