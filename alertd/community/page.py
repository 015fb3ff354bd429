"""What the community page's routes share: the config, the members table, the API view,
the mail thread, the rate limits; and the helpers every page's template needs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import g, render_template, request

from alertd.community.config import CommunitySpec
from alertd.community.lookup import Count, Lookup
from alertd.community.postman import Postman
from alertd.community.quota import QUOTA_FILE, KeptRateLimiter
from alertd.community.rules import Facets, FormError, RateLimiter, address_key
from alertd.members import Members, SearchDraft
from alertd.models import PAY_TYPES

log = logging.getLogger(__name__)

HOUR = 3600.0
DAY = 24 * HOUR
MAILS_PER_ADDRESS = 3  # a day: confirmations and lost links to one mailbox


@dataclass(frozen=True)
class DaemonStatus:
    """What the public status page may say of the daemon: no addresses, no secrets."""

    last_cycle_ended: datetime | None = None
    api_answers: bool | None = None


@dataclass
class Limits:
    """The page's rate limits (``alertd.community.rules.RateLimiter``), per kind."""

    signup_per_ip: RateLimiter = field(default_factory=lambda: RateLimiter(10, HOUR))
    lost_per_ip: RateLimiter = field(default_factory=lambda: RateLimiter(10, HOUR))
    count_per_ip: RateLimiter = field(default_factory=lambda: RateLimiter(60, HOUR))
    # In memory unless the page is served (serve_community keeps it: kept_mail_limit).
    mail_per_address: RateLimiter = field(
        default_factory=lambda: RateLimiter(MAILS_PER_ADDRESS, DAY)
    )
    mail_total: RateLimiter = field(default_factory=lambda: RateLimiter(300, HOUR))


def kept_mail_limit(state_dir: Path, members: Members) -> RateLimiter:
    """``Limits.mail_per_address`` kept in ``state_dir`` across restarts
    (``alertd.community.quota``)."""
    secret = members.derive_key("mail-quota")
    return KeptRateLimiter(state_dir / QUOTA_FILE, MAILS_PER_ADDRESS, DAY, secret)


@dataclass
class Page:
    """What the routes share: the config, the table, the API view, the mail thread."""

    spec: CommunitySpec
    members: Members
    lookup: Lookup | None
    postman: Postman
    status: Callable[[], DaemonStatus]
    tz_name: str = "UTC"
    limits: Limits = field(default_factory=Limits)
    feeds: object | None = None  # the personal feeds' store (alertd.feeds.Feeds), if served
    # The operator searches' public feeds: slug -> feed key (``alertd.feeds.public_feeds``),
    # replaced when a reload changes which searches opt in (``CommunityServer``).
    public_feeds: Callable[[str], str | None] = field(default=lambda slug: None)
    telegram: Callable[[], str | None] | None = None  # the community bot's @name, if it runs

    def facets(self) -> Facets:
        """The form's choices (none when the page has no API view)."""
        return Facets() if self.lookup is None else self.lookup.facets()

    def count(self, draft: SearchDraft, ip: str) -> Count | None:
        """How many jobs match now, within the budget and the per-IP limit."""
        if self.lookup is None or not self.limits.count_per_ip.allow(ip):
            return None
        return self.lookup.count(draft)

    def mail(self, to: str, subject: str, body: str) -> bool:
        """Queue a mail unless the address (or the page) had its share today."""
        if not self.limits.mail_per_address.allow(address_key(to)):
            return False
        if not self.limits.mail_total.allow("all"):
            log.warning("community: the page's mails for this hour are spent; one was not sent")
            return False
        self.postman.post(to, subject, body)
        return True

    def link(self, path: str) -> str:
        """``path`` on the page as members reach it (``public_url``)."""
        return f"{self.spec.public_url}{path}"


def current_page() -> Page:
    """The page of the request being served."""
    page: Page = g.page
    return page


def notice(title: str, text: str, status: int = 200, **extra: Any) -> tuple[str, int]:
    """A page with a title and a sentence (and ``status``)."""
    return render_template("notice.html", title=title, text=text, **extra), status


def form_context(page: Page, values: dict[str, str], error: FormError | None) -> dict[str, Any]:
    """What the search form's template needs."""
    return {
        "spec": page.spec,
        "facets": page.facets(),
        "pay_types": PAY_TYPES,
        "values": values,
        "error": error,
        "tz_name": page.tz_name,
    }


def form_values() -> dict[str, str]:
    """The posted form's text fields."""
    return {k: v for k, v in request.form.items() if isinstance(v, str)}


def draft_values(draft: SearchDraft) -> dict[str, str]:
    """A draft as the form's values (the edit form starts from them)."""
    pay = draft.filters.min_pay
    amount = None if pay is None else (pay.hourly or pay.fixed or pay.per_label)
    return {
        "title": draft.title,
        "q": draft.q or "",
        "category": draft.category or "",
        "language": draft.language or "",
        "country": draft.country or "",
        "pay_type": draft.pay_type or "",
        "min_pay": "" if amount is None else f"{amount:g}",
        "exclude": ", ".join(draft.filters.exclude),
        "pace": draft.pace,
        "digest_hour": "" if draft.digest_hour is None else str(draft.digest_hour),
    }
