"""SQL statements on a worker's hot path, run on Django's connection and prepared once per
connection: the two writes every tracked job makes (app/records.py).

On PostgreSQL a statement runs through libpq's blocking ``PQexecPrepared`` (psycopg's documented
``pq`` module), which releases the GIL once, for the whole round trip. A psycopg cursor runs the
same statement as a series of non-blocking steps that each release and retake the GIL: in a
threads worker that doubled the thread switches per tracked job and cost a fifth of its
throughput (make bench, ``tracked_drain_ratio_vs_bare``). Django's cursors add client-side
binding and a new query plan each time. Anywhere else (SQLite), a Django cursor runs it.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from datetime import datetime
from typing import Any, cast

import psycopg
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg import errors, pq

#: Names of the statements prepared on each open psycopg connection.
_prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[bytes]] = (
    weakref.WeakKeyDictionary()
)
_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


class Statement:
    """One SQL statement with ``%s`` placeholders; ``execute`` returns its first row's first
    column (``RETURNING x``), or None."""

    def __init__(self, name: str, sql: str) -> None:
        self.name = name.encode()
        self.sql = sql
        numbers = iter(range(1, sql.count("%s") + 1))
        self._numbered = re.sub("%s", lambda _: f"${next(numbers)}", sql).encode()

    def execute(self, db: BaseDatabaseWrapper, params: list[Any]) -> str | None:
        """Run on ``db``, a connection of ``django.db.connections``."""
        if db.vendor != "postgresql" or not db.get_autocommit():
            # In a transaction, a Django cursor: psycopg opens the transaction on a cursor's
            # first statement, and libpq's own call would run outside it.
            with db.cursor() as cursor:
                cursor.execute(self.sql, params)
                row = cursor.fetchone() if cursor.description else None
                return None if row is None else str(row[0])
        with db.wrap_database_errors:
            return self._execute_prepared(db.connection, [_text(value) for value in params])

    def _execute_prepared(
        self, conn: psycopg.Connection[Any], values: list[bytes | None]
    ) -> str | None:
        # None is NULL, as in send_query_prepared's signature; exec_prepared's omits it.
        params = cast(list[bytes], values)
        prepared = _prepared.setdefault(conn, set())
        if self.name not in prepared:
            self._prepare(conn.pgconn)
            prepared.add(self.name)
        try:
            result = _check(conn.pgconn.exec_prepared(self.name, params), conn.pgconn)
        except (errors.InvalidSqlStatementName, errors.FeatureNotSupported):
            # Dropped behind our back (DISCARD ALL, a connection pooler), or made stale by a
            # schema change ("cached plan must not change result type"): prepare it anew, once.
            conn.pgconn.exec_(b"DEALLOCATE " + self.name)  # an error here means: already gone
            self._prepare(conn.pgconn)
            result = _check(conn.pgconn.exec_prepared(self.name, params), conn.pgconn)
        if result.ntuples == 0:
            return None
        value = result.get_value(0, 0)
        return None if value is None else value.decode()

    def _prepare(self, pgconn: pq.abc.PGconn) -> None:
        # Already there if a previous call was interrupted between preparing and noting it.
        with contextlib.suppress(errors.DuplicatePreparedStatement):
            _check(pgconn.prepare(self.name, self._numbered), pgconn)


def _check(result: pq.abc.PGresult, pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    if result.status in _OK:
        return result
    if pgconn.status == pq.ConnStatus.BAD:  # the connection broke; libpq gives no SQLSTATE
        raise psycopg.OperationalError(pgconn.get_error_message())
    raise errors.error_from_result(result, encoding="utf-8")


def _text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().encode()
    text = str(value)
    if "\x00" in text:  # libpq would cut the value short there; psycopg refuses it too
        raise errors.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    return text.encode()
