"""Apprise URLs as targets: checking them, naming them without their secrets, and a log filter.

This and ``deliver`` are the only modules that import apprise.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

import apprise

_TOKEN_SPLIT = re.compile(r"[/:@?&=#,+;]+")
MIN_SECRET_LENGTH = 4


@contextmanager
def quiet_apprise(level: int = logging.CRITICAL) -> Iterator[None]:
    """Silence apprise's own logger for a moment (parsing a bad URL logs at ERROR)."""
    logger = logging.getLogger("apprise")
    previous = logger.level
    if previous == level:  # already quiet (setLevel clears every logger's cache: not free)
        yield
        return
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


_QUIET_ASSET = apprise.AppriseAsset(secure_logging=False)


@functools.lru_cache(maxsize=65536)
def _privacy_form(url: str) -> str | None:
    """The URL as apprise prints it with privacy on; None when apprise cannot use it.

    Instantiating an apprise plugin is the costly part of loading a config with
    thousands of targets: it is done once per URL, whatever is asked of it, and once
    per webhook endpoint for generic webhooks that differ only in their path.
    """
    shape = _WEBHOOK_SHAPE.fullmatch(url)
    if shape is None:
        return _instantiated_form(url)
    head, path, tail = shape.group("head", "path", "tail")
    known = _webhook_forms.get((head, tail))
    if known is None:
        form = _instantiated_form(url)
        at = _path_at(form, path)
        if form is not None and at >= 0:  # only a usable endpoint that shows the path as is
            if len(_webhook_forms) >= 65536:  # a daemon reloaded for months: bounded
                _webhook_forms.clear()
            _webhook_forms[(head, tail)] = (path, form, at)
        return form
    first_path, form, at = known
    return form[:at] + path + form[at + len(first_path) :]


def _instantiated_form(url: str) -> str | None:
    with quiet_apprise():  # nothing apprise logs here is shown: skip its log-masking work
        plugin = apprise.Apprise.instantiate(url, asset=_QUIET_ASSET, suppress_exceptions=True)
    return None if plugin is None else str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]


# A generic webhook whose path is plain segments (letters, digits, '-', '_', '~', a '.'
# not first): apprise neither checks nor hides nor rewrites such a path, it keeps it as
# written and prints it after the host. So every URL that differs only there is usable
# or not alike, and prints alike but for the path: one instantiation per endpoint (a
# community's 10,000 webhooks on one relay cost one, not 10,000).
_WEBHOOK_SHAPE = re.compile(
    r"(?P<head>(?:json|xml|form)s?://[^/?#\\]*)"
    r"(?P<path>(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+)"
    r"(?P<tail>(?:\?[^#]*)?)"
)
_webhook_forms: dict[tuple[str, str], tuple[str, str, int]] = {}


def _path_at(form: str | None, path: str) -> int:
    """Where ``path`` stands in a webhook's private form: right after its host and port,
    before the query (``json://host:port/path?method=POST...``); -1 when it is not there
    as written."""
    if form is None:
        return -1
    at = form.find("/", form.find("://") + 3)
    return at if form.startswith(path + "?", at) else -1


def check_url(url: str) -> str | None:
    """None when apprise can parse ``url``; otherwise what is wrong with it."""
    if "://" not in url:
        return "not an apprise URL (expected something like slack://..., mailto://...)"
    if _privacy_form(url) is None:
        scheme = url.split("://", 1)[0]
        return f"apprise cannot use this {scheme}:// URL (unknown service or malformed URL)"
    return None


def _private_url(url: str) -> str:
    private = _privacy_form(url)
    return url.split("://", 1)[0] + "://***" if private is None else private


def redact_url(url: str) -> str:
    """The URL as apprise shows it with privacy on, without its options: tokens masked."""
    return RedactingFilter(_webhook_secrets(url)).redact(_private_url(url).split("?", 1)[0])


# apprise's generic webhooks print their path and custom headers even in private mode,
# so a token written there literally is found here instead.
_WEBHOOK_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
_AUTH_WORDS = frozenset({"bearer", "basic", "token", "digest", "apikey"})


def _looks_like_token(part: str) -> bool:
    """A path segment that is a credential rather than a word: long, or letters and
    digits or upper and lower case mixed (``hook`` and ``services`` stay readable,
    ``a1b2c3d4e5`` and ``kLmNoPqRsT`` do not)."""
    if len(part) >= 16:
        return True
    if len(part) < 8:  # before looking at each character: most path segments are short
        return False
    digits = any(c.isdigit() for c in part)
    mixed = any(c.isupper() for c in part) and any(c.islower() for c in part[1:])
    return len(part) >= 8 and any(c.isalpha() for c in part) and (digits or mixed)


@functools.lru_cache(maxsize=4)
def _webhook_secrets(url: str) -> frozenset[str]:
    """Tokens in a generic webhook URL's path, and the values of its custom headers
    (worked out once per URL: its label and its secrets ask one after the other)."""
    shape = _WEBHOOK_SHAPE.fullmatch(url)  # most webhooks: no need to split the URL again
    if shape is not None:
        path, query = shape["path"], shape["tail"][1:]
    else:
        try:
            parts = urlsplit(url)
        except ValueError:
            return frozenset()
        if parts.scheme.lower() not in _WEBHOOK_SCHEMES:
            return frozenset()
        path, query = parts.path, parts.query
    found = {p for p in map(unquote, path.split("/")) if _looks_like_token(p)}
    for pair in query.split("&"):  # not parse_qsl: it reads the header's '+' as a space
        key, _, value = (unquote(side) for side in pair.partition("="))
        if key.startswith(("+", "-")) and value:  # a header or a payload field: its value,
            found.add(value)  # and each word of it
            found |= {w for w in value.split() if w.lower() not in _AUTH_WORDS}
    found |= {quote for quote in (p.replace(" ", "%20") for p in found) if quote not in found}
    return frozenset(part for part in found if len(part) >= MIN_SECRET_LENGTH)


def env_secrets_in(url: str, values: Iterable[str], hidden: set[str]) -> set[str]:
    """Which values taken from the environment are secrets in ``url``: those in a part
    apprise hides (``hidden``, what ``url_secrets`` found), or that its private form does
    not show, or anywhere in a webhook's path or query (it shows them whole). A host, a
    user name, a word apprise shows anyway are not: ``smtp.${DOMAIN}`` stays readable."""
    values = [value for value in values if len(value) >= MIN_SECRET_LENGTH and value in url]
    if not values:  # most URLs of a large config: nothing taken from the environment
        return set()
    try:
        parts = urlsplit(url)
        host, user = parts.hostname or "", unquote(parts.username or "")
        webhook = parts.scheme.lower() in _WEBHOOK_SCHEMES
    except ValueError:
        host, user, webhook = "", "", False
    private = _private_url(url)
    found = set()
    for value in values:
        if any(value in h or h in value for h in hidden):
            found.add(value)
        elif value in host or value == user:
            continue
        elif webhook or (value not in private and value not in unquote(private)):
            found.add(value)
    return found


def url_secrets(url: str) -> set[str]:
    """The parts of ``url`` that apprise hides when it prints it privately (tokens,
    passwords), and what it prints although it is a credential (webhook tokens, headers)."""
    # Both sides decoded: apprise shows 'me@example.com' as 'me%40example.com', and the
    # domain is not a secret to mask in every log line.
    private, raw = _private_url(url), url.split("://", 1)[-1]
    shown = set(_TOKEN_SPLIT.split(private)) | set(_TOKEN_SPLIT.split(unquote(private)))
    # The query's keys (user=, pass=, to=) are apprise's words, not secrets: its values are.
    address, _, query = raw.partition("?")
    values = [pair.partition("=")[2] for pair in query.split("&")]
    pieces = _TOKEN_SPLIT.split(address) + [p for v in values for p in _TOKEN_SPLIT.split(v)]
    raw = "/".join([address, *values])
    parts = set(pieces) | {unquote(p) for p in pieces} | set(_TOKEN_SPLIT.split(unquote(raw)))
    hidden = {part for part in parts if len(part) >= MIN_SECRET_LENGTH and part not in shown}
    return hidden | _webhook_secrets(url)


class RedactingFilter(logging.Filter):
    """Replaces every known secret in a log record with ``***`` before any handler sees it.

    apprise's DEBUG output prints full URLs, bot tokens included; this runs on every
    handler so nothing we or apprise log can carry a secret out.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Remember more secrets (longest first, so a token inside a longer one still goes)."""
        merged = set(self.secrets) | {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        self.secrets = sorted(merged, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every secret masked."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg = self.redact(message)
            record.args = None
            if record.exc_text:
                record.exc_text = self.redact(record.exc_text)
        return True
