"""``python -m tests.bench.exports MODE ROWS`` (``DATABASE_URL``: a fresh bench database): the
probe table of tests/exports/probe.py with ROWS rows, then one timed pass of MODE over its export
(``SELECT id, label, amount, created, flag, note ... ORDER BY id``) into a local file; prints
RESULT {...}.

- ``bare-copy``: the baseline: ``COPY (the export's SELECT) TO STDOUT (FORMAT csv, HEADER)``
  through psycopg 3's ``cursor.copy``, each chunk written to the file as it comes;
- ``csv-copy``: ``writers.csv_copy``, the family's COPY path, formula cells neutralised in SQL,
  each pass after a bare COPY pass (``bare_seconds``: a cross-check in the same process, on the
  same table); and, timed apart (``export_run_seconds``), ``export_run`` of the same export as
  CSV: the whole job (a count first, for progress; COPY; the file moved into storage, recorded);
- ``csv-cursor``: ``writers.csv_write`` over a server-side cursor (``services._rows``, as the
  family reads rows for the other formats), neutralised in Python: the path off PostgreSQL;
- ``jsonl``, ``xlsx``: ``writers.jsonl_write``, ``writers.xlsx_write`` over the same cursor;
- ``rss``: ``export_run`` as CSV, as a worker runs the job; ``peak_rss_mb`` is this process's
  peak resident memory during it (VmHWM, started over once Django is set up and the table made).

The COPY modes, a second or so per million rows, make ``PASSES`` passes and keep the fastest.

The table is vacuumed (frozen, analysed) and read once, untimed, so that every mode finds it
cached with its hint bits set. RESULT: ``seconds`` (the timed pass), ``cpu_seconds`` (this
process's), ``db_cpu_seconds`` (the PostgreSQL server's, other clients included), ``rows``,
``bytes`` (the file's); ``rss`` adds ``peak_rss_mb``.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.memory import peak_reset, peak_rss_mb

RESULT_PREFIX = "RESULT "
#: Passes of the COPY modes (a second or so each) per run; the fastest counts.
PASSES = 5
MODES = ("bare-copy", "csv-copy", "csv-cursor", "jsonl", "xlsx", "rss")


def main(mode: str, rows: int) -> None:
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    with tempfile.TemporaryDirectory(prefix="bench-exports-") as tmp:
        os.environ["MEDIA_ROOT"] = tmp  # export_run's spool and storage
        import django

        django.setup()
        from django.db import connection

        from tests.exports.probe import probe_export

        with probe_export(rows) as export:
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM (FREEZE, ANALYZE) {export.name}")
                cursor.execute(f"SELECT count(*) FROM ({export.sql}) AS t")  # noqa: S608
            result = run(mode, export.name, export.sql, Path(tmp))
        if result["rows"] != rows:
            raise SystemExit(f"{mode} wrote {result['rows']} rows, not {rows}")
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run(mode: str, name: str, query: str, tmp: Path) -> dict[str, Any]:
    from tasks.exports import services, writers

    out_path = tmp / f"out.{mode}"

    def tick(rows: int) -> None:
        pass

    if mode in ("rss", "csv-copy"):
        job = time_export_run(name)
        if mode == "rss":
            return {"rows": job["rows"], "peak_rss_mb": job["peak_rss_mb"]}
    with services._reader() as reader:  # a connection of its own, as export_run reads
        raw = reader.connection
        columns = services._columns(reader, query)

        def bare_copy() -> int:
            with (
                out_path.open("wb", buffering=1 << 20) as out,
                raw.cursor() as cursor,
                cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)") as copy,
            ):
                for chunk in copy:
                    out.write(chunk)
            return -1  # counted afterwards, untimed

        def csv_copy() -> int:
            with out_path.open("wb", buffering=1 << 20) as out:
                return writers.csv_copy(raw, query, columns, out, neutralise=True, tick=tick)

        def cursor_writer() -> int:
            with services._rows(reader, query, None) as (rows, headers):
                if mode == "xlsx":
                    path = str(out_path)
                    return writers.xlsx_write(rows, headers, path, neutralise=True, tick=tick)
                with out_path.open("wb", buffering=1 << 20) as out:
                    if mode == "jsonl":
                        return writers.jsonl_write(rows, headers, out, tick=tick)
                    return writers.csv_write(rows, headers, out, neutralise=True, tick=tick)

        passes: dict[str, Callable[[], int]] = {"bare-copy": bare_copy, "csv-copy": csv_copy}
        write = passes.get(mode, cursor_writer)
        best: tuple[float, float, float, int] | None = None
        bare_best = float("inf")
        for _ in range(PASSES if mode in passes else 1):
            if mode == "csv-copy":  # the cross-check: a bare COPY before each pass
                bare_best = min(bare_best, timed(bare_copy)[0])
            sample = timed(write)
            if best is None or sample[0] < best[0]:
                best = sample
    assert best is not None
    seconds, cpu, db_cpu, count = best
    if mode == "bare-copy":
        with out_path.open(encoding="utf-8", newline="") as text:
            count = sum(1 for _ in csv.reader(text)) - 1  # less the header
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "db_cpu_seconds": db_cpu,
        "rows": count,
        "bytes": out_path.stat().st_size,
    }
    if mode == "csv-copy":
        result["export_run_seconds"] = job["seconds"]
        result["bare_seconds"] = bare_best
    return result


def timed(write: Callable[[], int]) -> tuple[float, float, float, int]:
    """One pass of ``write``: its seconds, this process's and the server's CPU seconds, rows."""
    from tests.bench import postgres

    db_cpu = postgres.server_cpu_seconds()
    started, cpu = time.perf_counter(), time.process_time()
    count = write()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return seconds, cpu, postgres.server_cpu_seconds() - db_cpu, count


def time_export_run(name: str) -> dict[str, Any]:
    """``export_run`` of export ``name`` as CSV: its seconds, rows and this process's peak."""
    from tasks.exports.services import export_run

    peak_reset()
    started = time.perf_counter()
    result = export_run(
        job_id=str(uuid.uuid4()),
        export=name,
        format="csv",
        gzip=False,
        filters={},
        token=uuid.uuid4().hex,
        owner_id=None,
    )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": result["rows"], "peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
