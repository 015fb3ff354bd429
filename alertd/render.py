"""What an alert says, and how each service is told it: pure functions, no I/O.

A ``Message`` is one job (an instant alert) or several (a batch, a digest, a burst
summary). Each service gets the form it renders well: plain text for standard output
and unknown services, an embed for Discord, Block Kit for Slack, HTML for Telegram and
e-mail. ``renderer_for`` picks one from the target URL's apprise scheme.

Job text is written by whoever posted the job, so it is untrusted everywhere:
``clean`` drops control, bidi and invisible characters, breaks ``@everyone``-style
pings and ``scheme://`` links; each renderer then escapes what its service would read
as markup, and trims to the service's limits (counted in UTF-16 units, as Discord and
Telegram count) instead of ever failing. Links come only from ``safe_link`` or the
job's canonical page.
"""

from __future__ import annotations

import enum
import html
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import quote

from alertd.models import Job, Pay

MAX_TITLE = 200
MAX_SUMMARY = 400
MAX_LINK = 300
MAX_NAMES = 5  # searches named in one alert
# Every plain field is bounded, so the plain message stays under Discord's 2,000
# characters (Telegram allows 4,096): title 200 + body ≈ 200 + 80 + 200 + 40 + 400 + 300 + 340.
JOB_PAGE = "https://app.opentrain.ai/jobs/"
URL_SAFE = ":/?#[]@!$&'()*+,;=%"  # RFC 3986's reserved characters, and escapes made
ZERO_WIDTH_SPACE = "\u200b"
CLEAN_INPUT = 10_000  # characters of one field read at all
# C0 and C1 controls, and every bidi mark, embedding, override and isolate.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Invisible characters that can hide or split words (the emoji joiner U+200D stays).
_INVISIBLE = re.compile(r"[\u00ad\u034f\u180e\u200b\u200c\u2060-\u2064\ufeff]")
_SPACES = re.compile(r"\s+")
# Characters that start a mention, a tag or an entity somewhere we deliver.
_DEFANG = str.maketrans({"<": "‹", ">": "›", "&": "＆"})
_SCHEME = re.compile(r"(?<=[A-Za-z0-9]):(?=//)")
# A dot inside a bare domain ("evil.example"), which Slack, Telegram and mail clients link.
_DOMAIN_DOT = re.compile(r"(?<=[A-Za-z0-9])\.(?=[A-Za-z]{2,})")


# -- the message -------------------------------------------------------------------


class Change(enum.StrEnum):
    """Why a job already alerted is alerted again."""

    PAY_RAISED = "pay_raised"
    REOPENED = "reopened"


@dataclass(frozen=True)
class Item:
    """One job in a message: ``change`` is None for a new job; ``old_pay`` is the pay
    before, for ``pay_raised``."""

    job: Job
    searches: tuple[str, ...]
    change: str | None = None
    old_pay: Pay | None = None


@dataclass(frozen=True)
class Links:
    """A member's ways out and around, carried by each message to them: their manage
    page, the one-click link that stops the message's search, the list it belongs to
    (``List-Id``), and where every job of a summary can be read."""

    manage: str
    unsubscribe: str
    list_id: str
    everything: str | None = None
    search: str | None = None  # the search's id: a chat's "stop this search" button


@dataclass(frozen=True)
class Message:
    """One alert: one item when instant, several for a batch; ``more`` jobs gathered but
    not listed; ``heading`` (ours, e.g. "12 new OpenTrain jobs since 08:00") for several;
    ``links`` for a member's message (None for the operator's own targets);
    ``everything``: where every job of a summary can be read (a member's feed, an
    operator search's public feed), linked from its "+N more"."""

    items: tuple[Item, ...]
    more: int = 0
    heading: str | None = None
    links: Links | None = None
    everything: str | None = None

    @property
    def more_at(self) -> str | None:
        """Where its "+N more" links: ``everything``, or a member's feed; with what an
        address may not hold as is percent-encoded (a ``|`` ended Slack's link, a ``>``
        Discord's: the page's ``public_url`` may hold any printable character)."""
        at = self.everything or (self.links.everything if self.links else None)
        return None if at is None else quote(at, safe=URL_SAFE)


# -- text helpers ------------------------------------------------------------------


def as_text(value: object) -> str:
    """A field that should be a string, as one: null and other shapes become ''."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(v for v in value if isinstance(v, str))
    return ""


def strip_hidden(text: str) -> str:
    """``text`` without control, bidi and invisible characters: what a reader sees (and
    what a filter must match: "tran\u200bscription" is "transcription")."""
    return _INVISIBLE.sub("", _CONTROL.sub("", text))


def defang(text: str, limit: int) -> str:
    """Third-party text made inert for any channel, on one line, at most ``limit`` characters.

    ``@`` gets a zero-width space after it (``@everyone``, ``@here``, ``@channel`` and
    ``<@123>`` no longer ping), ``< > &`` become look-alikes (no tags, no Slack
    ``<!channel>`` or ``<url|text>``, no entities), ``](`` is split so no Markdown link
    can hide its address, ``scheme://`` and bare domains are broken so they do not link,
    and control, bidi and invisible characters go.
    """
    text = unicodedata.normalize("NFKC", as_text(text)[:CLEAN_INPUT])
    text = strip_hidden(text)
    text = _SPACES.sub(" ", text).strip()
    text = text.translate(_DEFANG).replace("@", "@" + ZERO_WIDTH_SPACE)
    # Discord renders Markdown in plain content: break [text](url) links that hide their address.
    text = text.replace("](", "]" + ZERO_WIDTH_SPACE + "(")
    # No scheme:// or bare-domain link from a poster, in plain text either (ntfy, Matrix
    # and others link them): the alert's only link is the job's own.
    text = _SCHEME.sub(":" + ZERO_WIDTH_SPACE, text)
    text = _DOMAIN_DOT.sub("." + ZERO_WIDTH_SPACE, text)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def clean(value: object) -> str:
    """Third-party text for a rich renderer: one line, no control, bidi or invisible
    characters, no ping and no ``scheme://`` or bare-domain link. Not yet escaped."""
    # No renderer shows more than a few thousand characters: do not clean 50,000.
    text = unicodedata.normalize("NFKC", as_text(value)[:CLEAN_INPUT])
    text = strip_hidden(text)
    text = _SPACES.sub(" ", text).strip()
    text = text.replace("@", "@" + ZERO_WIDTH_SPACE)
    text = _SCHEME.sub(":" + ZERO_WIDTH_SPACE, text)
    return _DOMAIN_DOT.sub("." + ZERO_WIDTH_SPACE, text)


def units(text: str) -> int:
    """Length as Discord and Telegram count it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


Escape = Mapping[str, str]


def fit(text: str, limit: int, escape: Escape | None = None) -> str:
    """``text`` escaped with ``escape`` (char → replacement) and cut, with an ellipsis,
    so that the escaped form is at most ``limit`` UTF-16 units; an escape is never split."""
    cut = len(text) > limit  # every character is at least one unit: the rest cannot fit
    text = text[: max(limit, 0)]
    pieces = [escape.get(c, c) for c in text] if escape else list(text)
    if not cut and sum(units(p) for p in pieces) <= limit:
        return "".join(pieces)
    kept, used = [], 0
    for piece in pieces:
        used += units(piece)
        if used > limit - 1:
            break
        kept.append(piece)
    return "".join(kept).rstrip() + "…" if limit > 0 else ""


def canonical_link(job_id: str) -> str:
    """The job's page on OpenTrain, built from its id alone."""
    return JOB_PAGE + quote(as_text(job_id), safe="")


def safe_link(url: str | None) -> str | None:
    """The job's link if it is a plain http(s) URL with nothing a channel would mis-read."""
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s<>\"'`|\\]+", url):
        return None
    if not (url.isascii() and url.isprintable()):  # bidi marks, C1 controls: not shown
        return None
    return url


def job_link(job: Job) -> str:
    """The link an alert shows: the job's own if safe and short, else its OpenTrain page."""
    link = safe_link(job.url)
    if link is None or len(link) > MAX_LINK:  # a chat service refuses a message that long
        link = canonical_link(job.id)
    return link if len(link) <= MAX_LINK else JOB_PAGE


def _money(amount: float, currency: str | None) -> str:
    number = f"{amount:,.2f}".removesuffix(".00")
    if currency in (None, "USD"):
        return f"${number}"
    return f"{number} {defang(as_text(currency), 8)}"


def describe_pay(pay: Pay | None) -> str:
    """A person's reading of the pay: ``$20–$30/hour``, ``$500 fixed``, ``not stated``."""
    if not isinstance(pay, Pay):
        return "not stated"
    cur = pay.currency if isinstance(pay.currency, str) else None
    low, high, rate = _number(pay.hourly_min), _number(pay.hourly_max), _number(pay.hourly_rate)
    fixed, label = _number(pay.fixed_price), _number(pay.per_label_rate)
    if low is not None and high is not None:
        return f"{_money(low, cur)}–{_money(high, cur)}/hour"
    if rate is not None:
        return f"{_money(rate, cur)}/hour"
    if low is not None:
        return f"from {_money(low, cur)}/hour"
    if high is not None:
        return f"up to {_money(high, cur)}/hour"
    if fixed is not None:
        return f"{_money(fixed, cur)} fixed"
    if label is not None:
        return f"{_money(label, cur)}/label"
    return "not stated"


def _number(value: object) -> float | None:
    """An amount as a number; anything else (a store written by hand) as no amount."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def show_time(moment: datetime | None, tz: tzinfo | None) -> str:
    """A time as a person reads it, in their zone (the machine's when none is configured)."""
    if not isinstance(moment, datetime):
        return "unknown"
    local = moment.astimezone(tz)
    return local.strftime("%d %b %Y, %H:%M %Z").strip()


# -- what every renderer says about one job -------------------------------------------

_HEADLINES = {None: "New OpenTrain job", "pay_raised": "Pay raised", "reopened": "Reopened"}


def headline(item: Item) -> str:
    """What happened to the job, in a few words of ours."""
    return _HEADLINES.get(item.change, "OpenTrain job update")


def marker(item: Item) -> str:
    """In a list of jobs, what tells a raise or a reopening from a new job: ``"Pay
    raised: "``, ``"Reopened: "``; nothing for a new job."""
    return "" if item.change is None else f"{headline(item)}: "


def pay_text(item: Item) -> str:
    """The pay, and for a raise what it was before."""
    now = describe_pay(item.job.pay)
    if item.change == Change.PAY_RAISED and item.old_pay is not None:
        return f"{describe_pay(item.old_pay)} → {now}"
    return now


def matched_names(searches: Sequence[str], limit: int = 60) -> str:
    """The searches that matched, at most ``MAX_NAMES`` of them by name, cleaned."""
    names = [fit(clean(name), limit) for name in searches[:MAX_NAMES]]
    if len(searches) > MAX_NAMES:
        names.append(f"and {len(searches) - MAX_NAMES} more")
    return ", ".join(names)


@dataclass(frozen=True)
class Facts:
    """One job's fields, cleaned and bounded but not escaped: what every rich renderer shows."""

    headline: str
    title: str
    company: str
    pay: str
    category: str
    languages: str
    posted: datetime | None
    summary: str
    link: str
    matched: str


def facts_of(item: Item) -> Facts:
    """The facts of one item, each cleaned and bounded before any service escapes it."""
    job = item.job
    title = fit(clean(job.title), 300) or "(untitled job)"
    posted = job.date_posted if isinstance(job.date_posted, datetime) else None
    return Facts(
        headline=headline(item),
        title=title,
        company=fit(clean(job.company), 120),
        pay=fit(clean(pay_text(item)), 120),
        category=fit(clean(job.category), 100),
        languages=fit(clean(job.languages), 200),
        posted=posted,
        summary=fit(clean(job.summary), 2000),
        link=job_link(job),
        matched=matched_names(item.searches),
    )


# -- plain text: standard output and every service without a renderer of its own ------


def _plain_one(item: Item, tz: tzinfo | None) -> tuple[str, str]:
    job = item.job
    title = defang(job.title, MAX_TITLE)
    lines = [title + (f" — {defang(job.company, 80)}" if job.company else "")]
    facts = [f"Pay: {pay_text(item)}"]
    if job.category:
        facts.append(f"Category: {defang(job.category, 60)}")
    if job.languages:
        facts.append("Languages: " + defang(as_text(job.languages), 80))
    lines.append(" | ".join(facts))
    lines.append(f"Posted: {show_time(job.date_posted, tz)}")
    if job.summary:
        lines.append(defang(job.summary, MAX_SUMMARY))
    lines.append(job_link(job))
    names = [defang(name, 60) for name in item.searches[:MAX_NAMES]]
    if len(item.searches) > MAX_NAMES:
        names.append(f"and {len(item.searches) - MAX_NAMES} more")
    lines.append("Matched: " + ", ".join(names))
    return f"{headline(item)}: {title}", "\n".join(lines)


PLAIN_LISTED = 25  # jobs listed by name in a plain summary; the rest are "+N more"


def _count(message: Message, shown: int) -> str:
    """The "+N more" line: the jobs a summary does not list, gathered or not."""
    return f"+{len(message.items) - shown + message.more} more"


def summary_heading(message: Message) -> str:
    """The heading of a several-job message: the caller's, or a count."""
    total = len(message.items) + message.more
    return message.heading or f"{total} new OpenTrain jobs"


def render_plain(message: Message, tz: tzinfo | None) -> tuple[str, str]:
    """(title, plain-text body): today's text for one job; a list for several."""
    if len(message.items) == 1 and not message.more and message.heading is None:
        return _plain_one(message.items[0], tz)
    lines = []
    listed = message.items[:PLAIN_LISTED]
    for item in listed:
        job = item.job
        company = f" — {defang(job.company, 80)}" if job.company else ""
        lines.append(
            f"• {marker(item)}{defang(job.title, MAX_TITLE)}{company} | Pay: {pay_text(item)} | "
            f"{job_link(job)}"
        )
    if len(message.items) > len(listed) or message.more:
        where = f": all of them at {message.more_at}" if message.more_at else ""
        lines.append(_count(message, len(listed)) + where)
    return defang(summary_heading(message), MAX_TITLE), "\n".join(lines)


def render_alert(job: Job, searches: Sequence[str], tz: tzinfo | None) -> tuple[str, str]:
    """(title, plain-text body) for one new job; every third-party field defanged."""
    return render_plain(Message((Item(job, tuple(searches)),)), tz)


# -- Discord: embeds, no mentions, Markdown escaped --------------------------------

# Everything Discord Markdown reads, backslash-escaped (headers, quotes, lists, spoilers,
# emphasis, code, masked links, mentions and custom emoji that start with '<').
DISCORD_ESCAPE: Escape = {c: "\\" + c for c in "\\*_~`|>#[]()-<"}
DISCORD_CONTENT = 2000
DISCORD_EMBEDS = 10
DISCORD_COLOR = 0x2F80ED


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _discord_embed(item: Item, compact: bool) -> dict[str, Any]:
    f = facts_of(item)
    md = DISCORD_ESCAPE
    embed: dict[str, Any] = {
        "title": fit(marker(item) + f.title if compact else f.title, 200 if compact else 256, md),
        "url": f.link,
        "color": DISCORD_COLOR,
    }
    if compact:  # ten of these stay under the 6,000 characters all embeds may hold
        about = [f.company, f"Pay: {f.pay}"] + ([f.category] if f.category else [])
        embed["description"] = fit(" · ".join(a for a in about if a), 250, md)
        embed["footer"] = {"text": fit(f"Matched: {f.matched}", 100)}  # footers show no Markdown
        return embed
    embed["author"] = {"name": f.headline}
    description = [fit(f.company, 120, md), fit(f.summary, 1500, md)]
    embed["description"] = "\n\n".join(d for d in description if d) or "\u200b"
    fields = [("Pay", f.pay), ("Category", f.category), ("Languages", f.languages)]
    embed["fields"] = [
        {"name": name, "value": fit(value, 300, md), "inline": True}
        for name, value in fields
        if value
    ]
    embed["footer"] = {"text": fit(f"Matched: {f.matched}", 500)}
    if f.posted is not None:
        embed["timestamp"] = _iso(f.posted)
    return embed


def render_discord(
    message: Message, tz: tzinfo | None, roles: Sequence[str] = (), ping: bool = True
) -> dict[str, Any]:
    """An Execute Webhook payload: one embed per job (at most ten), pinging no one but
    ``roles`` (the operator's role IDs, mentioned first in the content); without
    ``ping`` they are shown but ping no one either (a test message).

    ``parse: []`` keeps Discord from reading any mention in the text as a ping, and
    ``roles`` names the only ones that may; job text (defanged and escaped, in embeds
    that never ping) cannot mention even those.
    """
    payload: dict[str, Any] = {"allowed_mentions": {"parse": []}}
    single = len(message.items) == 1 and not message.more and message.heading is None
    listed = message.items[:DISCORD_EMBEDS]
    payload["embeds"] = [_discord_embed(item, compact=not single) for item in listed]
    lines = [" ".join(f"<@&{role}>" for role in roles)] if roles else []
    if not single:
        lines.append(fit(clean(summary_heading(message)), 300, DISCORD_ESCAPE))
        if len(message.items) > len(listed) or message.more:
            count = _count(message, len(listed))
            if message.more_at:  # <…>: a link, without a preview of its own
                count = f"[{count}](<{message.more_at}>)"
            lines.append(count)
    if lines:
        payload["content"] = "\n".join(lines)
    if roles and ping:
        payload["allowed_mentions"]["roles"] = list(roles)
    return payload


def discord_embed_size(payload: Mapping[str, Any]) -> int:
    """What Discord counts against its 6,000-character limit for all embeds together."""
    total = 0
    for embed in payload.get("embeds", []):
        parts = [embed.get("title", ""), embed.get("description", "")]
        parts += [embed.get("footer", {}).get("text", ""), embed.get("author", {}).get("name", "")]
        parts += [f["name"] + f["value"] for f in embed.get("fields", [])]
        total += sum(units(p) for p in parts)
    return total


# -- Slack: Block Kit; job text only in plain_text, the title as an escaped link ---------

SLACK_ESCAPE: Escape = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# mrkdwn has no escape for its emphasis marks: inside the title link they become look-alikes.
SLACK_TITLE_ESCAPE: Escape = {**SLACK_ESCAPE, "*": "∗", "_": "ˍ", "~": "∼", "`": "ˋ", "|": "¦"}
SLACK_LISTED = 15  # three blocks a job, under Slack's 50 blocks a message


def _slack_plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": fit(text, limit, SLACK_ESCAPE) or " ", "emoji": True}


def _slack_item(item: Item, tz: tzinfo | None, compact: bool) -> list[dict[str, Any]]:
    f = facts_of(item)
    title = fit(f.title, 256, SLACK_TITLE_ESCAPE)
    link = f"*{f.headline}:* <{f.link}|{title}>"
    facts = [("Pay", f.pay), ("Category", f.category), ("Languages", f.languages)]
    fields = [_slack_plain(f"{name}: {value}", 300) for name, value in facts if value]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": link}, "fields": fields}
    ]
    about = [f.company] if compact else [f.company, f.summary]
    if any(about):
        blocks.append(
            {"type": "section", "text": _slack_plain("\n\n".join(a for a in about if a), 2900)}
        )
    seen = f"Posted: {show_time(f.posted, tz)} · Matched: {f.matched}"
    blocks.append({"type": "context", "elements": [_slack_plain(seen, 500)]})
    return blocks


def render_slack(message: Message, tz: tzinfo | None) -> dict[str, Any]:
    """An incoming-webhook payload: Block Kit, no mention or markup from job text."""
    single = len(message.items) == 1 and not message.more and message.heading is None
    if single:
        f = facts_of(message.items[0])
        text = f"{f.headline}: {fit(f.title, 256, SLACK_TITLE_ESCAPE)}"
        return {"text": text, "blocks": _slack_item(message.items[0], tz, compact=False)}
    heading = fit(clean(summary_heading(message)), 150)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": fit(heading, 150, SLACK_ESCAPE)}}
    ]
    listed = message.items[:SLACK_LISTED]
    for item in listed:
        blocks += _slack_item(item, tz, compact=True)
    if len(message.items) > len(listed) or message.more:
        count = _slack_plain(_count(message, len(listed)), 100)
        if message.more_at:  # ours: "+N more", and the page's own address
            where = "".join(SLACK_ESCAPE.get(c, c) for c in message.more_at)
            count = {"type": "mrkdwn", "text": f"<{where}|{count['text']}>"}
        blocks.append({"type": "context", "elements": [count]})
    return {"text": fit(heading, 150, SLACK_ESCAPE), "blocks": blocks}


# -- Telegram: HTML parse mode, every field escaped ------------------------------------

HTML_ESCAPE: Escape = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"}
TELEGRAM_LIMIT = 4096


def _html(text: str, limit: int) -> str:
    return fit(text, limit, HTML_ESCAPE)


def _href(link: str) -> str:
    return html.escape(link, quote=True)


def _telegram_one(item: Item, tz: tzinfo | None) -> str:
    f = facts_of(item)
    facts = [f"Pay: {f.pay}"] + [f"Category: {f.category}"] * bool(f.category)
    facts += [f"Languages: {f.languages}"] * bool(f.languages)
    head = [
        f"<b>{f.headline}</b>",
        f'<b><a href="{_href(f.link)}">{_html(f.title, 256)}</a></b>',
        *([_html(f.company, 120)] if f.company else []),
        _html(" · ".join(facts), 600),
        f"Posted: {_html(show_time(f.posted, tz), 60)}",
    ]
    tail = f"<i>Matched: {_html(f.matched, 500)}</i>"
    room = TELEGRAM_LIMIT - units("\n".join([*head, tail])) - 4  # the summary gets what is left
    middle = ["", _html(f.summary, room), ""] if f.summary else []
    return "\n".join([*head, *middle, tail])


def render_telegram(message: Message, tz: tzinfo | None) -> str:
    """A ``sendMessage`` text in HTML parse mode: a bold linked title, at most 4,096 units."""
    if len(message.items) == 1 and not message.more and message.heading is None:
        return _telegram_one(message.items[0], tz)
    text = f"<b>{_html(clean(summary_heading(message)), 300)}</b>\n"
    shown = 0
    for item in message.items:
        f = facts_of(item)
        company = f" — {_html(f.company, 80)}" if f.company else ""
        line = (
            f"\n• {_html(marker(item), 20)}"
            f'<a href="{_href(f.link)}">{_html(f.title, 150)}</a>{company} · {_html(f.pay, 80)}'
        )
        if units(text + line) > TELEGRAM_LIMIT - 40:  # room for "+N more"
            break
        text += line
        shown += 1
    if shown < len(message.items) or message.more:
        count = _count(message, shown)
        if message.more_at:
            count = f'<a href="{_href(message.more_at)}">{count}</a>'
        text += "\n" + count
    return text


# -- e-mail: a subject with title and pay, an HTML part readable on a phone -------------

SUBJECT_LIMIT = 200
EMAIL_LISTED = 50
_MUTED = "color:#5f6368;font-size:14px"


def email_subject(message: Message) -> str:
    """The subject line: headline, title and pay for one job; the heading for several."""
    if len(message.items) == 1 and not message.more and message.heading is None:
        f = facts_of(message.items[0])
        pay = "" if f.pay == "not stated" else f" — {f.pay}"
        # A subject is plain text, but some clients and bridges read it as more: no tags.
        title = f.title.translate(_DEFANG)
        room = SUBJECT_LIMIT - units(f"{f.headline}: {pay}")
        while _encoded_size(subject := f"{f.headline}: {fit(title, room)}{pay}") > SUBJECT_BYTES:
            room = room * 3 // 4
        return subject
    heading = clean(summary_heading(message)).translate(_DEFANG)
    room = SUBJECT_LIMIT
    while _encoded_size(subject := fit(heading, room)) > SUBJECT_BYTES:
        room = room * 3 // 4
    return subject


# apprise writes a non-ASCII subject as one quoted-printable encoded word, unfolded: it
# must stay under SMTP's 998-character line, or the server refuses the whole message.
SUBJECT_BYTES = 900


def _encoded_size(subject: str) -> int:
    """The length of ``subject`` as one quoted-printable encoded word (Q encoding)."""
    return sum(
        1 if c.isascii() and (c.isalnum() or c in " !*+-/") else 3 * len(c.encode())
        for c in subject
    )


def _email_item(item: Item, tz: tzinfo | None, compact: bool) -> str:
    f = facts_of(item)
    rows = [("Pay", f.pay), ("Category", f.category), ("Languages", f.languages)]
    rows += [] if compact else [("Posted", show_time(f.posted, tz))]
    cell = f'<td style="padding:2px 12px 2px 0;{_MUTED}">'
    table = "".join(
        f"<tr>{cell}{name}</td><td>{_html(value, 300)}</td></tr>" for name, value in rows if value
    )
    parts = [
        f'<p style="margin:16px 0 0;{_MUTED}">{f.headline}</p>',
        f'<h2 style="margin:4px 0 8px;font-size:20px;line-height:1.3">'
        f'<a href="{_href(f.link)}" style="color:#1a73e8">{_html(f.title, 300)}</a></h2>',
    ]
    if f.company:
        parts.append(f'<p style="margin:0 0 8px">{_html(f.company, 120)}</p>')
    parts.append(f'<table role="presentation" style="border-collapse:collapse">{table}</table>')
    if f.summary and not compact:
        parts.append(f'<p style="margin:12px 0">{_html(f.summary, 4000)}</p>')
    parts.append(
        f'<p style="margin:8px 0;{_MUTED};word-break:break-all">'
        f'Open: <a href="{_href(f.link)}">{_html(f.link, 1000)}</a></p>'
    )
    parts.append(f'<p style="margin:0;{_MUTED}">Matched: {_html(f.matched, 500)}</p>')
    return "\n".join(parts)


def render_email(message: Message, tz: tzinfo | None) -> tuple[str, str]:
    """(subject, HTML body); apprise derives the plain-text part from the HTML."""
    single = len(message.items) == 1 and not message.more and message.heading is None
    listed = message.items[: 1 if single else EMAIL_LISTED]
    body = [_email_item(item, tz, compact=not single) for item in listed]
    if not single:
        body.insert(
            0, f'<h1 style="font-size:22px">{_html(clean(summary_heading(message)), 300)}</h1>'
        )
    links = message.links
    if len(message.items) > len(listed) or message.more:
        count = _count(message, len(listed))
        if message.more_at:
            count = f'<a href="{_href(message.more_at)}">{count}</a>'
        body.append(f"<p>{count}</p>")
    if links is not None:
        body.append(_email_footer(links))
    return email_subject(message), _EMAIL_PAGE.format(body="\n<hr>\n".join(body))


def _email_footer(links: Links) -> str:
    """A member's way out, visible in every e-mail (the headers carry the one-click)."""
    return (
        '<p style="font-size:13px;color:#5f6368">You get this because you subscribed to '
        "job alerts. "
        f'<a href="{_href(links.unsubscribe)}">Unsubscribe from this search</a> · '
        f'<a href="{_href(links.manage)}">Manage your alerts</a></p>'
    )


_EMAIL_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="margin:0;padding:16px;font-family:-apple-system,'Segoe UI',Roboto,Arial,sans-serif;\
font-size:16px;line-height:1.5;color:#202124">
<div style="max-width:600px;margin:0 auto">
{body}
</div></body></html>"""


# -- which renderer a target gets ---------------------------------------------------


class Channel(enum.StrEnum):
    """The kinds of service alertd renders for; anything else gets plain text."""

    PLAIN = "plain"
    DISCORD = "discord"
    SLACK = "slack"
    TELEGRAM = "telegram"
    EMAIL = "email"


_SCHEMES = {
    "discord": Channel.DISCORD,
    "slack": Channel.SLACK,
    "tgram": Channel.TELEGRAM,
    "alertd-telegram": Channel.TELEGRAM,  # a member's chat with the community bot
    "mailto": Channel.EMAIL,
    "mailtos": Channel.EMAIL,
}


def channel_for(url: str | None) -> Channel:
    """The renderer for a target URL, from its apprise scheme (None: standard output)."""
    if url is None or "://" not in url:
        return Channel.PLAIN
    return _SCHEMES.get(url.split("://", 1)[0].lower(), Channel.PLAIN)
