"""Time zones: the one ``timezone:`` names, the machine's, and whether ``TZ`` is usable.

``TZ`` is read by the C library when the process starts, before alertd can say a word:
a value Python cannot represent (``UTC+24``: an offset of a whole day) breaks the first
``datetime.now().astimezone()``, which apprise calls when it is imported. So the
``alertd`` command asks ``tz_problem()`` first, importing nothing else, and says in
one line what to do. Only the standard library here, for that reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY = 24 * 3600

# POSIX TZ (man 3 tzset): std offset [dst [offset] [,start[/time],end[/time]]]
_NAME = r"(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>)"
_OFFSET = r"([+-]?\d{1,3}(?::\d{1,2}(?::\d{1,2})?)?)"
_RULE = r",(?:J\d{1,3}|\d{1,3}|M\d{1,2}\.\d\.\d)(?:/[+-]?\d{1,3}(?::\d{1,2}(?::\d{1,2})?)?)?"
_POSIX_TZ = re.compile(rf"{_NAME}{_OFFSET}(?:{_NAME}{_OFFSET}?(?:{_RULE}{_RULE})?)?")

ZONE_HINT = "an IANA name such as Europe/Berlin or UTC"


def _seconds(offset: str) -> int:
    sign = -1 if offset.startswith("-") else 1
    parts = [int(p) for p in offset.lstrip("+-").split(":")]
    return sign * sum(p * unit for p, unit in zip(parts, (3600, 60, 1), strict=False))


def _posix_problem(value: str) -> str | None:
    """Why the POSIX TZ string ``value`` cannot be used; None when it can."""
    match = _POSIX_TZ.fullmatch(value)
    if match is None:
        return "it is neither a zone name nor a POSIX TZ string"
    std = _seconds(match[1])
    dst = std - 3600 if match[2] is None else _seconds(match[2])
    if max(abs(std), abs(dst)) >= DAY:
        return "its offset from UTC is a day or more"
    return None


def _file_problem(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return None if file.read(4) == b"TZif" else "that file is not a time zone file"
    except OSError as exc:
        return f"cannot read that file ({exc.strerror})"


def tz_problem(environ: dict[str, str] | None = None) -> str | None:
    """One line on why the ``TZ`` environment variable cannot be used, and what to do;
    None when it is unset, empty, or usable."""
    value = (os.environ if environ is None else environ).get("TZ", "")
    name = value.removeprefix(":")
    if not name:
        return None
    if name.startswith("/"):
        why = _file_problem(name)
    else:
        try:
            ZoneInfo(name)
            why = None
        except (ZoneInfoNotFoundError, ValueError):
            why = _posix_problem(name)
    if why is None and environ is None:
        try:  # what the C library made of it, as apprise and logging will ask
            time.tzset()
            datetime.now().astimezone()
        except (ValueError, OverflowError):
            why = "its offset from UTC is a day or more"
    if why is None:
        return None
    shown = value if value.isprintable() and len(value) <= 60 else repr(value[:60])
    return (
        f"environment variable TZ={shown} is not a usable time zone: {why}; "
        f"set TZ to {ZONE_HINT}, or unset it to use the machine's zone"
    )


def named_zone(name: str) -> tzinfo:
    """The zone called ``name``; ValueError saying what to write instead."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use {ZONE_HINT}") from None


# TZ as the daemon found it, before it set TZ=UTC for its own clock (daemon.use_utc).
_MACHINE_TZ: dict[str, str] = {}


def keep_machine_zone() -> None:
    """Remember TZ as it is now, for ``local_zone`` after the daemon sets it to UTC: a
    config read again at SIGHUP then shows times in the same zone as at the start."""
    _MACHINE_TZ.setdefault("TZ", os.environ.get("TZ", ""))


def local_zone() -> tzinfo:
    """The machine's time zone: the one TZ names (a zone name, a zone file, or a POSIX
    string's standard offset), else /etc/localtime's, as a named zone when it has one
    (DST-aware)."""
    name = _MACHINE_TZ.get("TZ", os.environ.get("TZ", "")).removeprefix(":")
    if name:
        return _zone_of(name)
    link = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in link:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(link.split("zoneinfo/", 1)[1])
    try:
        return datetime.now().astimezone().tzinfo or UTC
    except ValueError:  # a TZ of a day or more; the command said so at start
        return UTC


def _zone_of(name: str) -> tzinfo:
    """The zone a usable TZ value names; UTC for one ``tz_problem`` refuses."""
    if name.startswith("/"):
        try:
            with open(name, "rb") as file:
                return ZoneInfo.from_file(file, key=name)
        except (OSError, ValueError):
            return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    match = _POSIX_TZ.fullmatch(name)
    if match is None or _posix_problem(name):
        return UTC
    std = name[: match.start(1)].strip("<>")
    return timezone(timedelta(seconds=-_seconds(match[1])), std)  # POSIX counts westward
