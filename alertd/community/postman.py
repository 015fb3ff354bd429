"""One thread that sends the page's mails, so that a page never waits for a mail server.

The page answers the same, at the same speed, whether a mail goes out or not: "lost your
link?" must not tell by its timing whether an address is a member's. The queue is
bounded: past ``MAX_QUEUED`` a mail is dropped with one WARNING line (a flood of forms
cannot grow memory, and the rate limits already stop a flood long before).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_QUEUED = 100
Send = Callable[[str | None, str, str, str], bool]  # (operator URL, to, subject, body)


@dataclass(frozen=True)
class _Mail:
    to: str
    subject: str
    body: str


class Postman:
    """Sends queued mails through ``send`` on its own thread until ``close``."""

    def __init__(self, operator_url: str | None, send: Send) -> None:
        self.operator_url = operator_url
        self.send = send
        self._queue: queue.Queue[_Mail | None] = queue.Queue(MAX_QUEUED)
        self._thread = threading.Thread(target=self._run, name="community-mail", daemon=True)
        self._thread.start()

    def post(self, to: str, subject: str, body: str) -> None:
        """Queue one mail; never blocks."""
        try:
            self._queue.put_nowait(_Mail(to, subject, body))
        except queue.Full:
            log.warning("community: %d mails are waiting; one more was dropped", MAX_QUEUED)

    def _run(self) -> None:
        while (mail := self._queue.get()) is not None:
            try:
                self.send(self.operator_url, mail.to, mail.subject, mail.body)
            except Exception as exc:  # a send never ends the thread
                log.warning("community: a mail was not sent: %s", type(exc).__name__)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
