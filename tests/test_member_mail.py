"""A member's alert e-mail carries its way out: a visible unsubscribe and manage link,
and the RFC 8058 one-click headers mailbox providers require of subscribed mail, sent
through a real SMTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alertd.deliver import send
from alertd.models import Job, Target
from alertd.render import Item, Links, Message
from tests.servers import SMTPCollector

LINKS = Links(
    manage="https://alerts.example.org/m/TOKEN-manage",
    unsubscribe="https://alerts.example.org/u/TOKEN-one",
    list_id="Audio for Ana <s1.alerts.example.org>",
    everything="https://alerts.example.org/feed/TOKEN-feed.atom",
)


@pytest.fixture
def smtp() -> Iterator[SMTPCollector]:
    server = SMTPCollector().start()
    yield server
    server.stop()


def job(n: int) -> Job:
    return Job(id=f"j{n}", title=f"Spanish audio transcription {n}", url="https://x.example/j")


def test_a_members_mail_has_both_unsubscribe_headers_and_a_visible_way_out(
    smtp: SMTPCollector,
) -> None:
    target = Target.for_url(smtp.mailto("ana@example.com"), "member e-mail")
    outcome = send(target, Message((Item(job(1), ("Audio for Ana",)),), links=LINKS), 10)
    assert outcome.accepted, outcome.error
    (mail,) = smtp.messages
    headers = mail.message
    assert headers["List-Unsubscribe"] == "<https://alerts.example.org/u/TOKEN-one>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Id"] == "Audio for Ana <s1.alerts.example.org>"
    html = "\n".join(mail.text_parts())
    assert 'href="https://alerts.example.org/u/TOKEN-one"' in html
    assert 'href="https://alerts.example.org/m/TOKEN-manage"' in html


def test_a_summary_links_its_more_to_where_every_job_can_be_read(smtp: SMTPCollector) -> None:
    target = Target.for_url(smtp.mailto("ana@example.com"), "member e-mail")
    items = tuple(Item(job(n), ("Audio for Ana",)) for n in range(60))  # 50 are listed
    message = Message(items, heading="60 new OpenTrain jobs since 08:00", links=LINKS)
    assert send(target, message, 10).accepted
    html = "\n".join(smtp.messages[0].text_parts())
    assert 'href="https://alerts.example.org/feed/TOKEN-feed.atom">+10 more</a>' in html


@pytest.mark.parametrize(
    "forged",
    [
        Links(
            manage="https://alerts.example.org/m/x",
            unsubscribe="https://alerts.example.org/u/x\r\nBcc: victim@example.net",
            list_id="list",
        ),
        Links(
            manage="https://a.example/m", unsubscribe="https://a.example/u", list_id="l\nX-Evil: 1"
        ),
    ],
)
def test_no_line_break_in_a_link_can_add_a_header(smtp: SMTPCollector, forged: Links) -> None:
    target = Target.for_url(smtp.mailto("ana@example.com"), "member e-mail")
    outcome = send(target, Message((Item(job(1), ("s",)),), links=forged), 10)
    assert not outcome.accepted and smtp.messages == []  # refused whole, never half-sent


def test_the_operators_own_mail_carries_no_member_headers(smtp: SMTPCollector) -> None:
    target = Target.for_url(smtp.mailto("ops@example.com"), "ops e-mail")
    assert send(target, Message((Item(job(1), ("s",)),)), 10).accepted
    assert smtp.messages[0].message["List-Unsubscribe"] is None


def test_a_non_ascii_title_arrives_readable(smtp: SMTPCollector) -> None:
    target = Target.for_url(smtp.mailto("ana@example.com"), "member e-mail")
    title = "Transcripción en español — 20 € por hora"
    message = Message(
        (Item(Job(id="n", title=title, url="https://x.example/j"), ("s",)),), links=LINKS
    )
    assert send(target, message, 10).accepted
    (mail,) = smtp.messages
    assert title in str(mail.message["Subject"])
    assert any(title in part for part in mail.text_parts())
