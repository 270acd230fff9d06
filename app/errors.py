"""The two kinds of failure a job can have. Which one it is decides retry or dead letter."""

from django.db import InterfaceError, OperationalError


class TransientError(Exception):
    """The cause should go away by itself (a timeout, a 503, a lock): retry with backoff."""


class PermanentError(Exception):
    """Retrying cannot help (bad input, a missing record): dead-letter the job now.

    Any exception that is not transient is treated as permanent; raise this one to say so
    explicitly, or to stop a retry of an exception that a task lists in ``autoretry_for``.
    """


#: What a database that is down, restarting, overloaded or in a deadlock raises (Django's wrappers).
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)

#: What the base job class retries by default. A task's own ``autoretry_for`` replaces this
#: list, so extend it: ``@shared_task(autoretry_for=(*TRANSIENT_ERRORS, httpx.TransportError))``.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    *DATABASE_UNAVAILABLE,
)
