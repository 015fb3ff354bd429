"""The page's own mails: a sign-up's confirmation link, and a lost manage link.

They go only through the operator's ``community.mail`` server, to the member's checked
address (``rules.clean_email``) alone. The subject holds the community's
name (checked when the config was read) and nothing a member typed; the body holds the
link and the search's title, as plain text. Anyone may have the page mail any address a
confirmation, so the title they typed is defanged there as a poster's text is in an
alert (``render.clean``): no link or address of theirs arrives in a stranger's inbox.
"""

from __future__ import annotations

import html
import logging

from alertd.mailer import MEMBER_ADDRESS, SmtpServer, build, mailer_for
from alertd.render import clean

log = logging.getLogger(__name__)

MAIL_TIMEOUT = 15.0  # seconds: a member is waiting for the page


def html_of(text: str) -> str:
    """The plain text as HTML: escaped, a paragraph per blank line, its link a link."""
    paragraphs = []
    for part in text.split("\n\n"):
        escaped = html.escape(part)
        if part.startswith(("https://", "http://")) or "\nhttp" in part:
            head, _, link = escaped.rpartition("\n")
            escaped = (
                f'{head}<br><a href="{link}">{link}</a>' if head else f'<a href="{link}">{link}</a>'
            )
        paragraphs.append(f"<p>{escaped}</p>")
    return "\n".join(paragraphs)


def send_mail(operator_url: str | None, to: str, subject: str, body: str) -> bool:
    """Send one mail through the community's mail server, over the session the members'
    alerts share (``alertd.mailer``); whether the server took it. Logs no address."""
    server = None if operator_url is None else SmtpServer.from_url(operator_url)
    if server is None:
        log.warning("community: a mail was not sent: community.mail is not a usable mailto URL")
        return False
    try:
        message = build(server, to, subject, body, html_of(body), {})
    except (ValueError, TypeError) as exc:  # a line break in a header: never sent
        log.warning("community: a mail was not sent: %s", type(exc).__name__)
        return False
    outcome = mailer_for(server, MAIL_TIMEOUT).send(to, message)
    if not outcome.accepted:
        reason = (outcome.error or "refused").replace(to, MEMBER_ADDRESS)
        log.warning("community: a mail was not sent: %s", reason)
    return outcome.accepted


def confirmation_text(community: str, title: str, link: str) -> tuple[str, str]:
    """(subject, body) of the mail that asks a new member to confirm."""
    subject = f"{community}: confirm your job alerts"
    body = (
        f"Someone (we hope you) asked {community} to send job alerts to this address "
        f'for the search "{clean(title)}".\n\n'
        f"To confirm, open this link and press the button (it works for 48 hours):\n{link}\n\n"
        "If it was not you, do nothing: without confirmation nothing more is sent, and "
        "the address is forgotten in 48 hours."
    )
    return subject, body


def manage_text(community: str, link: str) -> tuple[str, str]:
    """(subject, body) of the mail that answers "lost your link?"."""
    subject = f"{community}: your link to manage your job alerts"
    body = (
        f"Here is your personal link to see, change or stop your {community} job alerts. "
        f"Keep it to yourself: whoever has it can manage them.\n\n{link}\n\n"
        "If you did not ask for it, you can ignore this mail."
    )
    return subject, body
