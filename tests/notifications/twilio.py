"""A local stand-in for Twilio's Messages API: the real request and answer shapes, on a port of
the test's own. It checks what Twilio checks first (the path, basic auth, the form fields), keeps
every request it got, and answers what the test told it to, else 201 with a new message."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token"  # noqa: S105 (the stand-in's, for tests)
SENDER = "+15005550006"


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow or hung Twilio)


@dataclass
class Received:
    at: float
    path: str
    form: dict[str, str]
    authorized: bool
    status: int = 0  # what was answered
    sid: str = ""


def twilio_error(status: int, code: int, message: str) -> Answer:
    """An error as Twilio writes it."""
    return Answer(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


class FakeTwilio:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Answer] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the pooled client expects

            def do_POST(self) -> None:
                fake.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeTwilio:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order; 201 after them."""
        with self.lock:
            self.script.extend(answers)

    def env(self) -> dict[str, str]:
        """A worker's environment that sends SMS here."""
        return {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM": SENDER,
            "TWILIO_MESSAGING_SERVICE_SID": "",
            "TWILIO_API_BASE": self.url,
            "NOTIFICATIONS_SMS_PROVIDER": "",
            "NOTIFICATIONS_HTTP_TIMEOUT": "5",
        }

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length).decode()
        form = {name: values[0] for name, values in parse_qs(raw, keep_blank_values=True).items()}
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        received = Received(
            at=time.time(),
            path=request.path,
            form=form,
            authorized=request.headers.get("Authorization") == f"Basic {expected}",
        )
        with self.lock:
            self.received.append(received)
            scripted = self.script.pop(0) if self.script else None
        answer = scripted or self._create(received)
        received.status = answer.status
        time.sleep(answer.delay)
        payload = json.dumps(answer.body).encode()
        try:
            request.send_response(answer.status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                request.send_header(name, value)
            request.end_headers()
            request.wfile.write(payload)
        except OSError:
            pass  # the client went away (a timeout, a killed worker)

    def _create(self, received: Received) -> Answer:
        """What Twilio answers a create: its checks, then 201 and the new Message."""
        if received.path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
            return twilio_error(404, 20404, "The requested resource was not found")
        if not received.authorized:
            return twilio_error(401, 20003, "Authenticate")
        if not received.form.get("To"):
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not (received.form.get("From") or received.form.get("MessagingServiceSid")):
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not received.form.get("Body"):
            return twilio_error(400, 21602, "Message body is required.")
        received.sid = "SM" + uuid.uuid4().hex
        return Answer(
            201,
            {
                "sid": received.sid,
                "account_sid": ACCOUNT_SID,
                "to": received.form["To"],
                "from": received.form.get("From"),
                "messaging_service_sid": received.form.get("MessagingServiceSid"),
                "body": received.form["Body"],
                "status": "queued",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "error_code": None,
                "error_message": None,
            },
        )
