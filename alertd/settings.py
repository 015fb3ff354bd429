"""The only place where YAML and ``ALERTD_*`` environment variables become typed config.

Every mistake becomes one ``ConfigError`` naming the file, the line and the field,
with the nearest valid spelling where there is one. ``${VAR}`` in any string is
taken from the environment (a missing variable is an error), and every value taken
that way is remembered as a secret so that it never reaches a log.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from alertd.errors import ConfigError
from alertd.models import PAY_TYPES, SavedSearch, Target
from alertd.targets import RedactingFilter, check_url, redact_url, url_secrets
from alertd.yamlsource import Loc, field_name, line_for, parse_yaml, substitute

DEFAULT_API_URL = "https://app.opentrain.ai/api/public/v1"
ENV_PREFIX = "ALERTD_"
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$"
)

MAX_DURATION = 7 * 24 * 3600.0


def default_state_dir() -> Path:
    """``/data`` in a container (when it exists and is writable), else the XDG state dir."""
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
        match = _DURATION.match(str(value))
        if not match or not any(match.groups()):
            raise ValueError(f"{value!r} is not a duration; use seconds or e.g. 90s, 5m, 1h")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError("must be more than 0 seconds and at most 7 days")
    return seconds


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(parse_duration)]


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


def _check_api_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL; the default is {DEFAULT_API_URL}")
    return value.rstrip("/")


class AlertdSettings(BaseSettings):
    """The top-level settings; each can be overridden by ``ALERTD_<KEY>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    api_url: Annotated[str, AfterValidator(_check_api_url)] = DEFAULT_API_URL
    state_dir: Path = Field(default_factory=default_state_dir)
    poll_interval: Duration = 300.0
    requests_per_minute: int = Field(default=60, ge=1, le=120)
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = (
        "INFO"
    )
    timezone: str | None = None
    retry_schedule: list[Duration] = Field(
        default_factory=lambda: [60.0, 300.0, 1800.0, 3600.0], min_length=1
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
        # The environment wins over the file: a container overrides what the image ships.
        return (env_settings, init_settings)


class Destinations(BaseModel):
    """What only the file can say: named channels and saved searches."""

    model_config = ConfigDict(extra="forbid")

    channels: dict[str, Annotated[list[str], BeforeValidator(_as_list)]] = Field(
        default_factory=dict
    )
    searches: list[SearchSpec] = Field(default_factory=list)


SETTING_KEYS = tuple(AlertdSettings.model_fields)
FILE_KEYS = tuple(Destinations.model_fields)
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
    retry_schedule: tuple[float, ...] = (60.0, 300.0, 1800.0, 3600.0)
    targets: dict[str, Target] = field(default_factory=dict)
    channels: dict[str, tuple[Target, ...]] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()
    lines: Mapping[Loc, int] = field(default_factory=dict, repr=False, compare=False)

    def line_of(self, *loc: str | int) -> int | None:
        """The YAML line of a field, e.g. ``line_of("searches", 0, "category")``."""
        return line_for(tuple(loc), self.lines)

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

    def __init__(
        self, source: str, lines: Mapping[Loc, int], env_secrets: set[str], owner: str
    ) -> None:
        self.source = source
        self.owner = owner
        self.lines = lines
        self.by_url: dict[str, Target] = {}
        self.secrets: set[str] = set()
        self.mask = RedactingFilter(env_secrets)

    def target(
        self, url: str, loc: Loc, channel: str | None = None, label: str | None = None
    ) -> Target:
        problem = check_url(url)
        if problem:
            raise ConfigError(
                problem, source=self.source, line=line_for(loc, self.lines), field=field_name(loc)
            )
        if url not in self.by_url:
            self.secrets |= url_secrets(url)
            if channel is None:
                label = self.mask.redact(redact_url(url))
                self.by_url[url] = Target.for_url(url, label)
            else:
                self.by_url[url] = Target(key=f"channel:{channel}", label=label or channel, url=url)
        return self.by_url[url]

    @property
    def targets(self) -> dict[str, Target]:
        """Every distinct target, by key."""
        return {t.key: t for t in self.by_url.values()}


def _resolve_channels(file: Destinations, resolver: _Resolver) -> dict[str, tuple[Target, ...]]:
    channels: dict[str, tuple[Target, ...]] = {}
    for name, urls in file.channels.items():
        if not urls:
            raise ConfigError(
                "a channel needs at least one apprise URL",
                source=resolver.owner,
                line=line_for(("channels", name), resolver.lines),
                field=f"channels.{name}",
            )
        # A one-URL channel is keyed by its name alone (its URL may be fixed or rotated);
        # in a list, each URL is keyed by name and digest, so reordering keeps every key.
        channels[name] = tuple(
            resolver.target(
                url,
                ("channels", name, i),
                name if len(urls) == 1 else f"{name}:{Target.for_url(url, name).key[4:]}",
                label=name if len(urls) == 1 else f"{name}[{i}]",
            )
            for i, url in enumerate(urls)
        )
    return channels


def _resolve_search(
    index: int,
    spec: SearchSpec,
    channels: Mapping[str, tuple[Target, ...]],
    resolver: _Resolver,
) -> SavedSearch:
    targets: list[Target] = []
    for j, entry in enumerate(spec.notify):
        loc: Loc = ("searches", index, "notify", j)
        if "://" in entry:
            found: tuple[Target, ...] = (resolver.target(entry, loc),)
        elif entry in channels:
            found = channels[entry]
        else:
            hint = _suggest(entry, channels) or (
                "; define it under 'channels:' or give an apprise URL"
                if channels
                else "; there is no 'channels:' section — add one, or give an apprise URL"
            )
            raise ConfigError(
                f"unknown channel {entry!r}{hint}",
                source=resolver.owner,
                line=line_for(loc, resolver.lines),
                field=field_name(loc),
            )
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
        line=resolver.lines.get(("searches", index)),
        source=resolver.owner,
    )


def _check_unique_names(specs: list[SearchSpec], source: str, lines: Mapping[Loc, int]) -> None:
    names: set[str] = set()
    for index, spec in enumerate(specs):
        if spec.name in names:
            loc: Loc = ("searches", index, "name")
            raise ConfigError(
                f"duplicate search name {spec.name!r}; each search needs its own name",
                source=source,
                line=line_for(loc, lines),
                field=field_name(loc),
            )
        names.add(spec.name)


def local_zone() -> tzinfo:
    """The machine's time zone, as a named zone when it can be found (DST-aware)."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    link = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in link:
        candidates.append(link.split("zoneinfo/", 1)[1])
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return datetime.now().astimezone().tzinfo or ZoneInfo("UTC")


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


def _check_known_keys(data: dict[str, Any], source: str, lines: Mapping[Loc, int]) -> None:
    for key in data:
        if key not in SETTING_KEYS + FILE_KEYS:
            raise ConfigError(
                f"unknown key {key!r}{_suggest(str(key), SETTING_KEYS + FILE_KEYS)}",
                source=source,
                line=line_for((str(key),), lines),
                field=str(key),
            )


def _env_error(exc: SettingsError) -> ConfigError:
    match = re.search(r'field "(\w+)"', str(exc))
    key = match.group(1) if match else "?"
    return ConfigError(
        "cannot parse this value; a list setting takes JSON, e.g. [60, 300, 1800]",
        source=f"environment variable {ENV_PREFIX}{key.upper()}",
    )


def parse_config(text: str, source: str, owner: str | None = None) -> Config:
    """Validate YAML ``text`` (named ``source`` in errors) into a Config.

    ``owner`` identifies the file in the state (its resolved path), so that what one
    config file forgets never touches what another wrote to a shared state directory.
    """
    doc = parse_yaml(text, source)
    data, lines = doc.data, doc.lines
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of settings", source=source, line=1)
    secrets: set[str] = set()
    data = substitute(data, (), doc, secrets)
    _check_known_keys(data, source, lines)
    try:
        settings = AlertdSettings(**{k: v for k, v in data.items() if k in SETTING_KEYS})
        file = Destinations(**{k: v for k, v in data.items() if k in FILE_KEYS})
    except ValidationError as exc:
        raise _translate(exc, lines, source) from None
    except SettingsError as exc:
        raise _env_error(exc) from None
    _check_unique_names(file.searches, source, lines)
    resolver = _Resolver(source, lines, secrets, owner or source)
    channels = _resolve_channels(file, resolver)
    searches = tuple(
        _resolve_search(i, spec, channels, resolver) for i, spec in enumerate(file.searches)
    )
    return Config(
        source=source,
        api_url=settings.api_url,
        state_dir=settings.state_dir.expanduser(),
        poll_interval=settings.poll_interval,
        requests_per_minute=settings.requests_per_minute,
        log_level=settings.log_level,
        tz=_zone(settings.timezone, source, lines),
        searches=searches,
        retry_schedule=tuple(settings.retry_schedule),
        targets=dict(resolver.targets),
        channels=channels,
        secrets=frozenset(s for s in secrets | resolver.secrets if s),
        lines=lines,
    )


def load_config(path: Path) -> Config:
    """Read and validate the config file at ``path``."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "no such file; copy alerts.example.yaml there, or pass --config PATH",
            source=source,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", source=source) from None
    return parse_config(text, source, owner=str(path.resolve()))
