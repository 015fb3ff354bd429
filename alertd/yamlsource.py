"""YAML files as data that remembers where each value was written, with ``${VAR}`` filled in.

``${VAR}`` comes from the environment or, when the variable is unset, from the systemd
credential of that name (alertd.service loads /etc/alertd/credentials/VAR).

This is the only module that imports yaml. A file becomes a ``YamlDoc``: its data,
and the line of every key and list item, so that any later mistake can name the
file and the line. Every file is bounded (``MAX_FILE_BYTES``, and how far its aliases
may expand) before its data is built. ``include:`` entries become the files they match
here too, each with the ``${VAR}`` names the main file lets it use.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alertd.errors import ConfigError

Loc = tuple[str | int, ...]
CREDENTIAL_PREFIX = "alertd_"  # LoadCredential=alertd:/etc/alertd/credentials names them so
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class YamlDoc:
    """One parsed file: ``data`` as YAML gave it, named ``source`` in errors."""

    source: str
    data: Any
    lines: Mapping[Loc, int] = field(default_factory=dict, repr=False)

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of the nearest enclosing key or item that has one."""
        return line_for(loc, self.lines)

    def error(self, message: str, loc: Loc) -> ConfigError:
        """A ConfigError at ``loc`` in this file."""
        return ConfigError(
            message, source=self.source, line=self.line_of(loc), field=field_name(loc) or None
        )


def field_name(loc: Loc) -> str:
    """``searches[0].notify[1]`` for ``("searches", 0, "notify", 1)``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def line_for(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    """The line of ``loc``, or of the nearest enclosing key or item that has one."""
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


# libyaml's loader when PyYAML was built with it: the pure-Python composer takes seconds
# on a config of 10,000 searches. Both give the same nodes, marks and errors.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# What one file may cost, whoever wrote it (an included file may be a member's): its
# size, and how far its aliases may repeat what it holds (``MAX_EXPANSION`` below).
MAX_FILE_BYTES = 8 * 1024 * 1024


def _too_large(source: str) -> ConfigError:
    return ConfigError(
        f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB, more than a config "
        "needs; split its searches over files with include:",
        source=source,
    )


_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_STR = "tag:yaml.org,2002:str"
_MERGE = "<<"


@dataclass
class _Open:
    """A mapping or sequence being built from the parser's events."""

    value: dict[Any, Any] | list[Any]
    loc: Loc
    anchor: str | None
    key: Any = None  # a mapping's key waiting for its value (``_NO_KEY`` when none)
    key_text: str = ""
    merging: bool = False  # the waiting key is ``<<``
    merges: list[Any] = field(default_factory=list)  # ``<<`` values, merged at the end
    raw_keys: set[str] = field(default_factory=set)
    size: int = 1  # values it holds once every alias in it is copied out


_NO_KEY = object()
_CAP = 1 << 62  # sizes stop growing here: an alias bomb's would have hundreds of digits
# How far aliases (``*name``) may repeat what a file holds: an alias is one shared value
# here, but what walks the data after (``${VAR}``, validation) copies it out, so a few
# hundred bytes of nested aliases ("billion laughs") would become billions of values.
MAX_EXPANSION = 4  # the values aliases may add, as a multiple of the file's own...
MIN_EXPANDED_VALUES = 100_000  # ...or this many in all, whichever is more


@functools.lru_cache(maxsize=4096)
def _implicit_tag(value: str, implicit: tuple[bool, bool]) -> str:
    """The tag a plain scalar resolves to: a function of its text alone for the safe
    loader (it has no path resolvers), and a config repeats its keys 10,000 times."""
    return str(_LOADER.resolve(_LOADER, yaml.ScalarNode, value, implicit))


def _scalar(loader: Any, event: Any) -> Any:
    """A scalar event's value, as the safe loader constructs it."""
    tag = event.tag
    if tag is None or tag == "!":
        tag = _implicit_tag(event.value, event.implicit)
    if tag == _STR:
        return event.value
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    constructor = loader.yaml_constructors.get(tag, loader.yaml_constructors.get(None))
    return constructor(loader, node)


def _merge(mapping: dict[Any, Any], merges: list[Any], mark: Any) -> None:
    """Apply ``<<: *base`` (or ``<<: [*a, *b]``) to ``mapping`` in place, as PyYAML's safe
    loader does: its own keys win, then the first merged mapping; merged keys come first."""
    merged: dict[Any, Any] = {}
    for value in merges:
        sources = list(reversed(value)) if isinstance(value, list) else [value]
        for source in sources:
            if not isinstance(source, dict):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    mark,
                    "expected a mapping or list of mappings for merging",
                    mark,
                )
            merged.update(source)
    own = dict(mapping)
    mapping.clear()
    mapping.update(merged)
    mapping.update(own)


def _build(loader: Any, source: str) -> tuple[Any, dict[Loc, int]]:
    """The document's data and the line of every key and item, from the parser's events.

    No node tree: at 10,000 searches PyYAML's nodes (and their marks) held 44 MiB at
    once, before the data was built from them. An alias is the value it names, shared
    (as PyYAML shares it) and indexed where it was defined.
    """
    lines: dict[Loc, int] = {}
    anchors: dict[str, tuple[Any, int, int]] = {}  # anchor: (value, line, size)
    own = 0  # values written in the file
    first_over: int | None = None
    size = 0  # values once aliases are copied out (what later walks of the data see)
    building: set[str] = set()  # anchors of values not finished yet
    stack: list[_Open] = []
    result: Any = None
    loader.get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return None, lines
    loader.get_event()  # document start

    def place(value: Any, line: int, count: int) -> None:
        nonlocal result, size
        if not stack:
            lines.setdefault((), line)
            result, size = value, count
            return
        top = stack[-1]
        top.size = min(top.size + count, _CAP)
        if isinstance(top.value, list):
            lines.setdefault((*top.loc, len(top.value)), line)
            top.value.append(value)
            return
        if top.merging:
            top.merges.append(value)
        else:
            top.value[top.key] = value
        top.key, top.merging = _NO_KEY, False

    def child_loc() -> Loc:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.value, list):
            return (*top.loc, len(top.value))
        return (*top.loc, top.key_text)

    def wants_key() -> bool:
        return bool(stack) and isinstance(stack[-1].value, dict) and stack[-1].key is _NO_KEY

    while not loader.check_event(yaml.DocumentEndEvent):
        event: Any = loader.get_event()
        mark: Any = event.start_mark
        line = mark.line + 1
        if isinstance(event, yaml.ScalarEvent) and wants_key():
            top = stack[-1]
            text = str(event.value)
            if text in top.raw_keys:
                raise ConfigError(
                    "this key appears twice in the same mapping",
                    source=source,
                    line=line,
                    field=field_name((*top.loc, text)),
                )
            top.raw_keys.add(text)
            own += 1
            top.size += 1
            top.merging = text == _MERGE and event.implicit[0]
            top.key = _MERGE if top.merging else _scalar(loader, event)
            top.key_text = text
            lines[(*top.loc, text)] = line
            if event.anchor is not None:
                anchors[event.anchor] = (top.key, line, 1)
        elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
            if isinstance(event, yaml.AliasEvent):
                if event.anchor in building:
                    raise ConfigError(
                        "an alias (*name) inside the value it names (&name) repeats "
                        "forever; write the value out",
                        source=source,
                        line=anchors[event.anchor][1],
                    )
                if event.anchor not in anchors:
                    raise yaml.composer.ComposerError(None, None, "found undefined alias", mark)
                value, line, count = anchors[event.anchor]
            else:
                value, count = _scalar(loader, event), 1
                own += 1
                if event.anchor is not None:
                    anchors[event.anchor] = (value, line, 1)
            if wants_key():  # an alias as a key
                top = stack[-1]
                try:
                    hash(value)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        None,
                        "found unhashable key",
                        mark,
                    ) from None
                top.key, top.key_text = value, str(value)
                top.size = min(top.size + count, _CAP)
                lines[(*top.loc, top.key_text)] = line
            else:
                place(value, line, count)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            if wants_key():
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", None, "found unhashable key", mark
                )
            mapping = isinstance(event, yaml.MappingStartEvent)
            tag = event.tag if event.tag not in (None, "!") else (_MAP if mapping else _SEQ)
            if tag != (_MAP if mapping else _SEQ):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the tag {tag} is not one alertd reads (a plain mapping or list)",
                    mark,
                )
            loc = child_loc()
            if stack and isinstance(stack[-1].value, list):
                lines.setdefault(loc, line)
            elif not stack:
                lines.setdefault((), line)
            opened = _Open({} if mapping else [], loc, event.anchor, key=_NO_KEY)
            own += 1
            if event.anchor is not None:
                building.add(event.anchor)
                anchors[event.anchor] = (opened.value, line, 1)
            stack.append(opened)
        else:  # the end of a mapping or a sequence
            done = stack.pop()
            if isinstance(done.value, dict) and done.merges:
                _merge(done.value, done.merges, mark)
                merged_at = lines.get((*done.loc, _MERGE), 0)
                for key in done.value:
                    lines.setdefault((*done.loc, str(key)), merged_at)
            if first_over is None and done.size > MIN_EXPANDED_VALUES:
                first_over = lines.get(done.loc)  # the smallest part over: where to look
            if done.anchor is not None:
                building.discard(done.anchor)
                value, line, _ = anchors[done.anchor]
                anchors[done.anchor] = (value, line, done.size)
            place(done.value, lines.get(done.loc, 0), done.size)
    loader.get_event()  # document end
    limit = max(MIN_EXPANDED_VALUES, own * (1 + MAX_EXPANSION))
    if size > limit:
        raise ConfigError(
            f"aliases (*name) expand this file's {own:,} values to more than {limit:,}; "
            "write the repeated values out, or repeat less",
            source=source,
            line=first_over,
        )
    if not loader.check_event(yaml.StreamEndEvent):
        event = loader.get_event()
        raise yaml.composer.ComposerError(
            "expected a single document in the stream",
            None,
            "but found another document",
            event.start_mark,
        )
    return result, lines


def parse_yaml(text: str, source: str) -> YamlDoc:
    """Parse ``text`` once, from the parser's events: its data and the line of each part."""
    if len(text) > MAX_FILE_BYTES:  # characters: never fewer than the bytes they came from
        raise _too_large(source)
    loader = _LOADER(text)
    try:
        data, lines = _build(loader, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"YAML syntax error: {problem}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", source=source) from None
    except (ValueError, TypeError) as exc:  # an explicit tag on a value it cannot take: !!int x
        raise ConfigError(f"YAML error: {exc}", source=source) from None
    finally:
        loader.dispose()
    return YamlDoc(source, data, lines)


def read_text(path: Path, source: str, missing: str = "no such file") -> str:
    """The text of the YAML file at ``path``, at most ``MAX_FILE_BYTES`` of it read;
    ``missing`` says what to do when it is not there."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(missing, source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc}", source=source) from None
    if len(raw) > MAX_FILE_BYTES:
        raise _too_large(source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read the file: {exc}", source=source) from None


def read_yaml(path: Path, source: str, missing: str = "no such file") -> YamlDoc:
    """Read and parse the file at ``path``; ``missing`` says what to do when it is not there."""
    return parse_yaml(read_text(path, source, missing), source)


# Set while a config is read for a command that needs no secrets (``status``, ``health``,
# ``facets``): a ``${VAR}`` that is not set stays as written instead of being an error.
SECRETS_OPTIONAL: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "secrets_optional", default=False
)


Missing = list[tuple[str, YamlDoc, Loc]]  # each ${VAR} without a value, and where


def substitute(
    value: Any,
    loc: Loc,
    doc: YamlDoc,
    secrets: set[str],
    missing: Missing,
    allowed: frozenset[str] | None = None,
) -> Any:
    """``value`` with every ``${VAR}`` replaced by ``lookup``; each value is a secret.

    Only the names in ``allowed`` may be used (None: any, as in the main file); another
    is a ConfigError that names it, never its value. A ``${VAR}`` with no value is added
    to ``missing`` and left as written, so that one error can name them all
    (``missing_error``).
    """
    if isinstance(value, dict):
        return {
            k: substitute(v, (*loc, str(k)), doc, secrets, missing, allowed)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            substitute(v, (*loc, i), doc, secrets, missing, allowed) for i, v in enumerate(value)
        ]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if allowed is not None and name not in allowed:
            raise doc.error(not_allowed(name, allowed), loc)
        try:
            found = lookup(name)
        except ConfigError as exc:
            raise doc.error(exc.message, loc) from None
        if found is None:
            if not SECRETS_OPTIONAL.get():
                missing.append((name, doc, loc))
            return match.group(0)
        secrets.add(found)
        secrets.add(found.strip())  # printed without the line breaks it may end in
        return found

    return _ENV_REF.sub(replace, value)


def not_allowed(name: str, allowed: frozenset[str]) -> str:
    """Why an included file may not use ``${NAME}``, and who can allow it."""
    may = ", ".join(sorted(allowed)) if allowed else "none"
    return (
        f"${{{name}}} is not allowed in this included file (allowed: {may}); the main "
        f"config file allows it in its include: entry, e.g. "
        f"- {{files: members/*.yaml, variables: [{name}]}}"
    )


def _places(lines: list[str], others: list[str]) -> str:
    """``lines 7, 8, members/bob.yaml:3``"""
    shown = [f"{'line' if len(lines) == 1 else 'lines'} {', '.join(lines)}"] if lines else []
    return ", ".join(shown + others)


def missing_error(missing: Missing) -> ConfigError | None:
    """One error naming every ``${VAR}`` in ``missing`` with where each is used; None
    when there is none. One variable gets the longer advice of ``missing_reference``."""
    if not missing:
        return None
    name, doc, loc = missing[0]
    here: dict[str, list[str]] = {}  # lines in the first one's file, by name
    elsewhere: dict[str, list[str]] = {}  # file:line in others
    for each, at, where in missing:
        same = at.source == doc.source
        shown = f"{at.line_of(where)}" if same else f"{at.source}:{at.line_of(where)}"
        here.setdefault(each, [])
        places = (here if same else elsewhere).setdefault(each, [])
        if shown not in places:
            places.append(shown)
    if len(here) == 1:
        return doc.error(missing_reference(name), loc)
    listed = ", ".join(
        f"${{{each}}} ({_places(lines, elsewhere.get(each, []))})" for each, lines in here.items()
    )
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        state = "are neither environment variables nor credentials"
        todo = (
            "put each in the file of its name in the folder the unit's LoadCredential= "
            "loads (/etc/alertd/credentials), or set the variables"
        )
    else:
        state = "are not set"
        todo = "export them, or put them in the service's environment file or credentials"
    return ConfigError(
        f"{len(here)} variables {state}: {listed}; {todo}",
        source=doc.source,
        line=doc.line_of(loc),
    )


def lookup(name: str) -> str | None:
    """``${NAME}``: the environment variable, else the systemd credential (the file that
    ``LoadCredential=`` put in ``$CREDENTIALS_DIRECTORY``: ``NAME``, or ``alertd_NAME``
    when the unit loads a whole folder as ``alertd``), one trailing newline dropped;
    None when there is neither. ConfigError when the credential cannot be read."""
    if name in os.environ:
        return os.environ[name]
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    for path in (Path(folder) / name, Path(folder) / f"{CREDENTIAL_PREFIX}{name}"):
        try:  # safe as a path: NAME matched [A-Za-z_][A-Za-z0-9_]*
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read credential {name} ({path}): {reason}") from None
        return text.removesuffix("\n").removesuffix("\r")
    return None


def missing_reference(name: str) -> str:
    """Why ``${NAME}`` has no value, and where to give it one."""
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        return (
            f"${{{name}}} is neither an environment variable nor a credential; put it in "
            f"the file {name} in the folder the unit's LoadCredential= loads "
            "(/etc/alertd/credentials), or set the variable"
        )
    return (
        f"environment variable {name} is not set (referenced as ${{{name}}}); "
        "export it, or put it in the service's environment file or credentials"
    )


def named_values() -> dict[str, str]:
    """Every value ``${NAME}`` can take, by NAME: the credentials, then the environment,
    which wins as in ``lookup``; for naming a secret in a message instead of showing it."""
    found: dict[str, str] = {}
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if folder and os.path.isdir(folder):
        for entry in os.scandir(folder):
            name = entry.name.removeprefix(CREDENTIAL_PREFIX)
            if not _ENV_REF.fullmatch(f"${{{name}}}"):
                continue
            with contextlib.suppress(ConfigError):  # unreadable: it is in no message either
                if value := lookup(name):
                    found[name] = value
    return found | dict(os.environ)


INCLUDE_KEYS = ("files", "variables")
Include = tuple[Path, frozenset[str]]  # a file, and the ${VAR}s it may use


def find_includes(entries: object, base: Path, doc: YamlDoc) -> list[Include]:
    """The files ``include:`` names, each with the ``${VAR}`` names it may use.

    An entry is a glob pattern (its files may use no ``${VAR}``), or a mapping
    ``{files: PATTERN(S), variables: [NAME, ...]}`` whose files may use those names.
    Each pattern's matches come in sorted order, each file once (a file two entries
    match may use the names of both). Relative patterns are relative to ``base`` (the
    main file's folder). A pattern that matches nothing is fine: a folder of
    per-person files may be empty.
    """
    if isinstance(entries, str | dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise doc.error("a glob pattern or a list of them, e.g. [members/*.yaml]", ("include",))
    found: dict[Path, frozenset[str]] = {}
    for index, entry in enumerate(entries):
        patterns, allowed = _include_entry(entry, ("include", index), doc)
        for pattern in patterns:
            matches = glob.glob(str(base / pattern), recursive=True)
            for path in (Path(m) for m in sorted(matches)):
                found[path] = found.get(path, frozenset()) | allowed
    return [(path, allowed) for path, allowed in found.items() if path.is_file()]


def _include_entry(entry: object, loc: Loc, doc: YamlDoc) -> tuple[list[str], frozenset[str]]:
    """The patterns and the allowed names of one ``include:`` entry."""
    if not isinstance(entry, dict):
        return [_pattern(entry, loc, doc)], frozenset()
    for key in entry:
        if key not in INCLUDE_KEYS:
            hint = difflib.get_close_matches(str(key), INCLUDE_KEYS, n=1)
            hint_text = f" — did you mean {hint[0]!r}?" if hint else ""
            raise doc.error(
                f"unknown key {key!r}{hint_text}; an include: entry has files: and variables:",
                (*loc, str(key)),
            )
    if "files" not in entry:
        raise doc.error("give the files as files: PATTERN, e.g. files: team/*.yaml", loc)
    files = entry["files"] if isinstance(entry["files"], list) else [entry["files"]]
    patterns = [_pattern(p, (*loc, "files", i), doc) for i, p in enumerate(files)]
    names = entry.get("variables") or []
    names = names if isinstance(names, list) else [names]
    for i, name in enumerate(names):
        if not isinstance(name, str) or not _ENV_REF.fullmatch(f"${{{name}}}"):
            raise doc.error(
                f"{name!r} is not a variable name; write the names without ${{ }}, "
                "e.g. variables: [TEAM_SLACK_TOKEN]",
                (*loc, "variables", i),
            )
    return patterns, frozenset(names)


def _pattern(pattern: object, loc: Loc, doc: YamlDoc) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise doc.error("a glob pattern (a string), e.g. members/*.yaml", loc)
    return pattern
