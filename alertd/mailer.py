"""Members' alert mail: many messages over one SMTP session.

apprise opens a connection, logs in and says goodbye for every message: 1,000 members'
mails took 43 s that way, and a job that matches 10,000 members would take minutes.
Members' mail all goes through the one server the operator named in ``community.mail``,
so alertd keeps that session open while a burst lasts (closed after ``IDLE`` seconds
without a message) and sends each message as MAIL, RCPT, DATA on it. The operator's own
targets still go through apprise.

The server's settings are read from the ``mailto://``/``mailtos://`` URL by apprise's own
parser, so the URL means here what it means everywhere else. Each step's answer is
checked: a refused address is that member's failure, not the session's; a session that
drops during DATA may have delivered (``unknown``: retried after the longest wait, as
any send whose answer never came). No header may hold a line break.
"""

from __future__ import annotations

import functools
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formataddr, formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import apprise

from alertd.outcome import Outcome
from alertd.render import Links
from alertd.targets import quiet_apprise

_WIRE = compat32.clone(linesep="\r\n")  # SMTP wants CRLF; smtplib leaves bytes as they are
IDLE = 15.0  # seconds a session may sit unused before it is closed and opened anew
MEMBER_ADDRESS = "the member's address"  # what logs and errors say instead of it


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to send: the community mail URL's SMTP settings."""

    host: str
    port: int
    mode: str  # "ssl", "starttls" or "insecure", as apprise names them
    user: str | None
    password: str | None
    sender: str
    sender_name: str | None
    verify: bool = True

    @classmethod
    @functools.lru_cache(maxsize=16)  # the community's one URL, read once, not per mail
    def from_url(cls, url: str) -> SmtpServer | None:
        """The settings of a ``mailto(s)://`` URL, or None when apprise cannot use it."""
        with quiet_apprise():
            plugin: Any = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        host = getattr(plugin, "smtp_host", None)
        sender = getattr(plugin, "from_addr", None)
        if not host or not sender or not sender[1]:
            return None
        return cls(
            host=str(host),
            port=int(plugin.port),
            mode=str(plugin.secure_mode),
            user=plugin.user or None,
            password=plugin.password or None,
            sender=str(sender[1]),
            sender_name=str(sender[0]) if sender[0] else None,
            verify=bool(getattr(plugin, "verify_certificate", True)),
        )


def split_recipient(url: str) -> tuple[str, str | None]:
    """``url`` without its ``to=``, and the address it named (the member's)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    to = next((value for key, value in pairs if key == "to"), None)
    rest = urlencode([(k, v) for k, v in pairs if k != "to"])
    return urlunsplit(parts._replace(query=rest)), to


def build(
    server: SmtpServer, to: str, subject: str, text: str, html: str, headers: Mapping[str, str]
) -> MIMEMultipart:
    """The message: plain text and HTML, our headers; ValueError for a line break in
    any header (checked here: the classic MIME classes, three times faster to build
    than ``EmailMessage``, do not check it themselves)."""
    fields = {
        "Subject": subject,
        "From": formataddr((server.sender_name or "", server.sender)),
        "To": to,
        "Date": formatdate(usegmt=True),
        "Message-ID": make_msgid(domain=server.sender.rpartition("@")[2] or None),
        **headers,
    }
    message = MIMEMultipart("alternative")
    for name, value in fields.items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"a line break in the {name} header")
        message[name] = value if value.isascii() else Header(value, "utf-8").encode()
    message.attach(MIMEText(text, "plain", "utf-8"))
    message.attach(MIMEText(html, "html", "utf-8"))
    return message


class Mailer:
    """One SMTP session to ``server``, reused for message after message."""

    def __init__(self, server: SmtpServer, timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        self.lock = threading.Lock()
        self.session: smtplib.SMTP | None = None
        self.used = 0.0
        self.opened = 0  # sessions opened (what reuse saves: the bench counts them)

    def _open(self) -> smtplib.SMTP:
        server = self.server
        context = ssl.create_default_context()
        if not server.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        session: smtplib.SMTP
        if server.mode == "ssl":
            session = smtplib.SMTP_SSL(
                server.host, server.port, timeout=self.timeout, context=context
            )
        else:
            session = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
            if server.mode == "starttls":
                session.starttls(context=context)
        session.ehlo_or_helo_if_needed()
        if server.user and server.password:
            session.login(server.user, server.password)
        self.opened += 1
        return session

    def close(self) -> None:
        """End the session (politely when it still answers)."""
        session, self.session = self.session, None
        if session is not None:
            try:
                session.quit()
            except (OSError, smtplib.SMTPException):
                session.close()

    def send(self, to: str, message: MIMEMultipart) -> Outcome:
        """One message to ``to``; what the server said, with the address left out."""
        with self.lock:
            if self.session is not None and time.monotonic() - self.used > IDLE:
                self.close()
            try:
                if self.session is None:
                    self.session = self._open()
            except (OSError, smtplib.SMTPException) as exc:
                self.close()
                return Outcome(False, f"cannot reach the community's mail server: {_why(exc)}")
            try:
                return self._transaction(self.session, to, message)
            finally:
                self.used = time.monotonic()

    def _transaction(self, session: smtplib.SMTP, to: str, message: MIMEMultipart) -> Outcome:
        stage = "MAIL"
        try:
            code, answer = session.mail(self.server.sender)
            if code != 250:
                session.rset()
                return Outcome(False, f"the mail server refused the sender ({code})")
            stage = "RCPT"
            code, answer = session.rcpt(to)
            if code not in (250, 251):
                session.rset()
                why = _unnamed(_text(answer), to)
                return Outcome(
                    False, f"refused {MEMBER_ADDRESS} ({code} {why})", permanent=code >= 500
                )
            stage = "DATA"
            session.data(message.as_bytes(policy=_WIRE))
            return Outcome(True)
        except smtplib.SMTPDataError as exc:
            session.rset()
            why = _unnamed(_text(exc.smtp_error), to)
            refused = exc.smtp_code >= 500
            return Outcome(
                False, f"refused the message ({exc.smtp_code} {why})", refused_message=refused
            )
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            if stage == "DATA":  # the message went out; its answer did not come back
                return Outcome(False, f"the session dropped during DATA: {_why(exc)}", unknown=True)
            return Outcome(False, f"the session dropped: {_why(exc)}")


def _text(answer: bytes | str) -> str:
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)
    return " ".join(text.split())[:200]


def _unnamed(text: str, to: str) -> str:
    """``text`` without the address, in whatever case the server wrote it back (many
    lower-case what they were given)."""
    return re.sub(re.escape(to), MEMBER_ADDRESS, text, flags=re.IGNORECASE)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


_MAILERS: dict[SmtpServer, Mailer] = {}
_MAILERS_LOCK = threading.Lock()


def mailer_for(server: SmtpServer, timeout: float) -> Mailer:
    """The one mailer (and session) of ``server`` in this process."""
    with _MAILERS_LOCK:
        mailer = _MAILERS.get(server)
        if mailer is None or mailer.timeout != timeout:
            mailer = _MAILERS[server] = Mailer(server, timeout)
        return mailer


def close_all() -> None:
    """End every session (the daemon stopping)."""
    with _MAILERS_LOCK:
        mailers = list(_MAILERS.values())
    for mailer in mailers:
        with mailer.lock:
            mailer.close()


def list_headers(links: Links) -> dict[str, str]:
    """A member's list headers: the one-click unsubscribe of RFC 8058 that mailbox
    providers ask of subscribed mail, and the list (search) the message belongs to."""
    return {
        "List-Unsubscribe": f"<{links.unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": links.list_id,
    }


def send_member_mail(
    url: str, subject: str, text: str, html: str, links: Links, timeout: float
) -> Outcome:
    """A member's alert, to the address ``url`` names (``to=``), through the community
    mail server's shared session."""
    base, to = split_recipient(url)
    server = SmtpServer.from_url(base)
    if server is None or not to:
        return Outcome(
            False, "the community mail URL is not a usable mailto:// URL", permanent=True
        )
    try:
        message = build(server, to, subject, text, html, list_headers(links))
    except (ValueError, TypeError) as exc:  # a line break in a header: ours, never sent
        return Outcome(False, f"cannot build the mail: {type(exc).__name__}", refused_message=True)
    return mailer_for(server, timeout).send(to, message)
