"""A table of awkward values for export tests and benchmarks, filled by PostgreSQL itself, and
an SQL export over it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from django.db import connection

from tasks.exports.registry import EXPORTS, Export, export_register

#: Text cells that break naive writers: separators, quotes, line breaks, non-ASCII, formulas.
AWKWARD = [
    "plain",
    "unicode ✓ ünïcödé 漢字 🙂",
    "comma, inside",
    'quote " inside',
    "new\nline",
    "carriage\r\nreturn",
    "=1+1",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\ttab first",
    "\rcr first",
    "\nlf first",
    "",
    "'already quoted",
    "  leading space",
    # Around the COPY path's first test (byte order against "A") and its second (ascii()).
    "€ non-ASCII first",
    "A at the edge",
    "?just below @",
    "9 digit first",
]
COLUMNS = ["id", "label", "amount", "created", "flag", "note"]


@contextmanager
def probe_export(rows: int, *, neutralise: bool = True, table: str = "") -> Iterator[Export]:
    """A table of ``rows`` rows (``id`` 1..rows; ``label`` cycles through AWKWARD; ``amount``
    runs negative to positive; ``note`` is NULL every seventh row) and an export of it."""
    table = table or f"exports_probe_{uuid.uuid4().hex[:8]}"
    labels = ", ".join(_literal(text) for text in AWKWARD)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, label text, amount numeric(14, 2),"
            " created timestamptz, flag boolean, note text)"
        )
        label = f"(ARRAY[{labels}])[1 + i % {len(AWKWARD)}]"
        amount = f"(i - {rows // 2}) * 0.25"
        created = "timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second'"
        note = "CASE WHEN i % 7 = 0 THEN NULL ELSE 'note ' || i END"
        cursor.execute(
            f"INSERT INTO {table} SELECT i, {label}, {amount}, {created}, i % 2 = 0, {note}"  # noqa: S608
            f" FROM generate_series(1, {rows}) AS i"
        )
    export = export_register(
        Export(
            name=table,
            sql=f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY id",  # noqa: S608
            neutralise=neutralise,
            allowed=lambda user: True,
        )
    )
    try:
        yield export
    finally:
        EXPORTS.pop(export.name, None)
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")


def _literal(text: str) -> str:
    return (
        "E'"
        + text.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
        + "'"
    )


def expected_label(row_id: int) -> str:
    return AWKWARD[row_id % len(AWKWARD)]


def expected_amount(row_id: int, rows: int) -> Decimal:
    return (row_id - rows // 2) * Decimal("0.25")


def neutralised(text: str) -> str:
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r", "\n")) else text
