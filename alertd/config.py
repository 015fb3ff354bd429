"""The only place where YAML and ``ALERTD_*`` environment variables become a ``Config``.

The schema (what may be written) is ``alertd.settings``; this module reads the main file
and its includes, resolves each search's channels into targets, and turns every mistake
into one ``ConfigError`` naming the file, the line and the field, with the nearest
valid spelling where there is one. ``${VAR}`` in any string of the main file is taken
from the environment (or a systemd credential); an included file may use only the
names its ``include:`` entry lists. Every missing variable is named in one error, and
every value taken that way is remembered as a secret so that it never reaches a log.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    ValidationError,
)
from pydantic_settings import (
    SettingsError,
)

from alertd.community.config import COMMUNITY_KEYS, TELEGRAM_KEYS, CommunitySpec
from alertd.errors import ConfigError
from alertd.models import PAY_TYPES, Pace, SavedSearch, Target
from alertd.render import Channel, channel_for
from alertd.settings import (
    ENV_PREFIX,
    FILE_KEYS,
    SEARCH_KEYS,
    SETTING_KEYS,
    TOP_KEYS,
    AlertdSettings,
    Destinations,
    SearchSpec,
)
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
        known = TELEGRAM_KEYS if loc[:2] == ("community", "telegram") else known
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
        roles: tuple[str, ...] = (),
    ) -> Target:
        """The target for ``url``, written at ``loc`` in ``doc``; ConfigError if apprise can't.
        ``roles`` are the Discord roles its channel pings (only a channel's URL has any)."""
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
                    key=f"channel:{channel}",
                    label=label or channel,
                    url=url,
                    pace=pace or Pace(),
                    mention_roles=roles,
                )
        elif channel is not None and pace is not None:
            self._check_same(self.by_url[url], pace, roles, doc, loc)
        return self.by_url[url]

    @staticmethod
    def _check_same(
        first: Target, pace: Pace, roles: tuple[str, ...], doc: YamlDoc, loc: Loc
    ) -> None:
        """A URL in two channels is one target: both must want it sent alike."""
        differs = None
        if first.pace != pace:
            differs = "pace"
        elif first.mention_roles != roles:
            differs = "mention_roles"
        if differs is not None:
            raise doc.error(
                f"the same URL as channel {first.label!r} with another {differs}; one URL is "
                f"one target with one {differs}: give it one channel (or both the same {differs})",
                loc,
            )

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
                roles=tuple(spec.mention_roles) if channel_for(url) is Channel.DISCORD else (),
            )
            for i, url in enumerate(urls)
        )
        _check_roles_reach_discord(name, urls, spec.mention_roles, doc)
    return channels


def _check_roles_reach_discord(name: str, urls: list[str], roles: list[str], doc: YamlDoc) -> None:
    """``mention_roles`` on a channel without a Discord URL would ping no one: a mistake.
    An unset ``${VAR}`` (status and health need no secrets) may well be a Discord URL."""
    if SECRETS_OPTIONAL.get() and any("${" in url for url in urls):
        return
    if roles and all(channel_for(url) is not Channel.DISCORD for url in urls):
        raise doc.error(
            "only a Discord channel can ping roles; this channel has no discord:// URL",
            ("channels", name, "mention_roles"),
        )


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
        feed=spec.feed,
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
        if file.community is not None and file.community.telegram is not None:
            resolver.secrets.add(file.community.telegram.token)  # the bot's: never logged
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
    with collector_paused():
        return parse_config(text, source, owner=str(path.resolve()), base=path.parent)


def settle_heap() -> None:
    """Collect once, then leave what is alive now (the config, the loaded state, the
    imported modules) out of the cycle collector's passes (``gc.freeze``): with 10,000
    searches a full pass over them cost about 0.2 s, and a busy cycle made two or three
    (0.65 s of its CPU in the bench). Reference counting still frees what is dropped
    later; only a reference cycle among these objects would stay. Called once the
    daemon (or ``once``) has its config and state, and again after a reload."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a config is built: 10,000 searches make
    hundreds of thousands of objects, none of them garbage, and its full passes over
    them were a quarter of ``alertd validate``'s time. Reference counting still frees
    what is dropped; a collector that was off stays off."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
