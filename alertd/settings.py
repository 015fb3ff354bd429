"""The only place where YAML and ``ALERTD_*`` environment variables become typed config.

Every mistake becomes one ``ConfigError`` naming the file, the line and the field,
with the nearest valid spelling where there is one. ``${VAR}`` in any string of the
main file is taken from the environment (or a systemd credential); an included file may
use only the names its ``include:`` entry lists. Every missing variable is named in one
error, and every value taken that way is remembered as a secret so that it never
reaches a log.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import time, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from alertd.community.config import COMMUNITY_KEYS, CommunitySpec
from alertd.errors import ConfigError
from alertd.models import PAY_TYPES, Filters, MinPay, Pace, SavedSearch, Target
from alertd.targets import (
    MIN_SECRET_LENGTH,
    RedactingFilter,
    check_url,
    env_secrets_in,
    quiet_apprise,
    redact_url,
    url_secrets,
)
from alertd.yamlsource import (
    SECRETS_OPTIONAL,
    Loc,
    Missing,
    YamlDoc,
    field_name,
    find_includes,
    line_for,
    missing_error,
    named_values,
    parse_yaml,
    read_text,
    read_yaml,
    substitute,
)
from alertd.zones import local_zone

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


class SearchSpec(BaseModel):
    """One saved search as written in the YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    q: str | None = None
    category: str | None = None
    language: str | None = None
    country: str | None = None
    pay_type: Literal["PAY_PER_HOUR", "FIXED_PRICE", "PAY_PER_LABEL"] | None = Field(
        default=None, alias="payType"
    )
    notify: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    notify_existing: bool = False
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


@dataclass(frozen=True)
class Config:
    """Everything a run needs, validated and resolved: searches know their targets."""

    source: str
    api_url: str
    state_dir: Path
    poll_interval: float
    requests_per_minute: int
    log_level: str
    tz: tzinfo
    searches: tuple[SavedSearch, ...]
    log_format: str = "text"
    retry_schedule: tuple[float, ...] = (60.0, 300.0, 1800.0, 3600.0)
    refresh_interval: float = 6 * 3600.0
    request_timeout: float = 30.0  # one whole API request, headers and body
    send_timeout: float = 30.0  # how long a target may take to answer a delivery
    max_response_mb: float = 10.0  # one decoded API answer
    broken_state: str = "stop"  # or "move_aside": a damaged state is moved aside at start
    metrics_port: int | None = None  # serve /metrics and /healthz on 127.0.0.1 (metrics.py)
    owner: str = ""  # the file's resolved path: what it forgets, it forgets of its own searches
    targets: dict[str, Target] = field(default_factory=dict)
    channels: dict[str, tuple[Target, ...]] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()
    lines: Mapping[Loc, int] = field(default_factory=dict, repr=False, compare=False)
    # Where each search was written (its file and its index there), in searches' order.
    origins: tuple[tuple[YamlDoc, int], ...] = field(default=(), repr=False, compare=False)
    community: CommunitySpec | None = None  # the members' page, when the config has one

    def line_of(self, *loc: str | int) -> int | None:
        """The main file's line of a field, e.g. ``line_of("timezone")``."""
        return line_for(tuple(loc), self.lines)

    def search_error(self, index: int, message: str, *loc: str | int) -> ConfigError:
        """A ConfigError at ``loc`` of ``searches[index]``, in the file that search is in."""
        if index >= len(self.origins):
            where: Loc = ("searches", index, *loc)
            return ConfigError(
                message, source=self.source, line=self.line_of(*where), field=field_name(where)
            )
        doc, at = self.origins[index]
        return doc.error(message, ("searches", at, *loc))

    def search(self, name: str) -> SavedSearch:
        """The saved search called ``name``; ConfigError with the nearest name otherwise."""
        for search in self.searches:
            if search.name == name:
                return search
        raise ConfigError(
            f"no saved search named {name!r}{_suggest(name, [s.name for s in self.searches])}",
            source=self.source,
        )


def _suggest(word: str, choices: Iterable[str]) -> str:
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" — did you mean {lowered[close[0]]!r}?" if close else ""


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` — did you mean 'X'?`` for the nearest choice, or an empty string."""
    return _suggest(word, choices)


# -- validation errors -------------------------------------------------------


def _from_environment(loc: Loc) -> str | None:
    if loc and isinstance(loc[0], str) and loc[0] in SETTING_KEYS:
        name = f"{ENV_PREFIX}{loc[0].upper()}"
        if name in os.environ:
            return name
    return None


def _translate(exc: ValidationError, lines: Mapping[Loc, int], source: str) -> ConfigError:
    error = exc.errors()[0]
    loc: Loc = tuple(error["loc"])
    env_name = _from_environment(loc)
    where = f"environment variable {env_name}" if env_name else source
    line = None if env_name else line_for(loc, lines)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = SEARCH_KEYS if len(loc) >= 3 and loc[0] == "searches" else SETTING_KEYS + FILE_KEYS
        known = COMMUNITY_KEYS if len(loc) == 2 and loc[0] == "community" else known
        return ConfigError(
            f"unknown key {key!r}{_suggest(key, known)}",
            source=where,
            line=line,
            field=field_name(loc),
        )
    message = str(error["msg"]).removeprefix("Value error, ")
    if loc and loc[0] == "channels" and len(loc) >= 2 and kind in ("list_type", "string_type"):
        message = "a channel is one apprise URL or a list of them"
    elif kind == "literal_error" and loc and loc[-1] == "payType":
        message = f"{error['input']!r} is not a pay type; use one of {', '.join(PAY_TYPES)}"
        message += _suggest(str(error["input"]), PAY_TYPES)
    elif kind == "missing":
        message = "is required"
    return ConfigError(message, source=where, line=line, field=field_name(loc))


# -- resolving targets -------------------------------------------------------


class _Resolver:
    """Turns channel names and URLs into Targets, checking each URL with apprise once.

    A channel's target is keyed by the channel's name, so fixing a typo in its URL or
    rotating its token keeps what it is owed; an inline URL is keyed by its digest.
    The same URL reached twice (by channel and inline) is one target.
    """

    def __init__(self, env_values: set[str]) -> None:
        self.by_url: dict[str, Target] = {}
        self.secrets: set[str] = set()  # what the log must mask: the URLs' secret parts
        self.env_values = env_values

    def target(
        self,
        url: str,
        doc: YamlDoc,
        loc: Loc,
        channel: str | None = None,
        label: str | None = None,
        pace: Pace | None = None,
    ) -> Target:
        """The target for ``url``, written at ``loc`` in ``doc``; ConfigError if apprise can't."""
        problem = None if SECRETS_OPTIONAL.get() and "${" in url else check_url(url)
        if problem:
            raise doc.error(problem, loc)
        if url not in self.by_url:
            hidden = url_secrets(url)
            hidden |= env_secrets_in(url, self.env_values, hidden)
            self.secrets |= hidden
            if channel is None:
                label = RedactingFilter(hidden).redact(redact_url(url))
                self.by_url[url] = Target.for_url(url, label)
            else:
                self.by_url[url] = Target(
                    key=f"channel:{channel}", label=label or channel, url=url, pace=pace or Pace()
                )
        elif channel is not None and pace is not None and self.by_url[url].pace != pace:
            first = self.by_url[url].label
            raise doc.error(
                f"the same URL as channel {first!r} with another pace; one URL is one "
                "target with one pace: give it one channel (or both the same pace)",
                loc,
            )
        return self.by_url[url]

    @property
    def targets(self) -> dict[str, Target]:
        """Every distinct target, by key."""
        return {t.key: t for t in self.by_url.values()}


def _list_label(channel: str, urls: list[str], index: int) -> str:
    """How a person reads one URL of a channel's list: by its service
    (``everywhere: discord``), numbered only when the list has that service twice."""
    scheme = urls[index].split("://", 1)[0].lower()
    same = [i for i, url in enumerate(urls) if url.split("://", 1)[0].lower() == scheme]
    return f"{channel}: {scheme}" + (f" #{same.index(index) + 1}" if len(same) > 1 else "")


def _resolve_channels(
    file: Destinations, doc: YamlDoc, resolver: _Resolver
) -> dict[str, tuple[Target, ...]]:
    channels: dict[str, tuple[Target, ...]] = {}
    for name, spec in file.channels.items():
        urls = spec.all_urls()
        if spec.url is not None:
            locs: list[Loc] = [("channels", name, "url")]
        elif doc.lines.get(("channels", name, "urls")) is not None:
            locs = [("channels", name, "urls", i) for i in range(len(urls))]
        else:
            locs = [("channels", name, i) for i in range(len(urls))]
        if not urls:
            raise ConfigError(
                "a channel needs at least one apprise URL",
                source=doc.source,
                line=doc.line_of(("channels", name)),
                field=f"channels.{name}",
            )
        # A one-URL channel is keyed by its name alone (its URL may be fixed or rotated);
        # in a list, each URL is keyed by name and digest, so reordering keeps every key.
        channels[name] = tuple(
            resolver.target(
                url,
                doc,
                locs[i],
                name if len(urls) == 1 else f"{name}:{Target.for_url(url, name).key[4:]}",
                label=name if len(urls) == 1 else _list_label(name, urls, i),
                pace=spec.pace(),
            )
            for i, url in enumerate(urls)
        )
    return channels


@dataclass(frozen=True)
class _Section:
    """The searches one file holds: the main config, or a file it includes."""

    doc: YamlDoc
    specs: list[SearchSpec]

    @functools.cached_property
    def where(self) -> YamlDoc:
        """The file without its data, for naming a line later: a config keeps only this
        (10,000 searches' parsed YAML is megabytes the running daemon never reads)."""
        return YamlDoc(self.doc.source, None, self.doc.lines)


def _resolve_search(
    index: int,
    spec: SearchSpec,
    section: _Section,
    channels: Mapping[str, tuple[Target, ...]],
    resolver: _Resolver,
    owner: str,
) -> SavedSearch:
    doc = section.doc
    targets: list[Target] = []
    for j, entry in enumerate(spec.notify):
        loc: Loc = ("searches", index, "notify", j)
        if "://" in entry:
            found: tuple[Target, ...] = (resolver.target(entry, doc, loc),)
        elif entry in channels:
            found = channels[entry]
        else:
            hint = _suggest(entry, channels) or (
                "; define it under 'channels:' or give an apprise URL"
                if channels
                else "; there is no 'channels:' section — add one, or give an apprise URL"
            )
            raise doc.error(f"unknown channel {entry!r}{hint}", loc)
        targets.extend(t for t in found if t not in targets)
    if not targets:
        targets.append(Target.stdout())
    return SavedSearch(
        name=spec.name,
        q=spec.q,
        category=spec.category,
        language=spec.language,
        country=spec.country,
        pay_type=spec.pay_type,
        targets=tuple(targets),
        notify_existing=spec.notify_existing,
        also=frozenset(spec.also),
        filters=spec.filters(),
        line=doc.lines.get(("searches", index)),
        source=owner,
        file=doc.source,
    )


def _check_unique_names(sections: Iterable[_Section]) -> None:
    """Each search name once across every file; a clash names both places."""
    first: dict[str, tuple[YamlDoc, int]] = {}
    for section in sections:
        doc = section.doc
        for index, spec in enumerate(section.specs):
            loc: Loc = ("searches", index, "name")
            if spec.name not in first:
                first[spec.name] = (doc, index)
                continue
            other, at = first[spec.name]
            if other is doc:
                raise doc.error(
                    f"duplicate search name {spec.name!r}; each search needs its own name", loc
                )
            where = f"{other.source}:{other.line_of(('searches', at, 'name'))}"
            raise doc.error(f"duplicate search name {spec.name!r} (also in {where})", loc)


# -- included files -----------------------------------------------------------


def _read_included(
    path: Path, allowed: frozenset[str], main: YamlDoc, secrets: set[str], missing: Missing
) -> tuple[YamlDoc, dict[str, Any]]:
    """One included file's data, its ``${VAR}``s (only ``allowed`` ones) filled in;
    anything but ``searches:`` is a mistake."""
    doc = read_yaml(path, str(path))
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise ConfigError(
            "an included file is a mapping with one key, 'searches:'", source=doc.source, line=1
        )
    for key in data:
        if key != "searches":
            raise doc.error(
                f"an included file may hold only 'searches:', not {key!r}; "
                f"settings and channels belong in {main.source}",
                (str(key),),
            )
    return doc, substitute(data, (), doc, secrets, missing, allowed)


def _included_section(doc: YamlDoc, data: dict[str, Any]) -> _Section:
    try:
        return _Section(doc, Destinations(**data).searches)
    except ValidationError as exc:
        raise _translate(exc, doc.lines, doc.source) from None


def _read_includes(
    entries: object, base: Path, main: YamlDoc, owner: str, secrets: set[str], missing: Missing
) -> list[tuple[YamlDoc, dict[str, Any]]]:
    if entries is None:
        return []
    itself = Path(owner).resolve()
    return [
        _read_included(path, allowed, main, secrets, missing)
        for path, allowed in find_includes(entries, base, main)
        if path.resolve() != itself  # "*.yaml" beside the main file need not exclude it
    ]


def _zone(name: str | None, source: str, lines: Mapping[Loc, int]) -> tzinfo:
    if not name:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        env_name = _from_environment(("timezone",))
        raise ConfigError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin",
            source=f"environment variable {env_name}" if env_name else source,
            line=None if env_name else line_for(("timezone",), lines),
            field="timezone",
        ) from None


def _check_known_keys(data: dict[str, Any], doc: YamlDoc) -> None:
    for key in data:
        if key not in TOP_KEYS:
            raise doc.error(f"unknown key {key!r}{_suggest(str(key), TOP_KEYS)}", (str(key),))


def _env_error(exc: SettingsError) -> ConfigError:
    match = re.search(r'field "(\w+)"', str(exc))
    key = match.group(1) if match else "?"
    return ConfigError(
        "cannot parse this value; a list setting takes JSON, e.g. [60, 300, 1800]",
        source=f"environment variable {ENV_PREFIX}{key.upper()}",
    )


def parse_config(
    text: str, source: str, owner: str | None = None, base: Path | None = None
) -> Config:
    """Validate YAML ``text`` (named ``source`` in errors) into a Config.

    ``owner`` identifies the file in the state (its resolved path), so that what one
    config file forgets never touches what another wrote to a shared state directory.
    ``include:`` patterns are relative to ``base`` (default: the folder of ``source``).
    A mistake is one ConfigError, in which a value taken from the environment is named
    by its variable (``${SLACK_TOKEN}``), never shown.
    """
    secrets: set[str] = set()
    try:
        return _build_config(text, source, owner, base, secrets)
    except ConfigError as exc:
        raise _without_secrets(exc, secrets) from None
    except RecursionError:  # an alias that contains itself, or thousands of levels
        raise ConfigError(
            "the YAML nests too deep or refers to itself (&anchor … *anchor inside it)",
            source=source,
        ) from None


def _without_secrets(exc: ConfigError, secrets: set[str]) -> ConfigError:
    names = {
        value: f"${{{name}}}"
        for name, value in named_values().items()
        if value in secrets and len(value) >= MIN_SECRET_LENGTH
    }
    message = exc.message
    for value in sorted(names, key=len, reverse=True):
        # As written, and as repr() escapes it; whole, or cut short by the message
        # ('xoxb-1234…'): any 8 or more of its first characters name the variable.
        for shown in dict.fromkeys((value, repr(value)[1:-1], json.dumps(value)[1:-1])):
            for end in range(len(shown), min(len(shown), 8) - 1, -1):
                if shown[:end] in message:
                    message = message.replace(shown[:end], names[value])
                    break
    if message == exc.message:
        return exc
    return ConfigError(message, source=exc.source, line=exc.line, field=exc.field)


def _build_config(
    text: str, source: str, owner: str | None, base: Path | None, secrets: set[str]
) -> Config:
    """``parse_config``'s work; ``secrets`` collects every value taken from the environment."""
    doc = parse_yaml(text, source)
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of settings", source=source, line=1)
    owner = owner or source
    missing: Missing = []
    data = substitute(data, (), doc, secrets, missing)
    _check_known_keys(data, doc)
    base = Path(source).parent if base is None else base
    included = _read_includes(data.get("include"), base, doc, owner, secrets, missing)
    if (unset := missing_error(missing)) is not None:  # every one, in every file, at once
        raise unset
    try:
        settings = AlertdSettings(**{k: v for k, v in data.items() if k in SETTING_KEYS})
        file = Destinations(**{k: v for k, v in data.items() if k in FILE_KEYS})
    except ValidationError as exc:
        raise _translate(exc, doc.lines, source) from None
    except SettingsError as exc:
        raise _env_error(exc) from None
    sections = [_Section(doc, file.searches)]
    sections += [_included_section(at, each) for at, each in included]
    _check_unique_names(sections)
    resolver = _Resolver(secrets)
    with quiet_apprise():  # checking thousands of URLs: silence apprise once, not each time
        channels = _resolve_channels(file, doc, resolver)
        if file.community is not None and file.community.mail is not None:  # masked in logs
            resolver.secrets |= url_secrets(file.community.mail)
            resolver.secrets |= env_secrets_in(file.community.mail, secrets, resolver.secrets)
        if file.community is not None and file.community.invite_code:
            resolver.secrets.add(file.community.invite_code)
        searches: list[SavedSearch] = []
        origins: list[tuple[YamlDoc, int]] = []
        for section in sections:
            for index, spec in enumerate(section.specs):
                searches.append(_resolve_search(index, spec, section, channels, resolver, owner))
                origins.append((section.where, index))
    return Config(
        source=source,
        api_url=settings.api_url,
        state_dir=settings.state_dir.expanduser(),
        poll_interval=settings.poll_interval,
        requests_per_minute=settings.requests_per_minute,
        log_level=settings.log_level,
        log_format=settings.log_format,
        tz=_zone(settings.timezone, source, doc.lines),
        searches=tuple(searches),
        retry_schedule=tuple(settings.retry_schedule),
        refresh_interval=settings.refresh_interval,
        request_timeout=settings.request_timeout,
        send_timeout=settings.send_timeout,
        max_response_mb=settings.max_response_mb,
        broken_state=settings.broken_state,
        metrics_port=settings.metrics_port,
        owner=owner,
        targets=dict(resolver.targets),
        channels=channels,
        secrets=frozenset(s for s in resolver.secrets if s),
        lines=doc.lines,
        origins=tuple(origins),
        community=file.community,
    )


def load_config(path: Path, *, need_secrets: bool = True) -> Config:
    """Read and validate the config file at ``path`` and the files it includes.

    Without ``need_secrets``, a ``${VAR}`` that is not set is left as written and its URL
    is not checked: enough to find the state and name the targets (``alertd status``
    and ``health`` run where the daemon's secrets are not).
    """
    if not need_secrets:
        token = SECRETS_OPTIONAL.set(True)
        try:
            return load_config(path)
        finally:
            SECRETS_OPTIONAL.reset(token)
    source = str(path)
    text = read_text(
        path,
        source,
        missing=f"no such file; `alertd init {path}` writes a commented example there, or "
        "pass --config PATH (without -c, alertd looks for ./alerts.yaml, "
        "$XDG_CONFIG_HOME/alertd/alerts.yaml and /etc/alertd/alerts.yaml)",
    )
    return parse_config(text, source, owner=str(path.resolve()), base=path.parent)
