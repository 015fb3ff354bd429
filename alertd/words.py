"""How numbers and durations read in what alertd says to a person."""

from __future__ import annotations


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 search``, ``3 searches``, ``1,200 searches``."""
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def duration(seconds: float) -> str:
    """``45 s``, ``5 min``, ``1 h 30 min``, ``2 d``: how long, as a person says it."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:g} s" if seconds < 10 and seconds != whole else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")
