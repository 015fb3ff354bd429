"""The page's decisions, without HTTP: what a field may hold, who may sign up, how often.

Every value a member types is bounded here, and anything with a line break or another
control character is refused: member text may end up in a mail, and a CR/LF must never
reach a header. Text is otherwise kept as typed; the templates escape it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from alertd.members import SearchDraft, normalise_email
from alertd.models import PAY_TYPES, Filters, MinPay

MAX_TITLE = 80
MAX_KEYWORDS = 200
MAX_CHOICE = 100
MAX_WORD = 50
MAX_EXCLUDE = 20
MAX_EMAIL = 254
MAX_PAY = 1_000_000.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
# Conservative on purpose: the address becomes the ``to=`` of an apprise mailto URL,
# where a comma or a space would add a second recipient, and a bare host name or an IP
# literal would aim the operator's mail server at a machine of the member's choosing.
_EMAIL = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}"
)
PAY_KIND = {"PAY_PER_HOUR": "hourly", "FIXED_PRICE": "fixed", "PAY_PER_LABEL": "per_label"}


class FormError(ValueError):
    """What is wrong with one field, said for the member: ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def clean_text(form: Mapping[str, str], name: str, limit: int) -> str | None:
    """A field's text, trimmed; None when empty; FormError past ``limit`` or with a
    control character (a line break could reach a mail header)."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise FormError(name, "is not text")
    if _CONTROL.search(value):
        raise FormError(name, "cannot hold a line break or a control character")
    value = value.strip()
    if len(value) > limit:
        raise FormError(name, f"is longer than {limit} characters")
    return value or None


def clean_email(value: str) -> str:
    """An address the operator's mail server may be asked to send to; FormError if not."""
    if _CONTROL.search(value):
        raise FormError("email", "cannot hold a line break or a control character")
    value = value.strip()
    if len(value) > MAX_EMAIL or not _EMAIL.fullmatch(value):
        raise FormError("email", "is not an e-mail address like name@example.org")
    return value


def _choice(form: Mapping[str, str], name: str, allowed: frozenset[str] | None) -> str | None:
    value = clean_text(form, name, MAX_CHOICE)
    if value is not None and allowed is not None and value not in allowed:
        raise FormError(name, "is not one of the choices offered")
    return value


def _min_pay(form: Mapping[str, str], pay_type: str | None) -> MinPay | None:
    text = clean_text(form, "min_pay", 20)
    if text is None:
        return None
    try:
        amount = float(text)
    except ValueError:
        raise FormError("min_pay", "is not a number") from None
    if not math.isfinite(amount) or not 0 < amount <= MAX_PAY:
        raise FormError("min_pay", f"must be more than 0 and at most {MAX_PAY:,.0f}")
    kind = PAY_KIND.get(pay_type or "", "hourly")  # without a pay type: the hourly rate
    return MinPay(**{kind: amount})


def _exclude(form: Mapping[str, str]) -> tuple[str, ...]:
    text = clean_text(form, "exclude", MAX_EXCLUDE * (MAX_WORD + 2))
    words = [w.strip() for w in (text or "").split(",") if w.strip()]
    if len(words) > MAX_EXCLUDE:
        raise FormError("exclude", f"at most {MAX_EXCLUDE} words")
    if any(len(w) > MAX_WORD for w in words):
        raise FormError("exclude", f"each word at most {MAX_WORD} characters")
    return tuple(dict.fromkeys(words))


def _pace(form: Mapping[str, str]) -> tuple[str, int | None]:
    pace = form.get("pace", "now")
    if pace not in ("now", "daily"):
        raise FormError("pace", "is not one of the choices offered")
    if pace == "now":
        return "now", None
    hour = form.get("digest_hour", "")
    if not (isinstance(hour, str) and hour.isdecimal() and 0 <= int(hour) <= 23):
        raise FormError("digest_hour", "choose an hour from 0 to 23")
    return "daily", int(hour)


@dataclass(frozen=True)
class Facets:
    """The choices the sign-up form offers, as ``/jobs/facets`` gave them (value, jobs)."""

    categories: tuple[tuple[str, int], ...] = ()
    languages: tuple[tuple[str, int], ...] = ()
    countries: tuple[tuple[str, int], ...] = ()

    def allowed(self, name: str) -> frozenset[str] | None:
        """The values a field may take; None (any bounded text) when the API gave none."""
        items = {"category": self.categories, "language": self.languages}.get(name)
        items = self.countries if name == "country" else items
        return frozenset(v for v, _ in items) if items else None


def parse_search(form: Mapping[str, str], facets: Facets) -> SearchDraft:
    """The search a form asks for; FormError for the first field that is wrong."""
    q = clean_text(form, "q", MAX_KEYWORDS)
    category = _choice(form, "category", facets.allowed("category"))
    language = _choice(form, "language", facets.allowed("language"))
    country = _choice(form, "country", facets.allowed("country"))
    pay_type = _choice(form, "pay_type", frozenset(PAY_TYPES))
    exclude = _exclude(form)
    min_pay = _min_pay(form, pay_type)
    pace, hour = _pace(form)
    title = clean_text(form, "title", MAX_TITLE) or default_title(q, category, language, country)
    return SearchDraft(
        title=title,
        q=q,
        category=category,
        language=language,
        country=country,
        pay_type=pay_type,
        filters=Filters(min_pay=min_pay, exclude=exclude),
        pace="daily" if pace == "daily" else "now",
        digest_hour=hour,
    )


def default_title(*parts: str | None) -> str:
    """A search's name when the member gave none: what it looks for."""
    named = " · ".join(p for p in parts if p)
    return (named or "All open jobs")[:MAX_TITLE]


def may_sign_up(mode: str, invite_code: str | None, given: str | None) -> bool:
    """Whether a sign-up is let in: ``open``; ``invite`` with the right code (compared in
    constant time); never when ``off``."""
    if mode == "open":
        return True
    if mode != "invite" or not invite_code or not given:
        return False
    return hmac.compare_digest(given.encode(), invite_code.encode())


def client_key(ip: str) -> str:
    """How the rate limits know a client: its IPv4 address, or its IPv6 /64 (a host
    has a /64 of its own and may take a new address in it for every request)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is 192.0.2.1
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def address_key(email: str) -> str:
    """How the rate limits know an address without keeping it: by its mailbox, so
    ``name+1@`` and ``name+2@`` (RFC 5233 sub-addresses, one inbox) share one limit."""
    local, _, domain = normalise_email(email).rpartition("@")
    mailbox = local.partition("+")[0] or local
    return hashlib.sha256(f"{mailbox}@{domain}".encode()).hexdigest()


class RateLimiter:
    """At most ``limit`` events per key in ``window`` seconds, in this process's memory.

    Bounded: past ``max_keys`` the keys least recently used are forgotten (a flood of
    many addresses cannot grow it without end; forgetting errs towards letting one more
    request in, never towards refusing a member for good).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one event for ``key`` and say whether it is within the limit (an event
        over the limit is not counted: waiting out the window always lets one in)."""
        now = self.clock()
        with self._lock:
            events = self._events.pop(key, None) or deque()
            while events and events[0] <= now - self.window:
                events.popleft()
            allowed = len(events) < self.limit
            if allowed:
                events.append(now)
            self._events[key] = events
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
            return allowed

    def restore(self, key: str, moment: float) -> None:
        """Count an event of ``key`` at ``moment`` (a reading of ``clock``) that an earlier
        run saw; events are restored oldest first."""
        with self._lock:
            events = self._events.pop(key, None) or deque()
            events.append(moment)
            self._events[key] = events
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)

    def events(self) -> list[tuple[str, float]]:
        """Every event still within the window, as (key, moment), oldest key first."""
        horizon = self.clock() - self.window
        with self._lock:
            return [(k, t) for k, times in self._events.items() for t in times if t > horizon]
