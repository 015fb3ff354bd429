"""Handing a rendered message to its target: standard output, apprise, or one HTTPS POST.

``alertd.render`` decides what each service is told; this module only delivers it.
apprise sends the Telegram HTML, the e-mail (HTML part, and a plain part it derives
from it) and the plain text every other service gets. Discord and Slack webhooks are
posted here with httpx instead: apprise cannot send Discord ``allowed_mentions`` (it
writes ``allow_mentions``) nor embeds of our own, nor Slack blocks of our own; the
endpoint still comes from apprise's parsing of the same ``discord://`` / ``slack://`` URL.

A failed send is an outcome, never an exception: the pipeline records it and retries.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, TextIO
from urllib.parse import parse_qsl, quote, urlsplit

import apprise
import httpx

from alertd.exchange import Exchange, Finished, current, keep_connections, run_bounded
from alertd.feeds import Feeds, deliver_to_feed
from alertd.mailer import send_member_mail
from alertd.models import Target
from alertd.outcome import Outcome as Outcome
from alertd.render import (
    Channel,
    Message,
    channel_for,
    render_discord,
    render_email,
    render_plain,
    render_slack,
    render_telegram,
)
from alertd.targets import RedactingFilter, quiet_apprise, url_secrets

log = logging.getLogger(__name__)
USER_AGENT = "alertd"


class _Collect(logging.Handler):
    """Keeps apprise's warnings during one send, so a failure can say why: only this
    send's (apprise logs from its own threads, and a send abandoned at its deadline may
    still be logging)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        self.exchange = current()

    def emit(self, record: logging.LogRecord) -> None:
        if current() is self.exchange:
            self.messages.append(record.getMessage())


_PERMANENT = re.compile(r"error=(401|403|404)\b|Unauthorized|Forbidden|Not Found", re.I)
_MESSAGE_REFUSED = re.compile(r"error=(400|413|422)\b")  # how apprise reports the status
MESSAGE_REFUSED = (400, 413, 422)


SEND_TIMEOUT = 30.0  # seconds a target may take to answer (apprise's own default is 4)


def send_apprise(
    url: str,
    title: str,
    body: str,
    timeout: float = SEND_TIMEOUT,
    body_format: apprise.NotifyFormat = apprise.NotifyFormat.TEXT,
) -> Outcome:
    """Send one message to one apprise URL and say whether that target accepted it.

    ``body_format`` says what ``body`` is: plain text (apprise escapes it for the
    service) or HTML of ours (Telegram's parse mode, an e-mail's HTML part).

    A target that is slow to answer gets ``timeout`` seconds (unless its URL sets ``rto``
    itself): with apprise's 4 s, a webhook that records a post and answers after 8 s was
    sent the same alert again on every retry.
    """
    collector = _Collect()
    logger = logging.getLogger("apprise")
    logger.addHandler(collector)
    # apprise's own lines ("Notifying 1 service(s).", its failure that ours repeats) go
    # to the log at DEBUG only; otherwise only the collector hears them.
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    propagated, logger.propagate = logger.propagate, debug
    started = time.monotonic()
    try:
        with quiet_apprise(logging.DEBUG if debug else logging.WARNING):
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
            if plugin is None:
                return Outcome(False, "apprise cannot use this URL", permanent=True)
            if "rto=" not in url:
                plugin.socket_read_timeout = timeout
            if url.startswith("mailto") and "cto=" not in url:
                plugin.socket_connect_timeout = timeout  # apprise's SMTP session timeout
            notifier = apprise.Apprise()
            notifier.add(plugin)
            accepted = bool(notifier.notify(body=body, title=title, body_format=body_format))
    except Exception as exc:  # apprise plugins may raise anything; a send never crashes a cycle
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    finally:
        logger.removeHandler(collector)
        logger.propagate = propagated
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
    return Outcome(
        False,
        reason,
        permanent=bool(_PERMANENT.search(reason)),
        refused_message=bool(_MESSAGE_REFUSED.search(reason)),
    )


@dataclass(frozen=True)
class Webhook:
    """Where a ``discord://`` or ``slack://`` webhook URL posts, as apprise parses it."""

    service: str
    endpoint: str
    username: str | None = None
    read_timeout: float | None = None  # the URL's own ``rto=``, if it sets one


def webhook_for(url: str) -> Webhook | None:
    """The webhook behind a Discord or Slack URL; None when apprise would post elsewhere
    (a Slack bot token, a workflow) or cannot parse it."""
    with quiet_apprise():
        plugin: Any = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        return None
    rto = plugin.socket_read_timeout if "rto=" in url else None
    channel = channel_for(url)
    if channel is Channel.DISCORD and getattr(plugin, "webhook_token", None):
        endpoint = f"{plugin.notify_url}/{plugin.webhook_id}/{plugin.webhook_token}"
        if plugin.thread_id:
            endpoint += f"?thread_id={quote(str(plugin.thread_id), safe='')}"
        return Webhook("Discord", endpoint, plugin.user or None, rto)
    if channel is Channel.SLACK and str(getattr(plugin, "mode", "")) == "hook":
        endpoint = f"{plugin.webhook_url}/{plugin.token_a}/{plugin.token_b}/{plugin.token_c}"
        return Webhook("Slack", endpoint, plugin.user or None, rto)
    return None


def _trust() -> ssl.SSLContext | bool:
    """The CA bundle requests (and so apprise) would trust, for httpx too."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle) if bundle else True


def post_webhook(
    url: str, hook: Webhook, payload: dict[str, Any], timeout: float = SEND_TIMEOUT
) -> Outcome:
    """POST ``payload`` as JSON to the webhook and say whether the service took it."""
    mask = RedactingFilter(url_secrets(url))
    log.debug("%s POST URL: %s", hook.service, mask.redact(hook.endpoint))
    if hook.username:
        payload = {**payload, "username": hook.username}
    wait = hook.read_timeout or timeout
    exchange = current() or Exchange(timeout)
    # identity: the answer is only read for a status and a few words; a compressed one
    # could inflate far past the cap.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    try:
        with (
            keep_connections(
                httpx.Client(
                    verify=_trust(),
                    timeout=httpx.Timeout(timeout, read=wait),
                    follow_redirects=False,
                ),
                exchange,
            ) as client,
            client.stream("POST", hook.endpoint, json=payload, headers=headers) as response,
        ):
            status = response.status_code
            exchange.answered("POST", status, response.headers.get("location"))
            body = exchange.read(response.iter_raw())
    except httpx.ReadTimeout:  # the message went out; the answer did not come back
        return Outcome(False, f"no answer within {wait:g}s (it may have arrived)", unknown=True)
    except Exception as exc:  # any httpx or TLS error: a failed send, never a crash
        return Outcome(False, mask.redact(f"{hook.service}: {type(exc).__name__}: {exc}"))
    finally:
        exchange.release()  # the connection is closed: its duplicate goes too
    if 200 <= status < 300:
        return Outcome(True)
    detail = mask.redact(body[:300].decode("utf-8", "replace").strip())
    log.debug("%s answered %d: %s", hook.service, status, detail)
    if status == 429:
        wait_for = _retry_after(body, response.headers.get("Retry-After"))
        return Outcome(
            False,
            f"{hook.service} is rate limiting: asked to wait {wait_for:g}s",
            retry_after=wait_for,
        )
    return Outcome(
        False,
        f"{hook.service} refused the message: error={status}; {detail}",
        permanent=status in (401, 403, 404),
        refused_message=status in MESSAGE_REFUSED,
    )


MAX_RETRY_AFTER = 900.0  # a longer wait asked by a service is taken as this


def _retry_after(body: bytes, header: str | None) -> float:
    """How long a 429 asks to wait: Discord's ``retry_after`` (seconds, in the body), or
    the ``Retry-After`` header; a few seconds when neither is readable; capped."""
    seconds: object = None
    try:
        answer = json.loads(body)
        seconds = answer.get("retry_after") if isinstance(answer, dict) else None
    except (ValueError, RecursionError):
        pass
    if seconds is None:
        seconds = header
    try:
        wait_for = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        wait_for = 5.0
    if not math.isfinite(wait_for) or wait_for < 0:
        wait_for = 5.0
    return min(wait_for, MAX_RETRY_AFTER)


def print_alert(stream: TextIO, title: str, body: str) -> Outcome:
    """The no-account target: the alert on standard output, as a block a person can scan."""
    stream.write(f"\n=== {title}\n{body}\n")
    stream.flush()
    return Outcome(True)


Sender = Callable[[Target, Message], Outcome]


def send(
    target: Target,
    message: Message,
    timeout: float = SEND_TIMEOUT,
    tz: tzinfo | None = None,
    stop: threading.Event | None = None,
    ping: bool = True,
) -> Outcome:
    """Deliver to ``target`` for real, in the form its service renders well, within
    ``timeout`` seconds whatever the target does (``alertd.exchange``); a ``stop`` ends
    the wait within a second. Without ``ping`` the target's Discord roles are shown
    but not pinged (``alertd test-notify``)."""
    url = target.url
    if url is None:
        return print_alert(sys.stdout, *render_plain(message, tz))
    exchange = Exchange(max(timeout, _own_read_timeout(url)))
    roles = target.mention_roles
    finished = run_bounded(
        exchange, lambda: _send_url(url, message, timeout, tz, roles, ping), stop or _NEVER
    )
    return _judge(target, exchange, finished, stopped=stop is not None and stop.is_set())


_NEVER = threading.Event()


def _own_read_timeout(url: str) -> float:
    """The read timeout a URL sets itself (apprise's ``rto=``), which the operator chose
    for that target over ``send_timeout``; 0 when it sets none."""
    try:
        for key, value in parse_qsl(urlsplit(url).query):
            if key == "rto":
                seconds = float(value)
                return seconds if math.isfinite(seconds) and seconds > 0 else 0.0
    except ValueError:
        pass
    return 0.0


def _send_url(
    url: str,
    message: Message,
    timeout: float,
    tz: tzinfo | None,
    roles: tuple[str, ...] = (),
    ping: bool = True,
) -> Outcome:
    channel = channel_for(url)
    hook = webhook_for(url) if channel in (Channel.DISCORD, Channel.SLACK) else None
    if hook is not None:
        if channel is Channel.DISCORD:
            payload = render_discord(message, tz, roles, ping)
            return post_webhook(url, hook, payload, timeout)
        return post_webhook(url, hook, render_slack(message, tz), timeout)
    if channel is Channel.TELEGRAM:
        html = render_telegram(message, tz)
        return send_apprise(url, "", html, timeout, apprise.NotifyFormat.HTML)
    if channel is Channel.EMAIL:
        subject, page = render_email(message, tz)
        if message.links is not None:  # a member's: over the community's one session
            return send_member_mail(
                url, subject, render_plain(message, tz)[1], page, message.links, timeout
            )
        return send_apprise(url, subject, page, timeout, apprise.NotifyFormat.HTML)
    title, body = render_plain(message, tz)
    return send_apprise(url, title, body, timeout)


def _judge(target: Target, exchange: Exchange, finished: Finished, stopped: bool) -> Outcome:
    """The outcome of a bounded send: a redirect is a failure; a 2xx to the message is
    a send, even when its answer was cut or never ended (see ``alertd.exchange``)."""
    if exchange.redirect is not None:
        return Outcome(False, exchange.redirect_error(), permanent=exchange.is_permanent_redirect)
    outcome: Outcome | None = None
    if finished.done.is_set():
        error = finished.error
        outcome = finished.value if error is None else Outcome(False, f"{type(error).__name__}")
    if outcome is not None and (outcome.accepted or exchange.cut is None):
        return outcome
    if exchange.accepted is not None:  # the target took it: never send it again
        why = exchange.cut or (
            "was still arriving when alertd stopped"
            if stopped
            else f"did not end within {exchange.seconds:g}s"
        )
        log.warning(
            "%s accepted the message (%d) but its answer %s: counted as sent",
            target.label,
            exchange.accepted,
            why,
        )
        return Outcome(True)
    if outcome is not None:
        return outcome
    if stopped:
        return Outcome(False, "stopped during the send (it may have arrived)", unknown=True)
    return Outcome(
        False, f"no answer within {exchange.seconds:g}s (it may have arrived)", unknown=True
    )


def sender_for(
    timeout: float, tz: tzinfo | None = None, stop: threading.Event | None = None
) -> Sender:
    """The real sender, giving each target ``timeout`` seconds to answer; ``stop`` (the
    daemon's) ends a send's wait within a second."""
    return functools.partial(send, timeout=timeout, tz=tz, stop=stop)


def with_feeds(send: Sender, feeds: Feeds) -> Sender:
    """``send``, but a feed target's alerts are added to its feed (every job of the
    message, on disk when it answers) instead of going to a service."""

    def route(target: Target, message: Message) -> Outcome:
        key = target.feed_key
        if key is None:
            return send(target, message)
        return deliver_to_feed(feeds, key, message, datetime.now(UTC))

    return route


def dry_run_sender(stream: TextIO, tz: tzinfo | None = None) -> Sender:
    """A sender that shows what would be sent, and to whom, without sending anything."""

    def show(target: Target, message: Message) -> Outcome:
        title, body = render_plain(message, tz)
        stream.write(f"\n[dry run] would send to {target.label}:\n=== {title}\n{body}\n")
        stream.flush()
        return Outcome(True)

    return show
