"""Turning an owed alert into a message, and handing it to apprise or standard output.

Job text is written by whoever posted the job, so it is untrusted: ``defang`` makes it
inert in every channel (no ``@everyone``, no ``<!channel>``, no HTML or Slack markup)
before it is rendered, and apprise is told the body is plain text, so it escapes what
most services would otherwise read as Markdown or HTML (Discord gets plain text as is,
which is why ``defang`` also breaks Markdown links itself).

A failed send is an outcome, never an exception: the pipeline records it and retries.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TextIO
from urllib.parse import quote

import apprise

from alertd.models import Alert, Job, Pay, Target
from alertd.targets import RedactingFilter, quiet_apprise, url_secrets

MAX_TITLE = 200
MAX_SUMMARY = 400
MAX_LINK = 300
MAX_NAMES = 5  # searches named in one alert
# Every field is bounded, so the whole message stays under Discord's 2,000 characters
# (Telegram allows 4,096): title 200 + body ≈ 200 + 80 + 200 + 40 + 400 + 300 + 340.
JOB_PAGE = "https://app.opentrain.ai/jobs/"
ZERO_WIDTH_SPACE = "\u200b"
# C0 and C1 controls, and every bidi mark, embedding, override and isolate.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"\s+")
# Characters that start a mention, a tag or an entity somewhere we deliver.
_DEFANG = str.maketrans({"<": "‹", ">": "›", "&": "＆"})


def defang(text: str, limit: int) -> str:
    """Third-party text made inert for any channel, on one line, at most ``limit`` characters.

    ``@`` gets a zero-width space after it (``@everyone``, ``@here``, ``@channel`` and
    ``<@123>`` no longer ping), ``< > &`` become look-alikes (no tags, no Slack
    ``<!channel>`` or ``<url|text>``, no entities), ``](`` is split so no Markdown link
    can hide its address, and control and bidi characters go.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text).strip()
    text = text.translate(_DEFANG).replace("@", "@" + ZERO_WIDTH_SPACE)
    # Discord renders Markdown in plain content: break [text](url) links that hide their address.
    text = text.replace("](", "]" + ZERO_WIDTH_SPACE + "(")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def canonical_link(job_id: str) -> str:
    """The job's page on OpenTrain, built from its id alone."""
    return JOB_PAGE + quote(job_id, safe="")


def safe_link(url: str | None) -> str | None:
    """The job's link if it is a plain http(s) URL with nothing a channel would mis-read."""
    if not url or not re.fullmatch(r"https?://[^\s<>\"'`|\\]+", url):
        return None
    if not (url.isascii() and url.isprintable()):  # bidi marks, C1 controls: not shown
        return None
    return url


def _money(amount: float, currency: str | None) -> str:
    number = f"{amount:,.2f}".removesuffix(".00")
    if currency in (None, "USD"):
        return f"${number}"
    return f"{number} {defang(currency, 8)}"


def describe_pay(pay: Pay | None) -> str:
    """A person's reading of the pay: ``$20–$30/hour``, ``$500 fixed``, ``not stated``."""
    if pay is None:
        return "not stated"
    cur = pay.currency
    if pay.hourly_min is not None and pay.hourly_max is not None:
        return f"{_money(pay.hourly_min, cur)}–{_money(pay.hourly_max, cur)}/hour"
    if pay.hourly_rate is not None:
        return f"{_money(pay.hourly_rate, cur)}/hour"
    if pay.hourly_min is not None:
        return f"from {_money(pay.hourly_min, cur)}/hour"
    if pay.hourly_max is not None:
        return f"up to {_money(pay.hourly_max, cur)}/hour"
    if pay.fixed_price is not None:
        return f"{_money(pay.fixed_price, cur)} fixed"
    if pay.per_label_rate is not None:
        return f"{_money(pay.per_label_rate, cur)}/label"
    return "not stated"


def show_time(moment: datetime | None, tz: tzinfo | None) -> str:
    """A time as a person reads it, in their zone (the machine's when none is configured)."""
    if moment is None:
        return "unknown"
    local = moment.astimezone(tz)
    return local.strftime("%d %b %Y, %H:%M %Z").strip()


def render_alert(job: Job, searches: Sequence[str], tz: tzinfo | None) -> tuple[str, str]:
    """(title, plain-text body) for one job; every third-party field defanged."""
    title = defang(job.title, MAX_TITLE)
    lines = [title + (f" — {defang(job.company, 80)}" if job.company else "")]
    facts = [f"Pay: {describe_pay(job.pay)}"]
    if job.category:
        facts.append(f"Category: {defang(job.category, 60)}")
    if job.languages:
        facts.append("Languages: " + defang(", ".join(job.languages), 80))
    lines.append(" | ".join(facts))
    lines.append(f"Posted: {show_time(job.date_posted, tz)}")
    if job.summary:
        lines.append(defang(job.summary, MAX_SUMMARY))
    link = safe_link(job.url)
    if not link or len(link) > MAX_LINK:  # none, odd, or more than a chat service takes
        link = canonical_link(job.id)
    if link:
        lines.append(link)
    names = [defang(name, 60) for name in searches[:MAX_NAMES]]
    if len(searches) > MAX_NAMES:
        names.append(f"and {len(searches) - MAX_NAMES} more")
    lines.append("Matched: " + ", ".join(names))
    return f"New OpenTrain job: {title}", "\n".join(lines)


@dataclass(frozen=True)
class Outcome:
    """What a target did with one message. ``permanent`` failures will not fix themselves;
    ``unknown`` ones ran out of time after the message went out, so the target may have
    it: they are retried, but later than a plain failure."""

    accepted: bool
    error: str | None = None
    permanent: bool = False
    unknown: bool = False


class _Collect(logging.Handler):
    """Keeps apprise's warnings during one send, so a failure can say why."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_PERMANENT = re.compile(r"error=(401|403|404)\b|Unauthorized|Forbidden|Not Found", re.I)


SEND_TIMEOUT = 30.0  # seconds a target may take to answer (apprise's own default is 4)


def send_apprise(url: str, title: str, body: str, timeout: float = SEND_TIMEOUT) -> Outcome:
    """Send one message to one apprise URL and say whether that target accepted it.

    A target that is slow to answer gets ``timeout`` seconds (unless its URL sets ``rto``
    itself): with apprise's 4 s, a webhook that records a post and answers after 8 s was
    sent the same alert again on every retry.
    """
    collector = _Collect()
    logger = logging.getLogger("apprise")
    logger.addHandler(collector)
    started = time.monotonic()
    try:
        with quiet_apprise(logging.getLogger().getEffectiveLevel()):
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
            if plugin is None:
                return Outcome(False, "apprise cannot use this URL", permanent=True)
            if "rto=" not in url:
                plugin.socket_read_timeout = timeout
            if url.startswith("mailto") and "cto=" not in url:
                plugin.socket_connect_timeout = timeout  # apprise's SMTP session timeout
            notifier = apprise.Apprise()
            notifier.add(plugin)
            accepted = bool(
                notifier.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT)
            )
    except Exception as exc:  # apprise plugins may raise anything; a send never crashes a cycle
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    finally:
        logger.removeHandler(collector)
    if accepted:
        return Outcome(True)
    reason = "; ".join(collector.messages[-2:]) or "the service did not accept the message"
    # This text bypasses the log filter (it is stored and echoed): mask the URL's secrets here.
    reason = RedactingFilter(url_secrets(url)).redact(reason)
    # Failing only after the whole read timeout: the message went out, the answer did not
    # come back. apprise does not say which; the time it took does.
    read = plugin.socket_read_timeout if isinstance(plugin.socket_read_timeout, float) else 0
    answered = re.search(r"error=\d{3}\b", reason) is not None  # the service said no
    if read and not answered and time.monotonic() - started >= 0.9 * read:
        return Outcome(False, f"no answer within {read:g}s (it may have arrived)", unknown=True)
    return Outcome(False, reason, permanent=bool(_PERMANENT.search(reason)))


def print_alert(stream: TextIO, title: str, body: str) -> Outcome:
    """The no-account target: the alert on standard output, as a block a person can scan."""
    stream.write(f"\n=== {title}\n{body}\n")
    stream.flush()
    return Outcome(True)


Sender = Callable[[Target, str, str], Outcome]


def send(target: Target, title: str, body: str, timeout: float = SEND_TIMEOUT) -> Outcome:
    """Deliver to ``target`` for real: standard output or its apprise URL."""
    if target.url is None:
        return print_alert(sys.stdout, title, body)
    return send_apprise(target.url, title, body, timeout)


def sender_for(timeout: float) -> Sender:
    """The real sender, giving each target ``timeout`` seconds to answer."""
    return functools.partial(send, timeout=timeout)


def dry_run_sender(stream: TextIO) -> Sender:
    """A sender that shows what would be sent, and to whom, without sending anything."""

    def show(target: Target, title: str, body: str) -> Outcome:
        stream.write(f"\n[dry run] would send to {target.label}:\n=== {title}\n{body}\n")
        stream.flush()
        return Outcome(True)

    return show


CHANGE_TITLES = {"pay_raised": "Pay raised on OpenTrain job", "reopened": "OpenTrain job reopened"}


def alert_text(alert: Alert, tz: tzinfo | None) -> tuple[str, str]:
    """Render an owed alert (a stored row) as (title, body)."""
    title, body = render_alert(alert.job, alert.searches, tz)
    if alert.change in CHANGE_TITLES:
        title = title.replace("New OpenTrain job", CHANGE_TITLES[alert.change], 1)
    if alert.change == "pay_raised":
        was = describe_pay(alert.old_pay)
        body = f"Pay raised: {was} → {describe_pay(alert.job.pay)}\n{body}"
    return title, body
