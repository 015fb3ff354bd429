"""A raw TCP server on 127.0.0.1 that answers every connection with one scripted
behaviour: for answers no well-behaved HTTP server would give (trickled headers,
layered compression, junk after the end of a stream)."""

from __future__ import annotations

import socket
import threading
import zlib
from collections.abc import Callable

Behaviour = Callable[[socket.socket, threading.Event], None]


def gz(data: bytes) -> bytes:
    """``data`` as one gzip stream."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


class RawServer:
    """Accepts connections, reads the request, then hands the socket to ``behave``."""

    def __init__(self, behave: Behaviour) -> None:
        self.behave = behave
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.errors: list[str] = []  # what a behaviour raised, besides a closed connection
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            self.behave(conn, self.stop)
        except OSError:
            pass  # the client went away: that is what these behaviours provoke
        except Exception as exc:  # a broken behaviour: kept for the test, not printed
            self.errors.append(repr(exc))
        finally:
            conn.close()

    def close(self) -> None:
        """Stop every behaviour and the listener."""
        self.stop.set()
        self.sock.close()
