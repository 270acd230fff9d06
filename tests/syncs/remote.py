"""A remote JSON API in a thread: the stand-in for a third party's server, real HTTP on
127.0.0.1. ``GET /contacts?page=N&per_page=M`` answers ``{"data": [...], "page": N,
"total_pages": T}``; a script makes chosen pages fail (a status with headers, a body that is not
what the sync expects) or run a hook (kill the worker), once each; every request is logged with
its arrival time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Answer = tuple[int, dict[str, str], bytes]
#: What a scripted page does instead of answering normally, once: (status, headers, body), or a
#: hook called when the request arrives, which may return the answer (None: the normal one).
Action = Answer | Callable[[], Answer | None]


@dataclass
class Hit:
    page: int
    at: float  # time.monotonic()
    status: int


@dataclass
class RemoteApi:
    pages: int = 200
    per_page: int = 10
    latency: float = 0.0
    #: The version of every record; bump to make the next sync see them changed.
    version: int = 1
    script: dict[int, list[Action]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    url: str = ""

    def record(self, number: int) -> dict[str, Any]:
        return {
            "id": number,
            "name": f"Contact {number} v{self.version}",
            "email": f"contact{number}@example.com",
            "updated_at": f"2024-05-{1 + self.version % 28:02d}T10:00:00Z",
        }

    def body(self, page: int) -> bytes:
        first = (page - 1) * self.per_page
        data = [self.record(first + i) for i in range(self.per_page)] if page <= self.pages else []
        return json.dumps({"data": data, "page": page, "total_pages": self.pages}).encode()

    def answer(self, page: int) -> Answer:
        actions = self.script.get(page)
        if actions:
            action = actions.pop(0)
            answer = action() if callable(action) else action
            if answer is not None:
                return answer
        return 200, {"Content-Type": "application/json"}, self.body(page)

    def pages_served(self) -> list[int]:
        """Pages answered 200, in order."""
        return [hit.page for hit in self.hits if hit.status == 200]


@contextmanager
def remote_api(
    api: RemoteApi | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[RemoteApi]:
    served = api or RemoteApi()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stall

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            arrived = time.monotonic()
            try:
                page = int(query["page"][0])
            except (KeyError, ValueError):
                page = 0
            if served.latency:
                time.sleep(served.latency)
            with lock:
                status, headers, body = served.answer(page)
                served.hits.append(Hit(page, arrived, status))
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    served.url = f"http://{host}:{httpd.server_address[1]}/contacts"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
