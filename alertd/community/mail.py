"""The page's own mails: a sign-up's confirmation link, and a lost manage link.

They go only through the operator's ``community.mail`` URL, with the member's checked
address (``rules.clean_email``) as its one ``to=``. The subject holds the community's
name (checked when the config was read) and nothing a member typed; the body holds the
link and the search's title, as plain text.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from alertd.deliver import send_apprise

log = logging.getLogger(__name__)

MAIL_TIMEOUT = 15.0  # seconds: a member is waiting for the page


def mail_url(operator_url: str, to: str) -> str:
    """The operator's mail URL with ``to`` as its only recipient."""
    parts = urlsplit(operator_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "to"]
    query.append(("to", to))
    return urlunsplit(parts._replace(query=urlencode(query)))


def send_mail(operator_url: str | None, to: str, subject: str, body: str) -> bool:
    """Send one plain-text mail; whether the mail server took it. Logs no address."""
    if operator_url is None:
        log.warning("community: a mail was not sent: the config has no community.mail")
        return False
    outcome = send_apprise(mail_url(operator_url, to), subject, body, timeout=MAIL_TIMEOUT)
    if not outcome.accepted:
        reason = (outcome.error or "refused").replace(to, "[address]")
        log.warning("community: a mail was not sent: %s", reason.replace(quote(to), "[address]"))
    return outcome.accepted


def confirmation_text(community: str, title: str, link: str) -> tuple[str, str]:
    """(subject, body) of the mail that asks a new member to confirm."""
    subject = f"{community}: confirm your job alerts"
    body = (
        f"Someone (we hope you) asked {community} to send job alerts to this address "
        f'for the search "{title}".\n\n'
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
