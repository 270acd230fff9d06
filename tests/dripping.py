"""A server that answers as slowly as it can without ever going quiet: one byte every ``every``
seconds, in the status line and headers (``part="headers"``) or in the body (``part="body"``).
Each byte comes well within any read timeout, so only a deadline on the whole request ends it.
It stops dripping after ``lasting`` seconds, so that a test of a client without a deadline ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Dripping:
    def __init__(self, *, part: str = "headers", every: float = 0.2, lasting: float = 8.0) -> None:
        self.part, self.every, self.lasting = part, every, lasting
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.requests = 0
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            received = b""
            try:
                while b"\r\n\r\n" not in received:
                    data = conn.recv(65536)
                    if not data:
                        return
                    received += data
                self.requests += 1
                if self.part == "body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                ends = time.monotonic() + self.lasting
                while time.monotonic() < ends and not self.closed.is_set():
                    conn.sendall(b"a")
                    time.sleep(self.every)
                if self.part != "body":
                    conn.sendall(b"\r\nContent-Length: 2\r\n\r\nok")
            except OSError:
                return  # the client gave up and closed: what the tests want

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@contextmanager
def dripping(**kwargs: object) -> Iterator[Dripping]:
    server = Dripping(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()
