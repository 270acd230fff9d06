"""A local stand-in for Postmark's email API (``POST /email``), for django-anymail's Postmark
backend: the real request and answer shapes, on a port of the test's own. It keeps every message
it got and answers what the test told it to, else 200 with a new MessageID."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "postmark-test-token"  # noqa: S105 (the stand-in's, for tests)


@dataclass
class FakePostmark:
    url: str = ""
    #: Each message taken (200): its JSON body.
    taken: list[dict[str, Any]] = field(default_factory=list)
    #: Answers to the next requests, in order: (status, body), or None to take the message.
    script: list[tuple[int, dict[str, Any]] | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if token != TOKEN:
                return 401, {"ErrorCode": 10, "Message": "Request does not contain a valid token"}
            scripted = self.script.pop(0) if self.script else None
            if scripted is not None:
                return scripted
            self.taken.append(body)
        return 200, {
            "To": body.get("To", ""),
            "SubmittedAt": "2026-11-30T12:00:00Z",
            "MessageID": str(uuid.uuid4()),
            "ErrorCode": 0,
            "Message": "OK",
        }

    def settings(self, token: str = TOKEN) -> dict[str, Any]:
        """The Django settings that send through this stand-in with anymail's backend."""
        return {
            "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
            "ANYMAIL": {"POSTMARK_SERVER_TOKEN": token, "POSTMARK_API_URL": self.url},
        }


@contextmanager
def fake_postmark() -> Iterator[FakePostmark]:
    fake = FakePostmark()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, answer = fake.answer(body, self.headers.get("X-Postmark-Server-Token", ""))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
