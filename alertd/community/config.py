"""The ``community:`` section as written: the members' page and what it may do.

Its mail URL is the operator's (members never type an apprise URL): confirmation and
manage-link mails go only there, with the member's confirmed address as ``to=``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from alertd.targets import check_url
from alertd.yamlsource import SECRETS_OPTIONAL

DEFAULT_LISTEN = "127.0.0.1:8080"
COMMUNITY_KEYS = ("name", "public_url", "listen", "signup", "mail", "limits", "telegram")
TELEGRAM_KEYS = ("token", "api_url")
TELEGRAM_API = "https://api.telegram.org"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, not true/false")
    return value


def _name(value: str) -> str:
    if _CONTROL.search(value):  # it is in every mail's subject
        raise ValueError("the name cannot hold a line break or a control character")
    return value.strip()


def _public_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://alerts.example.org")
    if not re.fullmatch(r"[\x21-\x7e]+", value) or parts.query or parts.fragment:
        raise ValueError(f"{value!r}: give the page's address only, without ?query or #part")
    return value.rstrip("/")


def _listen_form(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):  # `listen: 8080`
        raise ValueError(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:{value}")
    return value


def _listen(value: str) -> str:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdecimal() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return value


def _signup(value: str) -> str:
    if value in ("open", "off"):
        return value
    kind, colon, code = value.partition(":")
    if kind == "invite" and colon and re.fullmatch(r"[A-Za-z0-9_-]{8,128}", code):
        return value
    raise ValueError(
        f"{value!r} is not open, off or invite:<code> (a code of 8 to 128 letters, digits, - or _)"
    )


def _mail(value: str) -> str:
    scheme = value.split("://", 1)[0].lower()
    if scheme not in ("mailto", "mailtos"):
        raise ValueError("give a mailto:// or mailtos:// apprise URL (the operator's mail server)")
    if SECRETS_OPTIONAL.get() and "${" in value:  # status/health without the secrets
        return value
    problem = check_url(value)
    if problem:
        raise ValueError(problem)
    return value


def _token(value: str) -> str:
    if SECRETS_OPTIONAL.get() and "${" in value:  # status/health without the secrets
        return value
    if not re.fullmatch(r"[0-9]{1,20}:[A-Za-z0-9_-]{20,100}", value):
        # Never the value itself: it is a secret, and this message reaches the terminal.
        raise ValueError(
            "is not a bot token as @BotFather gives it (digits, a colon, then letters, "
            "digits, - and _); put it in an environment variable: token: ${TELEGRAM_BOT_TOKEN}"
        )
    return value


def _api_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL, e.g. {TELEGRAM_API}")
    if parts.query or parts.fragment or not re.fullmatch(r"[\x21-\x7e]+", value):
        raise ValueError(f"{value!r}: give the Bot API server's address only, e.g. {TELEGRAM_API}")
    return value.rstrip("/")


class TelegramSpec(BaseModel):
    """``community.telegram``: the community's bot, whose token @BotFather gave."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: Annotated[str, Field(repr=False), AfterValidator(_token)]
    api_url: Annotated[str, AfterValidator(_api_url)] = TELEGRAM_API


class LimitsSpec(BaseModel):
    """What one member may have: searches, and alerts in a day."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    searches_per_member: Annotated[int, BeforeValidator(_not_bool)] = Field(
        default=10, ge=1, le=1000
    )
    alerts_per_member_per_day: Annotated[int, BeforeValidator(_not_bool)] = Field(
        default=50, ge=1, le=100_000
    )


class CommunitySpec(BaseModel):
    """``community:``: the members' page, served by ``alertd run`` when this is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_name)]
    public_url: Annotated[str, Field(max_length=500), AfterValidator(_public_url)]
    listen: Annotated[str, BeforeValidator(_listen_form), AfterValidator(_listen)] = DEFAULT_LISTEN
    signup: Annotated[str, AfterValidator(_signup)] = "open"
    mail: Annotated[str, AfterValidator(_mail)] | None = None
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    telegram: TelegramSpec | None = None

    @property
    def host(self) -> str:
        """The address the page listens on (``[::1]`` without its brackets)."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port the page listens on."""
        return int(self.listen.rpartition(":")[2])

    @property
    def invite_code(self) -> str | None:
        """The code a sign-up must carry with ``signup: invite:<code>``."""
        kind, _, code = self.signup.partition(":")
        return code if kind == "invite" else None

    @property
    def signup_mode(self) -> Literal["open", "off", "invite"]:
        """open, off, or invite (a code is needed)."""
        if self.signup == "open":
            return "open"
        return "off" if self.signup == "off" else "invite"
