"""A real SMTP server for tests and benchmarks (aiosmtpd), standing in for a provider.

It keeps what it received, can refuse or defer chosen recipients, call a hook on each message
(to kill a worker at a chosen point), and require STARTTLS and AUTH as every real provider does.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support import free_port

# aiosmtpd logs every command, and (1.4) a warning on each successful AUTH that its own code sets
# a deprecated attribute: neither says anything about the code under test.
logging.getLogger("mail.log").setLevel(logging.WARNING)
logging.getLogger("mail.log").addFilter(
    lambda record: "login_data is deprecated" not in record.getMessage()
)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float


@dataclass
class SmtpSink:
    host: str
    port: int
    #: Addresses answered 550 at RCPT, every time.
    reject: set[str] = field(default_factory=set)
    #: Addresses answered 451 at RCPT the first time only.
    defer_once: set[str] = field(default_factory=set)
    #: Called with the count of messages received, after storing each (before answering 250).
    on_message: Callable[[int], None] | None = None
    #: Answer 553 to every MAIL FROM (a sender address the provider does not allow).
    refuse_sender: bool = False
    credentials: tuple[str, str] | None = None
    cert_file: Path | None = None
    messages: list[Received] = field(default_factory=list)
    _deferred: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def rcpt_verdict(self, address: str) -> str | None:
        with self._lock:
            if address in self.reject:
                return f"550 5.1.1 <{address}>: user unknown"
            if address in self.defer_once and address not in self._deferred:
                self._deferred.add(address)
                return f"451 4.3.0 <{address}>: try again later"
        return None

    def store(self, envelope: Envelope) -> int:
        with self._lock:
            self.messages.append(
                Received(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or b""),
                    at=time.monotonic(),
                )
            )
            return len(self.messages)

    def deliveries(self) -> Counter[str]:
        """How many messages each recipient got."""
        with self._lock:
            return Counter(rcpt for message in self.messages for rcpt in message.rcpt_tos)

    def settings(self) -> dict[str, Any]:
        """Django settings that point the SMTP backend here."""
        user, password = self.credentials or ("", "")
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": self.host,
            "EMAIL_PORT": self.port,
            "EMAIL_USE_TLS": self.cert_file is not None,
            "EMAIL_HOST_USER": user,
            "EMAIL_HOST_PASSWORD": password,
            "EMAIL_TIMEOUT": 10,
        }

    def env(self) -> dict[str, str]:
        """The same, as a worker process's environment (config/settings.py reads these)."""
        values = {
            key: ("1" if value is True else "0" if value is False else str(value))
            for key, value in self.settings().items()
        }
        if self.cert_file is not None:
            values["SSL_CERT_FILE"] = str(self.cert_file)  # trust the test CA
        return values


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.sink.refuse_sender:
            return f"553 5.7.1 <{address}>: sender address not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        verdict = self.sink.rcpt_verdict(address)
        if verdict:
            return verdict
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        count = self.sink.store(envelope)
        if self.sink.on_message is not None:
            self.sink.on_message(count)
        return "250 2.0.0 accepted"


@contextmanager
def smtp_sink(
    *, tls_dir: Path | None = None, credentials: tuple[str, str] | None = None
) -> Iterator[SmtpSink]:
    """Run a sink on a free port. With ``tls_dir``, STARTTLS and AUTH are required, with a
    certificate from a test CA written there (point SSL_CERT_FILE at ``sink.cert_file``)."""
    sink = SmtpSink(host="127.0.0.1", port=free_port(), credentials=credentials)
    kwargs: dict[str, Any] = {}
    if tls_dir is not None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        sink.cert_file = tls_dir / "test-ca.pem"
        ca.cert_pem.write_to_path(str(sink.cert_file))
        kwargs.update(tls_context=context, require_starttls=True)
    if credentials is not None:

        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and (
                    data.login.decode(),
                    data.password.decode(),
                )
                == credentials
            )
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=authenticate, auth_required=True)
    controller = Controller(_Handler(sink), hostname=sink.host, port=sink.port, **kwargs)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def in_process_ca(sink: SmtpSink) -> None:
    """Make this process trust the sink's test CA (for in-process sends and benchmarks)."""
    if sink.cert_file is not None:
        os.environ["SSL_CERT_FILE"] = str(sink.cert_file)
