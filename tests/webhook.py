"""A webhook collector on 127.0.0.1: what apprise's ``json://`` URL posts, recorded."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: WebhookCollector

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        accepted = self.server.up.is_set()
        with self.server.lock:
            self.server.attempts += 1
            self.server.seen.append((self.path, dict(self.headers.items())))
            if accepted:
                self.server.received.append(json.loads(body or b"{}"))
        if self.server.delay:  # recorded, then answered late: a slow service
            self.server.answer_late.wait(self.server.delay)
        self.send_response(200 if accepted else self.server.down_status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class WebhookCollector(ThreadingHTTPServer):
    """Accepts posts while ``up`` is set, answers ``down_status`` (503) otherwise; keeps
    what it accepted."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.up = threading.Event()
        self.up.set()
        self.down_status = 503
        self.delay = 0.0
        self.answer_late = threading.Event()  # set to answer at once
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.seen: list[tuple[str, dict[str, str]]] = []  # each post's path and headers
        self.errors: list[str] = []  # what broke a request; socketserver would print it
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        """The apprise URL that posts here."""
        return f"json://127.0.0.1:{self.server_address[1]}/hook"

    def messages(self) -> list[str]:
        """The message bodies accepted so far."""
        with self.lock:
            return [str(item.get("message", "")) for item in self.received]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Record what broke a request (a client that hung up, a body cut short), quietly."""
        with self.lock:
            self.errors.append(f"{client_address}: {sys.exc_info()[1]!r}")

    def stop(self) -> None:
        """Stop serving."""
        self.answer_late.set()
        self.shutdown()
        self.server_close()
