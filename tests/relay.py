"""A plain HTTP relay on 127.0.0.1: a forward proxy, or a front that can go away.

It reads one request per connection, notes its target, sends it to one upstream server
on 127.0.0.1 (whatever host an absolute-form target names) and relays the answer byte
for byte as it comes (a trickle stays a trickle), then closes the connection. As a
forward proxy (``HTTP_PROXY``) it sees ``GET http://host/path``; as a front for the
stand-in it sees ``GET /path``. ``close`` stops it: new connections are then refused.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit


class Relay:
    """Relays every request to ``127.0.0.1:upstream_port``; ``targets`` lists what it saw."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.targets: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.closed.is_set():
                conn.close()
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            method, target, _version = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            self.targets.append(target)
            parts = urlsplit(target)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60) as up:
                up.sendall(
                    f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Accept-Encoding: identity\r\nConnection: close\r\n\r\n".encode()
                )
                while data := up.recv(65536):  # to its end: the upstream never sees a reset
                    conn.sendall(data)

    def close(self) -> None:
        """Stop accepting: connections are refused from now on."""
        self.closed.set()
        with contextlib.suppress(OSError):  # wakes the accept() in flight (close alone does not)
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
