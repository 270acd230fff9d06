"""A local Sentry stand-in: an HTTP server that accepts what a Sentry SDK posts and keeps it.

The SDK posts envelopes to ``/api/<project>/envelope/``, gzip-compressed (brotli-compressed when
the ``brotli`` package is installed, which then reads them here too). An envelope is
newline-delimited JSON: a header line, then items, each a header line (its ``type``, and its
``length`` when the payload may hold newlines) and a payload. Tests look at the items: events
(errors) and check-ins (Sentry Crons).
"""

from __future__ import annotations

import gzip
import importlib
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Item:
    type: str
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)


def envelope_items(body: bytes) -> list[Item]:
    """The items of one envelope (the envelope's own header line is skipped)."""
    stream = io.BytesIO(body)
    stream.readline()
    items = []
    while line := stream.readline():
        if not line.strip():
            continue
        header = json.loads(line)
        if header.get("length") is not None:
            payload = stream.read(header["length"])
            stream.readline()  # the newline after a payload of known length
        else:
            payload = line_end_stripped(stream.readline())
        items.append(Item(header.get("type", ""), payload))
    return items


def line_end_stripped(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\n") else line


class SentryStandIn(ThreadingHTTPServer):
    """Keeps every envelope posted to it: raw (``envelopes``) and as items (``items``)."""

    def __init__(self) -> None:
        self.envelopes: list[str] = []
        self.items: list[Item] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), self.Handler)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server_address[1]}/1"

    def check_ins(self) -> list[dict[str, Any]]:
        with self.lock:
            return [item.json() for item in self.items if item.type == "check_in"]

    def events(self) -> list[dict[str, Any]]:
        """Error events (not transactions, sessions or check-ins)."""
        with self.lock:
            return [item.json() for item in self.items if item.type == "event"]

    class Handler(BaseHTTPRequestHandler):
        server: SentryStandIn

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            encoding = self.headers.get("Content-Encoding")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "br":
                body = importlib.import_module("brotli").decompress(body)
            with self.server.lock:
                self.server.paths.append(self.path)
                self.server.envelopes.append(body.decode(errors="replace"))
                self.server.items += envelope_items(body)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass


@contextmanager
def sentry_stand_in() -> Iterator[SentryStandIn]:
    server = SentryStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
