"""A webhook receiver in a thread: the stand-in for a subscriber's server, real HTTP on
127.0.0.1. It answers from a script (status and headers per request) and records every request
as it came: headers, body bytes and arrival time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


class Receiver:
    def __init__(self, *answers: Answer, host: str = "127.0.0.1") -> None:
        """``answers``: (status, headers) or (status, headers, body) for the first requests in
        turn; 200 after them."""
        self.script = list(answers)
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append(Received(self.path, headers, body, time.monotonic()))
                script = receiver.script.pop(0) if receiver.script else (200, {})
                status, extra = script[0], script[1]
                answer = b'{"ok": true}' if status < 300 else b"not now"
                if len(script) == 3:
                    answer = script[2]
                self.send_response(status)
                for name, value in {"Content-Length": str(len(answer)), **extra}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}/hooks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def receiving(*answers: Answer, host: str = "127.0.0.1") -> Iterator[Receiver]:
    receiver = Receiver(*answers, host=host)
    try:
        yield receiver
    finally:
        receiver.close()
