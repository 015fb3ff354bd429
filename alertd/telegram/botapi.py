"""The Bot API's few calls, over one ``httpx.Client``; every failure becomes ``BotApiError``.

The token is part of every URL (``/bot<token>/sendMessage``): it is kept out of every
error text here, and httpx logs URLs only at DEBUG in alertd (``cli.setup_logging``),
where the config's secrets are masked too. Sends take a slot of the shared ``Pacer``
first, and a 429 holds the pacer for its ``retry_after``.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import httpx

from alertd.errors import AlertdError
from alertd.telegram.pace import Pacer

log = logging.getLogger(__name__)

POLL_TIMEOUT = 25  # seconds getUpdates waits for an update (Telegram allows up to 50)
CALL_TIMEOUT = 15.0
MAX_RETRY_AFTER = 600.0
BLOCKED_CODES = (403,)  # blocked, kicked from the group, deactivated: never retried


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
        self, message: str, code: int = 0, retry_after: float | None = None, unknown: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after
        self.unknown = unknown

    @property
    def blocked(self) -> bool:
        """The chat will not take messages from the bot (a member blocked it)."""
        return self.code in BLOCKED_CODES


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

    def close(self) -> None:
        """Release the connections."""
        self.client.close()

    def _hide(self, text: str) -> str:
        return text.replace(self._token, "<token>")

    def call(self, method: str, wait: float | None = None, **params: Any) -> Any:
        """``method`` with ``params`` (None values left out), waiting ``wait`` s at most
        for its answer; its ``result``."""
        body = {k: v for k, v in params.items() if v is not None}
        try:
            if wait is None:
                answer = self.client.post(method, json=body)
            else:
                answer = self.client.post(method, json=body, timeout=wait)
        except httpx.TimeoutException as exc:
            raise BotApiError(f"{method}: no answer in time", unknown=True) from exc
        except httpx.HTTPError as exc:
            raise BotApiError(self._hide(f"{method}: {type(exc).__name__}: {exc}")) from exc
        try:
            data = answer.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise BotApiError(f"{method}: the Bot API answered {answer.status_code}, not JSON",
                              code=answer.status_code)  # fmt: skip
        if data.get("ok") is True:
            return data.get("result")
        code = data.get("error_code")
        code = code if isinstance(code, int) else answer.status_code
        why = self._hide(str(data.get("description") or "no description"))[:300]
        retry = None
        if code == 429:
            retry = _retry_after(data.get("parameters"))
            self.pacer.hold(retry)
        raise BotApiError(f"{method}: {code} {why}", code=code, retry_after=retry)

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
    ) -> int:
        """sendMessage in HTML parse mode, within the limits; the message's id."""
        with self.pacer.slot(chat_id, urgent, stop):
            result = self.call(
                "sendMessage",
                chat_id=chat_id,
                text=text,
                parse_mode="HTML",
                link_preview_options={"is_disabled": True},
                reply_markup=markup(keyboard),
            )
        return int((result or {}).get("message_id") or 0)

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
