"""The config's schema: what may be written in the YAML and in ``ALERTD_*`` variables.

Each setting, search and channel as a pydantic model with its default and its checks;
``alertd.config`` resolves a validated document into the ``Config`` a run uses (its
includes, ``${VAR}``s, targets and error lines), so this file says what is allowed and
that one what it means.
"""

from __future__ import annotations

import contextvars
import os
import re
from collections.abc import Callable
from datetime import time
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from alertd.community.config import CommunitySpec
from alertd.models import Filters, MinPay, Pace
from alertd.subscriptions import MEMBER_PREFIX
from alertd.yamlsource import SECRETS_OPTIONAL

DEFAULT_API_URL = "https://app.opentrain.ai/api/public/v1"
ENV_PREFIX = "ALERTD_"
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$"
)

MAX_DURATION = 7 * 24 * 3600.0


def default_state_dir() -> Path:
    """systemd's ``StateDirectory=`` (``$STATE_DIRECTORY``) under systemd, ``/data`` in a
    container (when it exists and is writable), else the XDG state dir."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    data = Path("/data")
    if data.is_dir() and os.access(data, os.W_OK):
        return data
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "alertd"


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90"``, ``"45s"``, ``"5m"`` or ``"1h30m"``."""
    if isinstance(value, bool):
        raise ValueError("expected seconds or a duration like 90, 5m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        if len(text) > 32:  # no duration is that long; and the pattern must not backtrack
            raise ValueError(f"{text[:32]!r}… is not a duration; use seconds or e.g. 90s, 5m, 1h")
        match = _DURATION.match(text)
        if not match or not any(match.groups()):
            raise ValueError(f"{text!r} is not a duration; use seconds or e.g. 90s, 5m, 1h")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError("must be more than 0 seconds and at most 7 days")
    return seconds


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _amount(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


Amount = Annotated[float, BeforeValidator(_amount), Field(gt=0, allow_inf_nan=False)]
Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Words = Annotated[list[Word], BeforeValidator(_as_list)]


def _country_code(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", value):
        raise ValueError(f"{value!r} is not a two-letter country code (ISO 3166, e.g. US, DE)")
    return value.upper()


Countries = Annotated[
    list[Annotated[Word, AfterValidator(_country_code)]], BeforeValidator(_as_list)
]


class MinPaySpec(BaseModel):
    """``min_pay:`` as written: the least per kind of pay, in the job's currency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hourly: Amount | None = None
    fixed: Amount | None = None
    per_label: Amount | None = None

    @model_validator(mode="after")
    def _some(self) -> MinPaySpec:
        if self.hourly is None and self.fixed is None and self.per_label is None:
            raise ValueError("give at least one of hourly, fixed, per_label (e.g. hourly: 15)")
        return self


def _not_a_member_name(value: str) -> str:
    if value.startswith(MEMBER_PREFIX):
        raise ValueError(
            f"names starting with {MEMBER_PREFIX!r} are kept for members' own searches; "
            "rename this search"
        )
    return value


class SearchSpec(BaseModel):
    """One saved search as written in the YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, AfterValidator(_not_a_member_name)] = Field(min_length=1)
    q: str | None = None
    category: str | None = None
    language: str | None = None
    country: str | None = None
    pay_type: Literal["PAY_PER_HOUR", "FIXED_PRICE", "PAY_PER_LABEL"] | None = Field(
        default=None, alias="payType"
    )
    notify: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    notify_existing: bool = False
    feed: bool = False  # also a public Atom feed (/feeds/<slug>.atom) of what it matches
    also: Annotated[list[Literal["pay_raised", "reopened"]], BeforeValidator(_as_list)] = Field(
        default_factory=list
    )
    min_pay: MinPaySpec | None = None
    pay_required: bool = False
    exclude: Words = Field(default_factory=list)
    experience: Words = Field(default_factory=list)
    countries: Countries = Field(default_factory=list)
    label_types: Words = Field(default_factory=list, alias="labelTypes")
    data_type: Words = Field(default_factory=list, alias="dataType")
    employment_types: Words = Field(default_factory=list, alias="employmentTypes")

    def filters(self) -> Filters:
        """The search's own filters, applied after the API's."""
        pay = self.min_pay
        return Filters(
            min_pay=None if pay is None else MinPay(pay.hourly, pay.fixed, pay.per_label),
            pay_required=self.pay_required,
            exclude=tuple(self.exclude),
            experience=tuple(self.experience),
            countries=tuple(self.countries),
            label_types=tuple(self.label_types),
            data_types=tuple(self.data_type),
            employment_types=tuple(self.employment_types),
        )


def _check_api_url(value: str) -> str:
    problem = f"{value!r} is not an http(s) URL; the default is {DEFAULT_API_URL}"
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(problem)
    if not re.fullmatch(r"[\x21-\x7e]+", value):  # a pasted no-break space, a control
        raise ValueError(f"{value!r} has a space or a character an URL cannot hold")
    try:  # what the HTTP client will need: a host, and a port that is a number
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if not parts.hostname:
        raise ValueError(problem)
    return value.rstrip("/")


def _state_dir(value: object) -> object:
    if isinstance(value, str | Path) and not str(value).strip():
        raise ValueError("is empty; name a directory, e.g. /data or ~/.local/state/alertd")
    if isinstance(value, str | Path) and "${" in str(value):  # only without the secrets
        raise ValueError(f"{str(value)!r} needs an environment variable that is not set")
    if isinstance(value, str | Path) and "\0" in str(value):
        raise ValueError(f"{str(value)!r} holds a NUL character, which no path can")
    try:
        return Path(value).expanduser() if isinstance(value, str | Path) else value
    except RuntimeError as exc:  # ~someone who does not exist here
        raise ValueError(f"{str(value)!r}: {exc}") from None


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, not true/false")
    return value


# False while the demo reads its own config: whatever ALERTD_* says, it is a sandbox.
USE_ENVIRONMENT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "use_environment", default=True
)


class AlertdSettings(BaseSettings):
    """The top-level settings; each can be overridden by ``ALERTD_<KEY>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    api_url: Annotated[str, AfterValidator(_check_api_url)] = DEFAULT_API_URL
    state_dir: Annotated[Path, BeforeValidator(_state_dir)] = Field(
        default_factory=default_state_dir
    )
    # A quiet poll costs one request (the change feed): 10 s is 6 a minute of the default
    # 60, and a new job reaches an exact-filter search within seconds.
    poll_interval: Duration = 10.0
    refresh_interval: Duration = 6 * 3600.0
    request_timeout: Duration = 30.0
    send_timeout: Duration = 30.0
    max_response_mb: float = Field(default=10.0, gt=0, le=1000)
    requests_per_minute: Annotated[int, BeforeValidator(_not_bool)] = Field(
        default=60, ge=1, le=120
    )
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = (
        "INFO"
    )
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    timezone: str | None = None
    retry_schedule: list[Duration] = Field(
        default_factory=lambda: [60.0, 300.0, 1800.0, 3600.0], min_length=1
    )
    broken_state: Literal["stop", "move_aside"] = "stop"
    metrics_port: Annotated[int, BeforeValidator(_not_bool)] | None = Field(
        default=None, ge=1, le=65535
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file: a container overrides what the image ships;
        # the demo is a sandbox that no ALERTD_* reaches.
        if not USE_ENVIRONMENT.get():
            return (init_settings,)
        return (env_settings, init_settings)


def _time_of_day(value: str) -> time:
    match = re.fullmatch(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*", value)
    if match is None:
        raise ValueError(f"{value!r} is not a time of day; write it as HH:MM, e.g. 08:00")
    return time(int(match[1]), int(match[2]))


def _quiet_hours(value: str) -> tuple[time, time]:
    start, dash, end = value.partition("-")
    if not dash:
        raise ValueError(
            f"{value!r} is not a span of hours; write it as HH:MM-HH:MM, e.g. 22:00-07:00"
        )
    span = (_time_of_day(start), _time_of_day(end))
    if span[0] == span[1]:
        raise ValueError(f"{value!r} starts and ends at the same time")
    return span


def _checked(parse: Callable[[str], object]) -> Callable[[str], str]:
    """A validator that keeps the text as written once ``parse`` accepts it."""

    def check(value: str) -> str:
        parse(value)
        return value

    return check


MAX_MENTION_ROLES = 20  # each "<@&id> " is up to 25 characters of a 2,000-character message
_SNOWFLAKE = re.compile(r"[1-9][0-9]{16,19}")
_HOW_TO_COPY = (
    "in Discord, turn on Developer Mode (User Settings → Advanced), then Server Settings "
    "→ Roles → ⋯ next to the role → Copy Role ID"
)


def _role_id(value: object) -> str:
    """A Discord role ID as written (a number, or the same in quotes): a snowflake,
    17 to 20 digits of a 64-bit number. A role's name or its ``<@&id>`` mention is not one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"a role ID is a number of 17 to 20 digits; {_HOW_TO_COPY}")
    if isinstance(value, int) and not 0 < value < 10**20:  # str() of 5,000 digits raises
        raise ValueError(f"that number is not a Discord role ID (17 to 20 digits); {_HOW_TO_COPY}")
    text = str(value).strip()
    if _SNOWFLAKE.fullmatch(text) and int(text) < 2**64:  # a snowflake is 64 bits
        return text
    if SECRETS_OPTIONAL.get() and text.startswith("${"):
        return text  # (an unset ${VAR}: `alertd status` sends nothing, needs no role)
    shown = repr(text[:40] + ("…" if len(text) > 40 else ""))
    if text.startswith("<@&") or text.startswith("@"):
        raise ValueError(
            f"{shown} is a mention or a name; write the role's ID alone "
            f"(17 to 20 digits, e.g. 123456789012345678): {_HOW_TO_COPY}"
        )
    raise ValueError(f"{shown} is not a Discord role ID (17 to 20 digits); {_HOW_TO_COPY}")


def _one_or_list(value: object) -> object:
    """``mention_roles: 123…`` (one ID, a number or a string) as a list of one."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list):
        raise ValueError("write the role IDs as a list, e.g. [123456789012345678]")
    return value


def _few_distinct(values: list[str]) -> list[str]:
    distinct = list(dict.fromkeys(values))
    if len(distinct) > MAX_MENTION_ROLES:
        raise ValueError(
            f"{len(distinct)} roles; a channel pings at most {MAX_MENTION_ROLES} "
            "(one role per topic, one channel per topic)"
        )
    return distinct


MentionRoles = Annotated[
    list[Annotated[str, BeforeValidator(_role_id)]],
    BeforeValidator(_one_or_list),
    AfterValidator(_few_distinct),
]


def _channel_form(value: object) -> object:
    """The one-URL and list forms of a channel, as the mapping form."""
    if isinstance(value, str):
        return {"urls": [value]}
    if isinstance(value, list):
        return {"urls": value}
    if not isinstance(value, dict):
        raise ValueError(
            "a channel is an apprise URL, a list of them, or a mapping (url:, batch:, ...)"
        )
    return value


class ChannelSpec(BaseModel):
    """One channel as written: a URL, a list of URLs, or a mapping with its pace."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    urls: Annotated[list[str], BeforeValidator(_as_list)] | None = None
    batch: Duration | None = None
    digest: Annotated[
        list[Annotated[str, AfterValidator(_checked(_time_of_day))]], BeforeValidator(_as_list)
    ] = Field(default_factory=list)
    quiet_hours: Annotated[str, AfterValidator(_checked(_quiet_hours))] | None = None
    # Discord roles each message pings (its allowed_mentions name exactly these).
    mention_roles: MentionRoles = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ChannelSpec:
        if (self.url is None) == (self.urls is None):
            raise ValueError("give the channel's apprise URL as url: (or a list as urls:)")
        if self.batch is not None and self.digest:
            raise ValueError("batch and digest cannot both be set; choose one pace")
        if self.batch is not None and self.batch <= 0:
            raise ValueError("batch must be a positive duration, e.g. 10m")
        return self

    def all_urls(self) -> list[str]:
        """The channel's URLs, one or many."""
        return [self.url] if self.url is not None else list(self.urls or [])

    def pace(self) -> Pace:
        """When the channel wants its alerts."""
        return Pace(
            batch=self.batch,
            digest=tuple(sorted({_time_of_day(t) for t in self.digest})),
            quiet=None if self.quiet_hours is None else _quiet_hours(self.quiet_hours),
        )


class Destinations(BaseModel):
    """What only the file can say: named channels and saved searches."""

    model_config = ConfigDict(extra="forbid")

    channels: dict[str, Annotated[ChannelSpec, BeforeValidator(_channel_form)]] = Field(
        default_factory=dict
    )
    searches: list[SearchSpec] = Field(default_factory=list)
    community: CommunitySpec | None = None  # the members' page (alertd/community/)


SETTING_KEYS = tuple(AlertdSettings.model_fields)
FILE_KEYS = tuple(Destinations.model_fields)
TOP_KEYS = (*SETTING_KEYS, *FILE_KEYS, "include")
SEARCH_KEYS = tuple((info.alias or name) for name, info in SearchSpec.model_fields.items())
