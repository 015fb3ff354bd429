"""A fake Telegram Bot API on 127.0.0.1: a real HTTP server in a thread.

It answers ``/bot<token>/<method>`` as Telegram does (``{"ok": ..., "result": ...}``,
``error_code`` and ``description`` on failure) for the calls alertd makes, keeps what
was sent to each chat, and enforces Telegram's limits the way the real one does: more
than 30 messages in any second in all, more than one a second to one private chat or 20
a minute to one group gets a 429 with ``parameters.retry_after``. A test plays the
members: ``say`` (a member types), ``tap`` (an inline button), ``push`` (any update:
a sticker, an edited message...), ``block`` (the member blocked the bot), ``storm``
(every send refused with 429 for a while), ``admins`` (who administers a group).
"""

from __future__ import annotations

import html.parser
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "123456:TEST-token-never-in-a-log"
BOT_USERNAME = "guild_alerts_bot"
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "s", "a", "code", "pre", "blockquote", "tg-spoiler"}


@dataclass
class Sent:
    """A message the bot sent (and its later edits)."""

    chat_id: int
    message_id: int
    text: str
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    at: float

    def buttons(self) -> list[tuple[str, str]]:
        """(text, callback_data or url) of every inline button, row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [
            (b["text"], b.get("callback_data") or b.get("url", "")) for row in rows for b in row
        ]


class _HtmlCheck(html.parser.HTMLParser):
    """Telegram's HTML parse mode refuses any tag it does not know (so does this)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.bad: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.bad = tag

    def handle_endtag(self, tag: str) -> None:
        if tag not in ALLOWED_TAGS:
            self.bad = tag


@dataclass
class FakeBot:
    """The fake's state; every method is safe from any thread."""

    token: str = TOKEN
    per_second: int = 30
    chat_gap: float = 1.0
    group_per_minute: int = 20
    latency: float = 0.0  # seconds each send takes to answer, as over a real network
    lock: threading.Condition = field(default_factory=threading.Condition)
    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[int, list[Sent]] = field(default_factory=dict)
    answered: list[dict[str, Any]] = field(default_factory=list)
    blocked: set[int] = field(default_factory=set)
    gone: set[int] = field(default_factory=set)  # chats deleted: 400 "chat not found"
    group_admins: dict[int, set[int]] = field(default_factory=dict)
    offsets: list[int] = field(default_factory=list)  # every getUpdates offset asked
    limited: int = 0  # 429s for a broken limit (not the storm's)
    storm_until: float = 0.0
    storm_retry: int = 1
    calls: int = 0
    _window: deque[float] = field(default_factory=deque)
    _last_to: dict[int, float] = field(default_factory=dict)
    _group_window: dict[int, deque[float]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _update_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    # -- what a test does ----------------------------------------------------------

    def push(self, update: dict[str, Any]) -> int:
        """Queue any update (its ``update_id`` is given here); its id."""
        with self.lock:
            update_id = next(self._update_ids)
            self.updates.append({"update_id": update_id, **update})
            self.lock.notify_all()
            return update_id

    def message(
        self, chat_id: int, text: str | None, user_id: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        """A message as Telegram describes it (a private chat unless ``chat_id`` < 0)."""
        user = user_id if user_id is not None else chat_id
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        body: dict[str, Any] = {
            "message_id": next(self._ids),
            "from": {"id": user, "is_bot": False, "first_name": "Member"},
            "chat": chat,
            "date": int(time.time()),
            **extra,
        }
        if text is not None:
            body["text"] = text
            if text.startswith("/"):
                end = len(text.split(" ", 1)[0])
                body["entities"] = [{"type": "bot_command", "offset": 0, "length": end}]
        return body

    def say(self, chat_id: int, text: str, user_id: int | None = None) -> int:
        """A member types ``text`` in ``chat_id``."""
        return self.push({"message": self.message(chat_id, text, user_id)})

    def tap(self, sent: Sent, data: str, user_id: int | None = None) -> int:
        """A member taps the inline button with ``data`` under ``sent``."""
        user = user_id if user_id is not None else sent.chat_id
        chat = {"id": sent.chat_id, "type": "private" if sent.chat_id > 0 else "supergroup"}
        query = {
            "id": str(next(self._ids)),
            "from": {"id": user, "is_bot": False, "first_name": "Member"},
            "message": {"message_id": sent.message_id, "chat": chat, "date": int(time.time())},
            "chat_instance": "1",
            "data": data,
        }
        return self.push({"callback_query": query})

    def block(self, chat_id: int) -> None:
        """The member blocked the bot: sends to them are refused with 403."""
        with self.lock:
            self.blocked.add(chat_id)

    def delete_chat(self, chat_id: int) -> None:
        """The chat is gone (an account deleted): sends are refused with 400."""
        with self.lock:
            self.gone.add(chat_id)

    def storm(self, seconds: float, retry_after: int = 1) -> None:
        """Every send is refused with 429 (``retry_after``) for ``seconds``."""
        with self.lock:
            self.storm_until = time.monotonic() + seconds
            self.storm_retry = retry_after

    def admins(self, chat_id: int, *user_ids: int) -> None:
        """Who administers group ``chat_id``."""
        with self.lock:
            self.group_admins[chat_id] = set(user_ids)

    def messages(self, chat_id: int) -> list[Sent]:
        """What the bot sent to ``chat_id`` so far."""
        with self.lock:
            return list(self.sent.get(chat_id, ()))

    def wait_for(
        self, chat_id: int, count: int = 1, timeout: float = 10.0, after: int = 0
    ) -> list[Sent]:
        """The messages to ``chat_id`` after the first ``after``, once ``count`` came."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = self.sent.get(chat_id, [])[after:]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return list(found)
                self.lock.wait(min(left, 0.2))

    def wait_confirmed(self, update_id: int, timeout: float = 10.0) -> bool:
        """Whether the bot asked past ``update_id`` (it is done with it) in time."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not any(o > update_id for o in self.offsets):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 0.2))
            return True

    # -- the Bot API ---------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One Bot API call: (HTTP status, answer)."""
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return 404, _error(404, "Not Found: method not found")
        with self.lock:
            self.calls += 1
        result: tuple[int, dict[str, Any]] = handler(params)
        return result

    def _api_getMe(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, _ok({"id": 1, "is_bot": True, "first_name": "Guild", "username": BOT_USERNAME})

    def _api_getUpdates(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 50.0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + timeout
        with self.lock:
            self.offsets.append(offset)
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            self.lock.notify_all()
            while not self.updates and time.monotonic() < deadline:
                self.lock.wait(min(deadline - time.monotonic(), 0.1))
            return 200, _ok(self.updates[:limit])

    def _limits(self, chat_id: int, now: float) -> tuple[int, dict[str, Any]] | None:
        """A 429 if this send breaks a limit (the caller holds the lock)."""
        if chat_id in self.blocked:
            return 403, _error(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.gone:
            return 400, _error(400, "Bad Request: chat not found")
        if now < self.storm_until:
            return 429, _error(
                429,
                f"Too Many Requests: retry after {self.storm_retry}",
                {"retry_after": self.storm_retry},
            )
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        broken = len(self._window) >= self.per_second
        if chat_id > 0:
            broken |= now - self._last_to.get(chat_id, -1e9) < self.chat_gap
        else:
            window = self._group_window.setdefault(chat_id, deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            broken |= len(window) >= self.group_per_minute
        if broken:
            self.limited += 1
            return 429, _error(429, "Too Many Requests: retry after 3", {"retry_after": 3})
        return None

    def _api_sendMessage(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer = self._send_message(params)
        if self.latency:
            time.sleep(self.latency / 2)  # the way back
        return answer

    def _send_message(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.latency:
            time.sleep(self.latency / 2)  # the way there: Telegram counts from its end
        chat_id = int(params["chat_id"])
        text = str(params.get("text") or "")
        mode = params.get("parse_mode")
        if not text.strip():
            return 400, _error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            return 400, _error(400, "Bad Request: message is too long")
        if mode == "HTML":
            check = _HtmlCheck()
            check.feed(text)
            if check.bad is not None:
                return 400, _error(400, f"Bad Request: can't parse entities: {check.bad}")
        markup = _json(params.get("reply_markup"))
        with self.lock:
            now = time.monotonic()
            refused = self._limits(chat_id, now)
            if refused is not None:
                return refused
            self._window.append(now)
            if chat_id > 0:
                self._last_to[chat_id] = now
            else:
                self._group_window[chat_id].append(now)
            sent = Sent(chat_id, next(self._ids), text, mode, markup, now)
            self.sent.setdefault(chat_id, []).append(sent)
            self.lock.notify_all()
        return 200, _ok({"message_id": sent.message_id, "chat": {"id": chat_id}, "text": text})

    def _find(self, params: dict[str, Any]) -> Sent | None:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        return next((s for s in self.sent.get(chat_id, ()) if s.message_id == message_id), None)

    def _api_editMessageText(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            sent = self._find(params)
            if sent is None:
                return 400, _error(400, "Bad Request: message to edit not found")
            sent.text = str(params.get("text") or "")
            sent.parse_mode = params.get("parse_mode")
            sent.reply_markup = _json(params.get("reply_markup"))
            self.lock.notify_all()
        return 200, _ok(True)

    def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            sent = self._find(params)
            if sent is None:
                return 400, _error(400, "Bad Request: message to edit not found")
            sent.reply_markup = _json(params.get("reply_markup"))
        return 200, _ok(True)

    def _api_answerCallbackQuery(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.answered.append(dict(params))
        return 200, _ok(True)

    def _api_getChatMember(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        with self.lock:
            admin = user_id in self.group_admins.get(chat_id, set())
        status = "administrator" if admin else "member"
        return 200, _ok({"status": status, "user": {"id": user_id, "is_bot": False}})


def _ok(result: object) -> dict[str, Any]:
    return {"ok": True, "result": result}


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        answer["parameters"] = parameters
    return answer


def _json(value: object) -> dict[str, Any] | None:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else None


def _handler(bot: FakeBot) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            prefix, _, method = parts.path.lstrip("/").partition("/")
            size = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(size) if size else b""
            if prefix != f"bot{bot.token}":
                self._answer(401, _error(401, "Unauthorized"))
                return
            params: dict[str, Any] = dict(parse_qsl(parts.query))
            kind = self.headers.get("Content-Type", "")
            if raw and kind.startswith("application/json"):
                params.update(json.loads(raw))
            elif raw:
                params.update(parse_qsl(raw.decode()))
            try:
                status, body = bot.call(method, params)
            except (KeyError, ValueError, TypeError) as exc:
                status, body = 400, _error(400, f"Bad Request: {exc}")
            self._answer(status, body)

        do_GET = _handle
        do_POST = _handle

    return Handler


@contextmanager
def fake_bot(**settings: Any) -> Iterator[tuple[FakeBot, str]]:
    """A fake Bot API served on 127.0.0.1 until the block ends: (state, base URL)."""
    bot = FakeBot(**settings)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(bot))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fakebot", daemon=True)
    thread.start()
    try:
        yield bot, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
