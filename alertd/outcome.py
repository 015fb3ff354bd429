"""What a target did with one message: the one answer every way of sending gives."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """What a target did with one message. ``permanent`` failures will not fix themselves;
    ``unknown`` ones ran out of time after the message went out, so the target may have
    it: they are retried, but later than a plain failure."""

    accepted: bool
    error: str | None = None
    permanent: bool = False
    unknown: bool = False
    retry_after: float | None = None  # the service asked to wait this long (a 429)
    # The service refused this message for what it holds (400, 413, 422): the target's
    # next message may go; this one is retried on the schedule like any failure.
    refused_message: bool = False
    # The message never left: alertd was stopping while it waited its turn (a chat's
    # pacing). It is owed again as it was, due at once, and no attempt is counted.
    unsent: bool = False
