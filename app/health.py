"""Health checks shared by ``GET /healthz`` and ``manage.py preflight``."""

from __future__ import annotations

from django.db import connection

from config.celery import app as celery_app


def database_error() -> str | None:
    """None when the database answers a query, else what went wrong."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure means "down"; the message says which
        return f"{type(exc).__name__}: {exc}"
    return None


def broker_error(timeout: float = 2.0) -> str | None:
    """None when RabbitMQ accepts a connection within ``timeout`` seconds, else what went wrong."""
    try:
        with celery_app.connection_for_write(connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=0)  # one try: a probe must not wait
    except Exception as exc:  # any failure means "down"; the message says which
        return f"{type(exc).__name__}: {exc}"
    return None
