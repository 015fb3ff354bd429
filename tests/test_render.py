"""The renderers as pure functions: what each service is told, and that it always fits.

Limits are the services' own: Discord 2,000 characters of content, embeds of title
256 / description 4,096 / field name 256, value 1,024 / footer 2,048 / 25 fields /
6,000 in all / 10 a message; Slack 40,000 characters, sections of 3,000, fields of
2,000, headers of 150, 50 blocks; Telegram 4,096; e-mail subjects here at most 200.
Lengths are counted in UTF-16 units, as Discord and Telegram count them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC
from typing import Any

import pytest

from alertd.models import Job, Pay
from alertd.render import (
    Channel,
    Item,
    Message,
    channel_for,
    discord_embed_size,
    email_subject,
    render_discord,
    render_email,
    render_plain,
    render_slack,
    render_telegram,
    units,
)
from tests.hostile_jobs import HOSTILE_JOBS, SEARCHES
from tests.world import strings_in

JOB = Job(
    id="j-7",
    title="Transcribe Bavarian dialect interviews",
    company="Polyglot AI",
    url="https://app.opentrain.ai/jobs/j-7",
    summary="Two-hour interviews, verbatim transcripts.",
    category="Transcription",
    languages=("German",),
    pay=Pay(payment_type="PAY_PER_HOUR", currency="USD", hourly_min=27, hourly_max=33),
)
ONE = Message((Item(JOB, ("german-audio",)),))


def several(job: Job, count: int, more: int = 0) -> Message:
    items = tuple(Item(job, SEARCHES) for _ in range(count))
    return Message(items, more=more, heading=f"{count + more} new OpenTrain jobs since 08:00")


def messages_for(job: Job) -> list[Message]:
    return [Message((Item(job, SEARCHES),)), several(job, 40, more=30)]


# -- which renderer --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "channel"),
    [
        ("discord://1/t", Channel.DISCORD),
        ("slack://a/b/c", Channel.SLACK),
        ("tgram://1:x/2", Channel.TELEGRAM),
        ("mailto://h?to=a@b", Channel.EMAIL),
        ("MAILTOS://u:p@h", Channel.EMAIL),
        ("json://127.0.0.1/hook", Channel.PLAIN),
        ("https://discord.com/api/webhooks/1/t", Channel.PLAIN),
        (None, Channel.PLAIN),
    ],
)
def test_the_renderer_follows_the_apprise_scheme(url: str | None, channel: Channel) -> None:
    assert channel_for(url) is channel


# -- what a good job looks like in each ---------------------------------------------------


def test_plain_text_for_one_job_is_the_same_as_before() -> None:
    title, body = render_plain(ONE, UTC)
    assert title == "New OpenTrain job: Transcribe Bavarian dialect interviews"
    assert body.splitlines() == [
        "Transcribe Bavarian dialect interviews — Polyglot AI",
        "Pay: $27–$33/hour | Category: Transcription | Languages: German",
        "Posted: unknown",
        "Two-hour interviews, verbatim transcripts.",
        "https://app.opentrain.ai/jobs/j-7",
        "Matched: german-audio",
    ]


def test_plain_text_for_several_jobs_lists_them_and_counts_the_rest() -> None:
    title, body = render_plain(several(JOB, 30, more=5), UTC)
    assert title == "35 new OpenTrain jobs since 08:00"
    lines = body.splitlines()
    assert len(lines) == 26 and lines[-1] == "+10 more"
    assert lines[0].startswith("• Transcribe Bavarian dialect interviews — Polyglot AI | Pay:")


def test_discord_gets_an_embed_that_links_the_title_and_pings_no_one() -> None:
    payload = render_discord(ONE, UTC)
    assert payload["allowed_mentions"] == {"parse": []}
    assert "content" not in payload
    [embed] = payload["embeds"]
    assert embed["title"] == JOB.title and embed["url"] == JOB.url
    assert embed["author"] == {"name": "New OpenTrain job"}
    assert [(f["name"], f["value"]) for f in embed["fields"]] == [
        ("Pay", "$27–$33/hour"),
        ("Category", "Transcription"),
        ("Languages", "German"),
    ]
    assert embed["footer"] == {"text": "Matched: german-audio"}


def test_discord_escapes_every_markdown_mark_in_job_text() -> None:
    job = Job(id="m", title="# a > b ||s|| *i* _u_ ~x~ `c` [l](u) <@1> - \\")
    title = render_discord(Message((Item(job, ()),)), UTC)["embeds"][0]["title"]
    assert title == (
        r"\# a \> b \|\|s\|\| \*i\* \_u\_ \~x\~ \`c\` \[l\]\(u\) \<@" + "\u200b" + r"1\> \- \\"
    )


def test_discord_lists_at_most_ten_embeds_and_counts_the_rest() -> None:
    payload = render_discord(several(JOB, 12, more=3), UTC)
    assert len(payload["embeds"]) == 10
    assert payload["content"] == "15 new OpenTrain jobs since 08:00\n+5 more"
    assert payload["allowed_mentions"] == {"parse": []}


def test_slack_links_the_title_and_keeps_job_text_plain() -> None:
    payload = render_slack(ONE, UTC)
    section = payload["blocks"][0]
    assert section["text"] == {
        "type": "mrkdwn",
        "text": f"*New OpenTrain job:* <{JOB.url}|{JOB.title}>",
    }
    assert {"type": "plain_text", "text": "Pay: $27–$33/hour", "emoji": True} in section["fields"]
    assert payload["blocks"][1]["text"]["type"] == "plain_text"


def test_slack_escapes_the_title_inside_its_link() -> None:
    job = Job(id="s", title="a & b <!here> *bold* _i_ ~s~ `c` x|y", url="https://x.example/j")
    text = render_slack(Message((Item(job, ()),)), UTC)["blocks"][0]["text"]["text"]
    assert text == (
        "*New OpenTrain job:* <https://x.example/j|a &amp; b &lt;!here&gt; ∗bold∗ ˍiˍ ∼s∼ ˋcˋ x¦y>"
    )


def test_telegram_gets_html_with_a_bold_linked_title() -> None:
    text = render_telegram(ONE, UTC)
    assert text.splitlines()[:3] == [
        "<b>New OpenTrain job</b>",
        f'<b><a href="{JOB.url}">{JOB.title}</a></b>',
        "Polyglot AI",
    ]
    job = Job(id="t", title='<b>x</b> & "q"', url="https://x.example/?a=1&b=2")
    text = render_telegram(Message((Item(job, ()),)), UTC)
    assert (
        '<a href="https://x.example/?a=1&amp;b=2">&lt;b&gt;x&lt;/b&gt; &amp; &quot;q&quot;</a>'
        in text
    )


def test_email_has_title_and_pay_in_the_subject_and_an_escaped_html_page() -> None:
    subject, page = render_email(ONE, UTC)
    assert subject == "New OpenTrain job: Transcribe Bavarian dialect interviews — $27–$33/hour"
    assert 'name="viewport"' in page
    assert f'<a href="{JOB.url}" style="color:#1a73e8">{JOB.title}</a>' in page
    assert f">{JOB.summary}</p>" in page and "<td>$27–$33/hour</td>" in page
    job = Job(id="e", title="<script>x()</script>", summary="a <b>b</b>")
    subject, page = render_email(Message((Item(job, ()),)), UTC)
    assert "<script" not in page and "&lt;script&gt;x()&lt;/script&gt;" in page
    assert "<script" not in subject


def test_a_pay_raise_shows_the_pay_before_and_after() -> None:
    before = Pay(currency="USD", hourly_rate=20)
    message = Message((Item(JOB, ("s",), change="pay_raised", old_pay=before),))
    assert render_plain(message, UTC)[0] == f"Pay raised: {JOB.title}"
    assert "Pay: $20/hour → $27–$33/hour" in render_plain(message, UTC)[1]
    embed = render_discord(message, UTC)["embeds"][0]
    assert embed["author"] == {"name": "Pay raised"}
    assert {"name": "Pay", "value": "$20/hour → $27–$33/hour", "inline": True} in embed["fields"]
    assert email_subject(message).startswith("Pay raised: ")


# -- whatever the job says, every message fits and carries no one's markup ----------------

LINK = re.compile(r"<https://[^|<>]*\|[^<>]*>")


def assert_discord_fits(payload: dict[str, Any]) -> None:
    assert payload["allowed_mentions"] == {"parse": []}
    assert units(payload.get("content", "")) <= 2000
    assert 1 <= len(payload["embeds"]) <= 10
    assert discord_embed_size(payload) <= 6000
    for embed in payload["embeds"]:
        assert 1 <= units(embed["title"]) <= 256
        assert units(embed.get("description", "")) <= 4096
        assert units(embed["footer"]["text"]) <= 2048
        assert len(embed.get("fields", [])) <= 25
        for field in embed.get("fields", []):
            assert 1 <= units(field["name"]) <= 256 and 1 <= units(field["value"]) <= 1024
        assert embed["url"].startswith("https://") and len(embed["url"]) <= 300


def assert_slack_fits(payload: dict[str, Any]) -> None:
    assert len(json.dumps(payload, ensure_ascii=False)) <= 40_000
    assert len(payload["blocks"]) <= 50
    for block in payload["blocks"]:
        text = block.get("text", {})
        assert len(text.get("text", "x")) <= (150 if block["type"] == "header" else 3000)
        assert len(text.get("text", "x")) >= 1
        for part in block.get("fields", []) + block.get("elements", []):
            assert 1 <= len(part["text"]) <= 2000 and part["type"] == "plain_text"
        if text.get("type") == "mrkdwn":  # the only mrkdwn: our headline and the job's link
            assert LINK.sub("", text["text"]).count("<") == 0, text
    for text in strings_in(payload):
        assert "<!" not in text and "<@" not in text, text


def assert_no_ping_or_link(texts: list[str], markdown: bool = False) -> None:
    """No ping, no link to anywhere but the job, no hidden characters; where Markdown
    renders (Discord), no masked link either."""
    for text in texts:
        for ping in ("@everyone", "@here", "@channel"):
            assert ping not in text, (ping, text[:200])
        assert "https://evil" not in text, text[:200]
        assert not (markdown and re.search(r"(?<!\\)\]\(", text)), text[:200]
        assert "\u202e" not in text and "\u2066" not in text and "\ufeff" not in text


@pytest.mark.parametrize("name", list(HOSTILE_JOBS))
def test_every_hostile_job_fits_discord_and_pings_no_one(name: str) -> None:
    for message in messages_for(HOSTILE_JOBS[name]):
        payload = render_discord(message, UTC)
        assert_discord_fits(payload)
        assert_no_ping_or_link(strings_in(payload), markdown=True)


@pytest.mark.parametrize("name", list(HOSTILE_JOBS))
def test_every_hostile_job_fits_slack_with_no_mention_or_markup(name: str) -> None:
    for message in messages_for(HOSTILE_JOBS[name]):
        payload = render_slack(message, UTC)
        assert_slack_fits(payload)
        assert_no_ping_or_link(strings_in(payload))


OUR_TAGS = re.compile(r'</?b>|</?i>|</a>|<a href="https://[^"<>]*">')


@pytest.mark.parametrize("name", list(HOSTILE_JOBS))
def test_every_hostile_job_fits_telegram_with_only_our_tags(name: str) -> None:
    for message in messages_for(HOSTILE_JOBS[name]):
        text = render_telegram(message, UTC)
        assert units(text) <= 4096
        assert "<" not in OUR_TAGS.sub("", text), text[:500]
        assert_no_ping_or_link([text])


@pytest.mark.parametrize("name", list(HOSTILE_JOBS))
def test_every_hostile_job_fits_email_with_only_our_markup(name: str) -> None:
    for message in messages_for(HOSTILE_JOBS[name]):
        subject, page = render_email(message, UTC)
        assert 1 <= len(subject) <= 200 and "\n" not in subject and "<" not in subject
        assert "<script" not in page and "<b>" not in page
        hrefs = re.findall(r'href="([^"]*)"', page)
        assert hrefs and all(h.startswith("https://") and "evil" not in h for h in hrefs)
        assert_no_ping_or_link([subject, page])


@pytest.mark.parametrize("name", list(HOSTILE_JOBS))
def test_every_hostile_job_renders_as_plain_text_within_discords_limit(name: str) -> None:
    title, body = render_plain(messages_for(HOSTILE_JOBS[name])[0], UTC)
    assert len(title) + len(body) < 2000
    assert "@everyone" not in body and "<!channel>" not in body
