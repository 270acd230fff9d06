"""Exports of a million rows and more, written by a real worker on the ``exports`` queue (prefork,
concurrency 1, as bin/worker-cpu runs it) from PostgreSQL, started as the endpoint starts them
(``export_start`` in a transaction): every format complete and correct, gzip the same file, and
the pool process's peak memory (VmHWM) no larger for more rows.

Peak memory is measured per export in one worker: its pool process first writes a 100,000-row
export, and its peak is read; the peak is then started over from the process's present size
(``peak_rss_reset``) before the larger export. A fresh worker per export measures the same (the
small export's memory that stays resident is reused by the next one, and a fresh process pays
for it too) but costs a worker's start and warm shutdown each time.

Both files of a format are asked for at once: the worker writes the gzip copy while the test
reads the plain one back, so the two take the time of one.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.db import connection, transaction
from pytest_django import DjangoDbBlocker

from app.models import JobStatus
from tasks.exports.models import ExportFile
from tasks.exports.registry import Export
from tasks.exports.services import export_start
from tests.exports.probe import (
    COLUMNS,
    expected_amount,
    expected_label,
    neutralised,
    probe_export,
)
from tests.exports.worker_exports import BIG_TABLES
from tests.support import Worker, job_ended, peak_rss_mb, peak_rss_reset, running_worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.heavy,
    pytest.mark.timeout(600),  # the XLSX one writes 2.1 million rows cell by cell in Python
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("broker"),
]
MILLION = 1_000_000
SMALL = 100_000
LARGE = 2_000_000
#: The most a pool process's peak may grow from a 100,000-row export to a larger one.
GROWTH_MB = 10
#: bin/worker-cpu's own arguments.
CPU_WORKER_ARGS = ("--prefetch-multiplier", "1", "--max-memory-per-child", "1000000")
#: A file's rows as (id, label, amount, note).
Row = tuple[int, str, Decimal, str | None]


# --- tables, users, workers, jobs ---------------------------------------------------------------


@contextmanager
def module_table(blocker: DjangoDbBlocker, rows: int) -> Iterator[Export]:
    """A probe table kept for the module: made and dropped outside any test's database access
    (it is no Django model's table, so the flush after each transactional test leaves it)."""
    stack = ExitStack()
    with blocker.unblock():
        export = stack.enter_context(probe_export(rows, table=BIG_TABLES[rows]))
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {export.name}")
    try:
        yield export
    finally:
        with blocker.unblock():
            stack.close()


@pytest.fixture(scope="module")
def million(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> Iterator[Export]:
    with module_table(django_db_blocker, MILLION) as export:
        yield export


@pytest.fixture(scope="module")
def small(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> Iterator[Export]:
    with module_table(django_db_blocker, SMALL) as export:
        yield export


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("exporter", is_staff=True)  # no email: the link is logged


@contextmanager
def exports_worker(tmp_path: Path, media: Path) -> Iterator[Worker]:
    """A worker as bin/worker-cpu runs it, on the exports queue, with one process, which knows
    the probe exports (tests/exports/worker_exports.py) and writes into ``media``."""
    with running_worker(
        queues_="exports",
        pool="prefork",
        concurrency=1,
        log_dir=tmp_path,
        env={"MEDIA_ROOT": str(media)},
        extra_args=("--include", "tests.jobs,tests.exports.worker_exports", *CPU_WORKER_ARGS),
    ) as worker:
        yield worker


def started(export: Export, fmt: str, user: User, *, gzip_: bool = False) -> str:
    with transaction.atomic():
        return export_start(export=export.name, format=fmt, gzip=gzip_, filters={}, user=user)


def finished(job_id: str, *, timeout: float) -> Path:
    """The file of the job, once it succeeded."""
    record = job_ended(job_id, timeout=timeout)
    assert record.status == JobStatus.SUCCEEDED, record.error
    stored = ExportFile.objects.get(job_id=job_id)
    assert record.result is not None and record.result["rows"] == stored.rows
    path = Path(default_storage.path(stored.name))
    assert path.stat().st_size == stored.bytes
    return path


def peak_of_small_export(worker: Worker, export: Export, fmt: str, user: User) -> float:
    """The peak RSS (MB) of the worker's pool process while writing ``export`` (the first one
    it writes); then its peak starts over, for the next export."""
    finished(started(export, fmt, user), timeout=120)
    peak = peak_rss_mb(worker)
    peak_rss_reset(worker)
    return peak


# --- reading the files back ---------------------------------------------------------------------


def csv_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8", newline="") as text:
        reader = csv.reader(text)
        assert next(reader) == COLUMNS
        for row_id, label, amount, _, _, note in reader:
            yield int(row_id), label, Decimal(amount), note or None  # NULL: an empty field


def jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as text:
        for line in text:
            obj = json.loads(line)
            assert list(obj) == COLUMNS, obj
            yield obj["id"], obj["label"], Decimal(obj["amount"]), obj["note"]


def ooxml_unescape(text: str) -> str:
    """OOXML's escape of a control character (\\r is "_x000D_"), which openpyxl leaves."""
    return re.sub(r"_x([0-9A-F]{4})_", lambda m: chr(int(m[1], 16)), text)


def xlsx_rows(path: Path) -> Iterator[Row]:
    """Streamed by openpyxl (read-only mode), every sheet, each headed."""
    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        for sheet in workbook.worksheets:
            rows = sheet.iter_rows(values_only=True)
            assert list(next(rows)) == COLUMNS
            for row_id, label, amount, _, _, note in rows:
                text = ooxml_unescape(label) if isinstance(label, str) else ""  # "" reads as None
                yield int(row_id), text, Decimal(str(amount)), note  # type: ignore[arg-type]
    finally:
        workbook.close()


READERS: dict[str, Callable[[Path], Iterator[Row]]] = {
    "csv": csv_rows,
    "jsonl": jsonl_rows,
    "xlsx": xlsx_rows,
}


def label_in(fmt: str) -> Callable[[int], str]:
    """The label a file holds: CSV neutralises formula text; XLSX quote-prefixes it (the value
    reads back unchanged) and JSON Lines leaves it."""
    if fmt == "csv":
        return lambda row_id: neutralised(expected_label(row_id))
    return expected_label


def checked(rows: Iterable[Row], *, total: int, label: Callable[[int], str]) -> dict[str, Any]:
    """Every row once, in order, as the probe table holds it; the file's count and sums."""
    count = id_sum = notes = 0
    amount_sum = Decimal(0)
    for row_id, text, amount, note in rows:
        count += 1
        assert row_id == count, f"row {count} has id {row_id}"
        assert text == label(row_id), (row_id, text)
        assert amount == expected_amount(row_id, total), (row_id, amount)
        assert note == (None if row_id % 7 == 0 else f"note {row_id}"), (row_id, note)
        id_sum += row_id
        amount_sum += amount
        notes += note is not None
    return {"count": count, "id_sum": id_sum, "amount_sum": amount_sum, "notes": notes}


def table_sums(export: Export) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), sum(id), sum(amount), count(note) FROM {export.name}"  # noqa: S608
        )
        count, id_sum, amount_sum, notes = cursor.fetchone()
    return {"count": count, "id_sum": id_sum, "amount_sum": amount_sum, "notes": notes}


def same_stream(a: Any, b: Any) -> bool:
    while True:
        chunk = a.read(1 << 20)
        if chunk != b.read(1 << 20):
            return False
        if not chunk:
            return True


def same_after_gunzip(packed: Path, plain: Path, fmt: str, tmp_path: Path) -> bool:
    """``packed`` decompresses to ``plain``'s bytes; for XLSX, to a workbook whose every part
    is ``plain``'s but its creation time (docProps/core.xml): the same sheets, byte for byte."""
    if fmt != "xlsx":
        with gzip.open(packed, "rb") as a, plain.open("rb") as b:
            return same_stream(a, b)
    unpacked = tmp_path / "unpacked.xlsx"
    with gzip.open(packed, "rb") as a, unpacked.open("wb") as b:
        while chunk := a.read(1 << 20):
            b.write(chunk)
    with zipfile.ZipFile(unpacked) as a, zipfile.ZipFile(plain) as b:
        names = a.namelist()
        if sorted(names) != sorted(b.namelist()) or not any("worksheets" in n for n in names):
            return False
        for name in names:
            if name != "docProps/core.xml":
                with a.open(name) as one, b.open(name) as other:
                    if not same_stream(one, other):
                        return False
    return True


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "xlsx"])
def test_a_million_rows_come_out_whole_gzip_alike_and_in_constant_memory(
    fmt: str,
    million: Export,
    small: Export,
    staff: User,
    media: Path,
    tmp_path: Path,
) -> None:
    timeout = 400 if fmt == "xlsx" else 120  # XLSX is written cell by cell, in Python
    with exports_worker(tmp_path, media) as worker:
        small_peak = peak_of_small_export(worker, small, fmt, staff)
        plain_job = started(million, fmt, staff)
        packed_job = started(million, fmt, staff, gzip_=True)
        plain = finished(plain_job, timeout=timeout)
        reading = time.monotonic()
        sums = checked(READERS[fmt](plain), total=MILLION, label=label_in(fmt))
        read_s = time.monotonic() - reading
        packed = finished(packed_job, timeout=timeout)
        big_peak = peak_rss_mb(worker)
    assert sums == table_sums(million)
    assert sums["id_sum"] == MILLION * (MILLION + 1) // 2
    assert ExportFile.objects.get(job_id=plain_job).rows == MILLION
    assert ExportFile.objects.get(job_id=packed_job).rows == MILLION
    assert same_after_gunzip(packed, plain, fmt, tmp_path)
    assert packed.stat().st_size < plain.stat().st_size
    growth = big_peak - small_peak
    print(
        f"\n{fmt}: read back in {read_s:.1f}s; pool peak {small_peak:.1f} MB for {SMALL:,} rows, "
        f"{big_peak:.1f} MB for {MILLION:,} (plain and gzip): {growth:+.1f} MB"
    )
    assert growth < GROWTH_MB


def test_two_million_rows_of_csv_take_no_more_memory_than_a_hundred_thousand(
    small: Export, staff: User, media: Path, tmp_path: Path
) -> None:
    with (
        probe_export(LARGE, table=BIG_TABLES[LARGE]) as large,
        exports_worker(tmp_path, media) as worker,
    ):
        small_peak = peak_of_small_export(worker, small, "csv", staff)
        job = started(large, "csv", staff)
        finished(job, timeout=120)
        large_peak = peak_rss_mb(worker)
    assert ExportFile.objects.get(job_id=job).rows == LARGE
    growth = large_peak - small_peak
    print(
        f"\ncsv: pool peak {small_peak:.1f} MB for {SMALL:,} rows, "
        f"{large_peak:.1f} MB for {LARGE:,}: {growth:+.1f} MB"
    )
    assert growth < GROWTH_MB
