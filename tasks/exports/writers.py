"""Rows to files, in constant memory: CSV (PostgreSQL's COPY, or Python's csv), XLSX
(XlsxWriter's constant-memory mode) and JSON Lines, each written to an open binary file.

Spreadsheet formulas (OWASP "CSV Injection"): a text cell that starts with ``=``, ``+``, ``-``,
``@``, tab, CR or LF would run as a formula when the file is opened in Excel or LibreOffice.
In CSV such a cell gets a leading ``'``, which spreadsheets show as "this is text". On the COPY
path the check is SQL that PostgreSQL runs in C for each text column while it writes the rows
(``ascii(col) IN (...)``), so the rows still never pass through Python one value at a time;
numbers, dates, times, booleans and UUIDs cannot start a formula and are left alone, so ``-5``
stays a number. XLSX cells are always written as typed values, never formulas, and such a text
cell gets Excel's own quote-prefix style: the value reads back unchanged, and editing the cell
cannot turn it into a formula. JSON Lines is not opened by spreadsheets and is left as it is.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import IO, Any
from uuid import UUID

import xlsxwriter
from django.core.serializers.json import DjangoJSONEncoder
from psycopg import ClientCursor, Connection, sql

#: What a cell must not start with (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
#: Their character codes, as the COPY path checks them (all below "A", which it relies on).
FORMULA_CODES = tuple(sorted(ord(start) for start in FORMULA_STARTS))
#: Values of these types cannot start a formula; everything else is checked as text.
SAFE_TYPES = (int, float, Decimal, date, time, UUID)  # bool is an int, datetime a date
#: PostgreSQL types whose text cannot start a formula: integers, floats, numeric, oid, bool,
#: date, time, timestamps, uuid. (interval can: "-1 days".)
SAFE_TYPE_OIDS = frozenset({20, 21, 23, 26, 700, 701, 1700, 16, 1082, 1083, 1114, 1184, 1266, 2950})
#: One sheet holds 1,048,576 rows: the header and this many; the rest go on further sheets.
XLSX_ROWS_PER_SHEET = 1_048_575
#: Rows between two ``tick`` calls (a clock read when no progress is due): a cancel is seen
#: within PROGRESS_INTERVAL once a row arrives.
TICK_EVERY = 256

Tick = Callable[[int], None]


def cell_neutralise(value: Any) -> Any:
    """A value as it may go in a spreadsheet cell: text that would start a formula gets a
    leading ``'``; None and values of SAFE_TYPES are returned as they are."""
    if value is None or isinstance(value, SAFE_TYPES):
        return value
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def sql_inline(connection: Connection[Any], query: str, params: Any) -> str:
    """``query`` with ``params`` bound by psycopg on the client, as COPY needs (it takes no
    server-side parameters) and as a server-side cursor then runs it."""
    return ClientCursor(connection).mogrify(query, params or None)


_FORMULA_CODES = sql.SQL(", ").join(sql.Literal(code) for code in FORMULA_CODES)


def copy_statement(
    connection: Connection[Any], query: str, headers: Sequence[str], *, neutralise: bool
) -> sql.Composed:
    """``COPY (...) TO STDOUT`` of ``query`` (already inlined) as CSV with ``headers``."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM ({query}) AS t LIMIT 0")  # noqa: S608 (declared SQL)
        oids = [column.type_code for column in cursor.description or ()]
    if len(oids) != len(headers):
        raise ValueError(f"the query gives {len(oids)} columns, the export names {len(headers)}")
    names = [sql.Identifier(f"c{i}") for i in range(len(oids))]
    columns = []
    for name, oid, header in zip(names, oids, headers, strict=True):
        value = sql.SQL("t.{}").format(name)
        if neutralise and oid not in SAFE_TYPE_OIDS:
            # Byte order ("C") settles most text in one comparison: what starts with a letter or
            # beyond ASCII sorts from "A" on, above every formula start. The rest starts with an
            # ASCII character (or is empty: 0), whose code ascii() reads in place, where
            # left(text, 1) made a new string for every cell. CASE tries its WHENs in order, so
            # ascii() never sees text that starts beyond ASCII (in a multibyte encoding other
            # than UTF-8 it refuses it).
            text = sql.SQL("{}::text").format(value)
            value = sql.SQL(
                "CASE WHEN {text} COLLATE \"C\" >= 'A' THEN {text}"
                " WHEN ascii({text}) IN ({codes}) THEN '''' || {text} ELSE {text} END"
            ).format(text=text, codes=_FORMULA_CODES)
        columns.append(sql.SQL("{} AS {}").format(value, sql.Identifier(header)))
    return sql.SQL(
        "COPY (SELECT {} FROM ({}) AS t ({})) TO STDOUT (FORMAT csv, HEADER true)"
    ).format(
        sql.SQL(", ").join(columns),
        sql.SQL(query),
        sql.SQL(", ").join(names),  # type: ignore[arg-type]
    )


def csv_copy(
    connection: Connection[Any],
    query: str,
    headers: Sequence[str],
    out: IO[bytes],
    *,
    neutralise: bool,
    tick: Tick,
) -> int:
    """Stream ``query`` as CSV through PostgreSQL's COPY into ``out``; return the rows."""
    statement = copy_statement(connection, query, headers, neutralise=neutralise)
    rows = -1  # the first chunk is the header
    write = out.write
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for chunk in copy:  # one row per chunk, as libpq hands them over
            write(chunk)
            rows += 1
            if not rows % TICK_EVERY:
                tick(rows)
    return max(rows, 0)


def _ticked(rows: Iterable[Sequence[Any]], tick: Tick) -> Iterator[Sequence[Any]]:
    for count, row in enumerate(rows, 1):
        yield row
        if not count % TICK_EVERY:
            tick(count)


def csv_write(
    rows: Iterable[Sequence[Any]],
    headers: Sequence[str],
    out: IO[bytes],
    *,
    neutralise: bool,
    tick: Tick,
) -> int:
    """Rows as RFC 4180 CSV. Its CRLF line ends are what makes Python's csv module quote a
    value holding a lone CR: with ``\\n`` ends it writes that CR bare, and readers split the row."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(headers)
    count = 0
    try:
        for row in _ticked(rows, tick):
            writer.writerow([cell_neutralise(v) for v in row] if neutralise else row)
            count += 1
    finally:
        text.detach()  # leave ``out`` open for the caller
    return count


def jsonl_write(
    rows: Iterable[Sequence[Any]], headers: Sequence[str], out: IO[bytes], *, tick: Tick
) -> int:
    """One JSON object per line, keyed by the headers (dates ISO 8601, decimals as strings)."""
    encode = DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    keys = list(headers)
    count = 0
    write = out.write
    for row in _ticked(rows, tick):
        write(encode(dict(zip(keys, row, strict=True))).encode() + b"\n")
        count += 1
    return count


def xlsx_write(
    rows: Iterable[Sequence[Any]],
    headers: Sequence[str],
    path: str,
    *,
    neutralise: bool,
    tick: Tick,
    tmpdir: str | None = None,
) -> int:
    """An XLSX workbook at ``path``, each row flushed as it is written (constant memory), to
    temporary files in ``tmpdir`` (the system's by default) until the workbook is closed."""
    workbook = xlsxwriter.Workbook(
        path,
        {
            "constant_memory": True,
            "remove_timezone": True,
            "strings_to_formulas": False,
            "tmpdir": tmpdir,
        },
    )
    bold = workbook.add_format({"bold": True})
    quoted = workbook.add_format({"quote_prefix": True})
    when = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    day = workbook.add_format({"num_format": "yyyy-mm-dd"})
    sheet = None
    row_number = XLSX_ROWS_PER_SHEET
    count = 0
    for row in _ticked(rows, tick):
        if row_number == XLSX_ROWS_PER_SHEET:  # a new sheet, headed
            sheet = workbook.add_worksheet()
            sheet.write_row(0, 0, headers, bold)
            row_number = 0
        assert sheet is not None
        row_number += 1
        for column, value in enumerate(row):
            if value is None:
                continue
            if isinstance(value, bool):
                sheet.write_boolean(row_number, column, value)
            elif isinstance(value, int | float | Decimal) and _exact_in_a_double(value):
                sheet.write_number(row_number, column, float(value))
            elif isinstance(value, datetime):
                sheet.write_datetime(row_number, column, value, when)
            elif isinstance(value, date):
                sheet.write_datetime(row_number, column, value, day)
            else:
                text = value if isinstance(value, str) else str(value)
                if neutralise and text.startswith(FORMULA_STARTS):
                    sheet.write_string(row_number, column, text, quoted)
                else:
                    sheet.write_string(row_number, column, text)
        count += 1
    if sheet is None:
        workbook.add_worksheet().write_row(0, 0, headers, bold)
    workbook.close()
    return count


def _exact_in_a_double(value: float | Decimal) -> bool:
    """A spreadsheet number is a double: larger integers (ids) and NaN go in as text."""
    return math.isfinite(value) and -(2**53) < value < 2**53
