"""The Bot API's few calls, over one ``httpx.Client``; every failure becomes ``BotApiError``.

The token is part of every URL (``/bot<token>/sendMessage``): it is kept out of every
error text here, and httpx logs URLs only at DEBUG in alertd (``cli.setup_logging``),
where the config's secrets are masked too. Sends take a slot of the shared ``Pacer``
first, and a 429 holds the pacer for its ``retry_after``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from alertd.errors import AlertdError
from alertd.telegram.pace import Pacer

log = logging.getLogger(__name__)

POLL_TIMEOUT = 25  # seconds getUpdates waits for an update (Telegram allows up to 50)
CALL_TIMEOUT = 15.0
MAX_RETRY_AFTER = 600.0
MAX_ANSWER = 16 * 1024 * 1024  # bytes of an answer read at most (100 updates are far less)
BLOCKED_CODES = (403,)  # blocked, kicked from the group, deactivated: never retried
REFUSED_CODES = (401, 404)  # the token revoked or mistyped: every call refused alike
REFUSED_WAIT = 60.0  # seconds sends fail without asking after such a refusal


class _HideTokens(logging.Filter):
    """Masks the bots' tokens in httpx's and httpcore's own lines: httpx logs each
    request's URL ("HTTP Request: POST .../bot<token>/sendMessage"), which a DEBUG log
    level, or a program embedding alertd with its own logging, would show."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(token in text for token in self.tokens):
            for token in self.tokens:
                text = text.replace(token, "<token>")
            record.msg, record.args = text, ()
        return True


_HIDE = _HideTokens()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_HIDE)


class BotApiError(AlertdError):
    """A Bot API call that failed: ``code`` is Telegram's (or 0: no answer came);
    ``retry_after`` is set for a 429; ``unknown`` when the message may have arrived."""

    def __init__(
        self,
        message: str,
        code: int = 0,
        retry_after: float | None = None,
        unknown: bool = False,
        migrate_to: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after
        self.unknown = unknown
        self.migrate_to = migrate_to  # a group made a supergroup: its new id

    @property
    def blocked(self) -> bool:
        """The chat will not take messages from the bot: a member blocked it (403), or
        the chat is gone (400 "chat not found": a deleted account or group)."""
        gone = self.code == 400 and "chat not found" in str(self).lower()
        return self.code in BLOCKED_CODES or gone


@dataclass(frozen=True)
class Button:
    """An inline keyboard button: it sends ``data`` back as a callback query."""

    text: str
    data: str


Keyboard = list[list[Button]]


def markup(keyboard: Keyboard | None) -> dict[str, Any] | None:
    """The ``reply_markup`` of an inline keyboard (None: no keyboard)."""
    if keyboard is None:
        return None
    rows = [[{"text": b.text, "callback_data": b.data} for b in row] for row in keyboard]
    return {"inline_keyboard": rows}


class BotApi:
    """One bot's calls, paced by ``pacer`` (shared by every sender of this bot)."""

    def __init__(self, token: str, api_url: str, pacer: Pacer | None = None) -> None:
        self._token = token
        _HIDE.tokens.add(token)
        self.pacer = pacer or Pacer()
        self.client = httpx.Client(
            base_url=f"{api_url.rstrip('/')}/bot{token}/",
            timeout=httpx.Timeout(CALL_TIMEOUT, read=CALL_TIMEOUT + POLL_TIMEOUT),
            follow_redirects=False,
        )
        self.username: str | None = None
        self._refused: tuple[float, BotApiError] | None = None  # (until, the refusal)

    def close(self) -> None:
        """Release the connections."""
        self.client.close()

    def _hide(self, text: str) -> str:
        return text.replace(self._token, "<token>")

    def call(self, method: str, wait: float | None = None, **params: Any) -> Any:
        """``method`` with ``params`` (None values left out), waiting ``wait`` s at most
        for its answer; its ``result``."""
        body = {k: v for k, v in params.items() if v is not None}
        wait = CALL_TIMEOUT if wait is None else wait
        deadline = time.monotonic() + wait  # httpx's timeouts are per read: a whole answer
        try:
            with self.client.stream("POST", method, json=body, timeout=wait) as answer:
                raw = bytearray()
                for chunk in answer.iter_bytes():
                    raw += chunk
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer did not end in time")
                    if len(raw) > MAX_ANSWER:
                        raise BotApiError(f"{method}: the Bot API's answer is too large",
                                          code=answer.status_code, unknown=True)  # fmt: skip
        except httpx.TimeoutException as exc:
            raise BotApiError(f"{method}: no answer in time", unknown=True) from exc
        except httpx.HTTPError as exc:
            raise BotApiError(self._hide(f"{method}: {type(exc).__name__}: {exc}")) from exc
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):  # a 2xx may well have been acted on: not known
            raise BotApiError(f"{method}: the Bot API answered {answer.status_code}, not JSON",
                              code=answer.status_code, unknown=answer.is_success)  # fmt: skip
        if data.get("ok") is True:
            self._refused = None
            return data.get("result")
        code = data.get("error_code")
        code = code if isinstance(code, int) else answer.status_code
        why = self._hide(str(data.get("description") or "no description"))[:300]
        retry = None
        if code == 429:
            retry = _retry_after(data.get("parameters"))
            self.pacer.hold(retry)
        parameters = data.get("parameters")
        migrate = parameters.get("migrate_to_chat_id") if isinstance(parameters, dict) else None
        migrate = migrate if type(migrate) is int else None
        error = BotApiError(
            f"{method}: {code} {why}", code=code, retry_after=retry, migrate_to=migrate
        )
        if code in REFUSED_CODES:
            self._refused = (time.monotonic() + REFUSED_WAIT, error)
        raise error

    def _check_refused(self) -> None:
        """The last refusal of the token again, without asking, while it is recent: a
        revoked token must not cost one request per member of a fan-out."""
        refused = self._refused
        if refused is not None and time.monotonic() < refused[0]:
            raise BotApiError(str(refused[1]), code=refused[1].code)

    def get_me(self) -> str:
        """The bot's username (commands in groups may be addressed ``/cmd@username``)."""
        result = self.call("getMe")
        self.username = str((result or {}).get("username") or "") or None
        return self.username or ""

    def get_updates(self, offset: int, timeout: int = POLL_TIMEOUT) -> list[dict[str, Any]]:
        """Updates from ``offset`` on, waiting up to ``timeout`` s for one (long polling)."""
        body = {
            "offset": offset,
            "timeout": timeout,
            "allowed_updates": ["message", "edited_message", "callback_query"],
        }
        result = self.call("getUpdates", wait=CALL_TIMEOUT + timeout, **body)
        return [u for u in result if isinstance(u, dict)] if isinstance(result, list) else []

    def send(
        self,
        chat_id: int,
        text: str,
        keyboard: Keyboard | None = None,
        urgent: bool = False,
        stop: threading.Event | None = None,
        patience: float | None = None,
    ) -> int:
        """sendMessage in HTML parse mode, within the limits; the message's id.
        ``patience``: BusyError rather than wait longer for the slot."""
        self._check_refused()
        with self.pacer.slot(chat_id, urgent, stop, patience):
            result = self.call(
                "sendMessage",
                chat_id=chat_id,
                text=text,
                parse_mode="HTML",
                link_preview_options={"is_disabled": True},
                reply_markup=markup(keyboard),
            )
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return message_id if type(message_id) is int else 0  # ok is ok, whatever the result

    def edit(self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None) -> None:
        """editMessageText (the wizard's next step in place of its last)."""
        with self.pacer.slot(None, urgent=True):
            self.call(
                "editMessageText",
                chat_id=chat_id,
                message_id=message_id,
                text=text,
                parse_mode="HTML",
                link_preview_options={"is_disabled": True},
                reply_markup=markup(keyboard),
            )

    def answer_callback(self, query_id: str, text: str | None = None) -> None:
        """answerCallbackQuery: the member's client stops showing its spinner."""
        self.call("answerCallbackQuery", callback_query_id=query_id, text=text)

    def is_admin(self, chat_id: int, user_id: int) -> bool:
        """Whether ``user_id`` administers group ``chat_id`` (getChatMember)."""
        result = self.call("getChatMember", chat_id=chat_id, user_id=user_id)
        return isinstance(result, dict) and result.get("status") in ("creator", "administrator")


def _retry_after(parameters: object) -> float:
    """A 429's wait, in seconds: its ``parameters.retry_after``; 5 when unreadable."""
    value = parameters.get("retry_after") if isinstance(parameters, dict) else None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 5.0
    return min(seconds, MAX_RETRY_AFTER) if math.isfinite(seconds) and seconds >= 0 else 5.0


_BOTS: dict[tuple[str, str], BotApi] = {}
_BOTS_LOCK = threading.Lock()


def bot_for(token: str, api_url: str) -> BotApi:
    """This process's one client of the bot (and its one pacer): the cycle's alerts and
    the bot's replies share it."""
    with _BOTS_LOCK:
        bot = _BOTS.get((token, api_url))
        if bot is None:
            bot = _BOTS[(token, api_url)] = BotApi(token, api_url)
        return bot
