"""Django's SMTP backend, with a hook right before the end of each message's data.

An SMTP server takes a message only when it reads the final ``.`` line; a connection lost
before that aborts the transaction (RFC 5321, 4.1.1.4). A bulk batch commits a recipient's
claim in that hook: killed before it, nothing was taken and the recipient is still pending
(sent by the retry); killed after it, the server got the whole message and the claim says so
(not resent). What is left in doubt is the instant between the claim's commit and the final
line, not the whole SMTP conversation.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable
from typing import Any

from django.core.mail.backends.smtp import EmailBackend

#: A hook returns False to give up the message: the connection is then closed before the final
#: line, which aborts it at the server.
BeforeEnd = Callable[[], bool]


class MessageAbandoned(smtplib.SMTPException):
    """The hook gave the message up before its end; the server discards it."""


class _HookedData:
    """``smtplib.SMTP.data`` with ``before_end`` called between the body and the final line."""

    before_end: BeforeEnd | None = None
    #: Recipients the server refused in the last sendmail while taking the message for others
    #: (Django's backend drops this): address -> "code reply".
    refused: dict[str, str] = {}

    def sendmail(self, *args: Any, **kwargs: Any) -> dict[str, tuple[int, bytes]]:
        result: dict[str, tuple[int, bytes]] = smtplib.SMTP.sendmail(self, *args, **kwargs)  # type: ignore[arg-type]
        self.refused = {
            address: f"{code} {reply.decode(errors='replace')}"
            for address, (code, reply) in result.items()
        }
        return result

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # The final line goes out as a small write right after the body: with Nagle's algorithm
        # it would wait for the server's delayed ACK (40 ms on Linux) on every message.
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def data(self, msg: Any) -> tuple[int, bytes]:
        smtp: smtplib.SMTP = self  # type: ignore[assignment]
        if self.before_end is None:
            return smtplib.SMTP.data(smtp, msg)
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        if isinstance(msg, str):
            msg = smtplib._fix_eols(msg).encode("ascii")  # type: ignore[attr-defined]
        body = smtplib._quote_periods(msg)  # type: ignore[attr-defined]
        if body[-2:] != smtplib.bCRLF:
            body += smtplib.bCRLF
        smtp.send(body)
        if not self.before_end():
            smtp.close()
            raise MessageAbandoned("message given up before its end")
        smtp.send(b"." + smtplib.bCRLF)
        return smtp.getreply()


class HookedSMTP(_HookedData, smtplib.SMTP):
    pass


class HookedSMTPSSL(_HookedData, smtplib.SMTP_SSL):
    pass


class HookedBackend(EmailBackend):
    """Django's SMTP backend (same EMAIL_* settings) whose connection has ``before_end``."""

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return HookedSMTPSSL if self.use_ssl else HookedSMTP

    def before_end_set(self, hook: BeforeEnd | None) -> None:
        """Call ``hook`` before the end of the next messages sent (None: no hook)."""
        if not isinstance(self.connection, _HookedData):
            raise RuntimeError("open the connection before setting its hook")
        self.connection.before_end = hook
