"""Apprise URLs as targets: checking them, naming them without their secrets, and a log filter.

This and ``deliver`` are the only modules that import apprise.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import apprise

_TOKEN_SPLIT = re.compile(r"[/:@?&=#,+;]+")
MIN_SECRET_LENGTH = 4


@contextmanager
def quiet_apprise(level: int = logging.CRITICAL) -> Iterator[None]:
    """Silence apprise's own logger for a moment (parsing a bad URL logs at ERROR)."""
    logger = logging.getLogger("apprise")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def check_url(url: str) -> str | None:
    """None when apprise can parse ``url``; otherwise what is wrong with it."""
    if "://" not in url:
        return "not an apprise URL (expected something like slack://..., mailto://...)"
    with quiet_apprise():
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        scheme = url.split("://", 1)[0]
        return f"apprise cannot use this {scheme}:// URL (unknown service or malformed URL)"
    return None


def _private_url(url: str) -> str:
    with quiet_apprise():
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        return url.split("://", 1)[0] + "://***"
    return str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]


def redact_url(url: str) -> str:
    """The URL as apprise shows it with privacy on, without its options: tokens masked."""
    return _private_url(url).split("?", 1)[0]


def url_secrets(url: str) -> set[str]:
    """The parts of ``url`` that apprise hides when it prints it privately: tokens, passwords."""
    shown = set(_TOKEN_SPLIT.split(_private_url(url)))
    return {
        part
        for part in _TOKEN_SPLIT.split(url.split("://", 1)[-1])
        if len(part) >= MIN_SECRET_LENGTH and part not in shown
    }


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
