"""Export files written by ``export_run`` itself (no broker): every format, read back with
Python's csv module, openpyxl and json; formula cells neutralised; gzip the same bytes."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.models import JobRecord
from tasks.exports import writers
from tasks.exports.models import ExportFile
from tasks.exports.registry import EXPORTS, Export, export_register
from tasks.exports.services import export_run
from tests.exports.probe import COLUMNS, expected_amount, expected_label, neutralised, probe_export

pytestmark = pytest.mark.django_db(transaction=True)
#: The probe table is built by generate_series, and CSV on PostgreSQL comes through COPY.
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the probe table and COPY are PostgreSQL's"
)
ROWS = 3000


def run(
    export: str, fmt: str, *, gzip_: bool = False, filters: dict[str, Any] | None = None
) -> tuple[dict[str, Any], bytes]:
    job_id = str(uuid.uuid4())
    result = export_run(
        job_id=job_id,
        export=export,
        format=fmt,
        gzip=gzip_,
        filters=filters or {},
        token=uuid.uuid4().hex,
        owner_id=None,
    )
    record = ExportFile.objects.get(job_id=job_id)
    with default_storage.open(record.name) as stored:
        return result, stored.read()


def ooxml_unescape(text: Any) -> Any:
    return re.sub(r"_x([0-9A-F]{4})_", lambda m: chr(int(m[1], 16)), text)


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


@postgres_only
@pytest.mark.parametrize("neutralise", [True, False])
def test_csv_through_copy_round_trips_every_awkward_value(media: Path, neutralise: bool) -> None:
    with probe_export(ROWS, neutralise=neutralise) as export:
        result, data = run(export.name, "csv")
    rows = csv_rows(data)
    assert rows[0] == COLUMNS
    assert result["rows"] == len(rows) - 1 == ROWS
    for row in rows[1:]:
        row_id = int(row[0])
        label = expected_label(row_id)
        assert row[1] == (neutralised(label) if neutralise else label)
        assert Decimal(row[2]) == expected_amount(row_id, ROWS)  # "-5.00" stays a number
        assert row[4] == ("t" if row_id % 2 == 0 else "f")
        assert row[5] == ("" if row_id % 7 == 0 else f"note {row_id}")
    assert [int(row[0]) for row in rows[1:]] == list(range(1, ROWS + 1))


@postgres_only
def test_xlsx_round_trips_and_quote_prefixes_formula_text(media: Path) -> None:
    with probe_export(ROWS) as export:
        result, data = run(export.name, "xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    assert sheet is not None
    rows = list(sheet.iter_rows())
    assert [cell.value for cell in rows[0]] == COLUMNS
    assert result["rows"] == len(rows) - 1 == ROWS
    for row in rows[1:]:
        row_id = int(row[0].value)  # type: ignore[arg-type]
        label = expected_label(row_id)
        cell = row[1]
        # openpyxl reads an empty string as None, and leaves OOXML's escape of a control
        # character (\r is "_x000D_") as it is, where Excel decodes it.
        assert ooxml_unescape(cell.value or "") == label
        assert cell.data_type in ("s", "n")
        assert cell.quotePrefix == (label.startswith(("=", "+", "-", "@", "\t", "\r", "\n")))
        assert Decimal(str(row[2].value)) == expected_amount(row_id, ROWS)
        assert row[4].value is (row_id % 2 == 0)
        assert row[5].value == (None if row_id % 7 == 0 else f"note {row_id}")


@postgres_only
def test_jsonl_round_trips_values_as_json(media: Path) -> None:
    with probe_export(ROWS) as export:
        result, data = run(export.name, "jsonl")
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert result["rows"] == len(lines) == ROWS
    for line in lines:
        row_id = line["id"]
        assert list(line) == COLUMNS
        assert line["label"] == expected_label(row_id)  # JSON Lines is not neutralised
        assert Decimal(line["amount"]) == expected_amount(row_id, ROWS)
        assert line["note"] == (None if row_id % 7 == 0 else f"note {row_id}")


@postgres_only
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_gzip_output_decompresses_to_the_plain_bytes(media: Path, fmt: str) -> None:
    with probe_export(ROWS) as export:
        plain_result, plain = run(export.name, fmt)
        packed_result, packed = run(export.name, fmt, gzip_=True)
    assert gzip.decompress(packed) == plain
    assert packed_result["rows"] == plain_result["rows"] == ROWS
    assert packed_result["format"] == f"{fmt}.gz"
    assert len(packed) < len(plain)


def test_the_jobs_example_exports_the_records_its_filters_select(media: Path) -> None:
    for task, status in [("tasks.a", "dead"), ("tasks.b", "dead"), ("tasks.a", "succeeded")]:
        JobRecord.objects.create(task_name=task, queue="default", status=status, error="=HACK()")
    result, data = run("jobs", "csv", filters={"statuses": ["dead", "failed"], "task": "tasks.a"})
    rows = csv_rows(data)
    assert rows[0] == ["id", "task", "queue", "status", "attempts", "error", "owner",
                       "enqueued_at", "finished_at"]  # fmt: skip
    assert result["rows"] == 1
    assert rows[1][1:6] == ["tasks.a", "default", "dead", "0", "'=HACK()"]


def test_the_outcomes_report_counts_by_day_and_task(media: Path) -> None:
    for status in ["dead", "succeeded", "succeeded", "failed"]:
        JobRecord.objects.create(task_name="tasks.a", queue="default", status=status)
    _, data = run("job_outcomes_by_day", "jsonl", filters={"task": "tasks.a"})
    [line] = [json.loads(line) for line in data.decode().splitlines()]
    assert {k: line[k] for k in ("task", "jobs", "succeeded", "failed")} == {
        "task": "tasks.a", "jobs": 4, "succeeded": 2, "failed": 2,
    }  # fmt: skip


#: Text PostgreSQL can store (no NUL), biased to what spreadsheets and CSV parsers trip on.
cells = st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
    | st.sampled_from(["=", "+", "-", "@", "\t", "\r", "\n", '"', ",", "'", ";"]),
    max_size=40,
)


@postgres_only
@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(st.one_of(st.none(), cells), min_size=1, max_size=20))
def test_any_text_survives_the_copy_path_neutralised(media: Path, texts: list[str | None]) -> None:
    """Each value back from the CSV (COPY path) is the stored one, a ``'`` before a formula's
    first character; NULL and the empty string both read back empty."""
    table = f"exports_prop_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (n int, t text)")
        cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s)", list(enumerate(texts)))  # noqa: S608
    export = export_register(
        Export(name=table, sql=f"SELECT n, t FROM {table} ORDER BY n", allowed=lambda u: True)  # noqa: S608
    )
    try:
        result, data = run(export.name, "csv")
    finally:
        EXPORTS.pop(export.name)
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {table}")
    rows = csv_rows(data)
    assert result["rows"] == len(texts) == len(rows) - 1
    assert [row[1] for row in rows[1:]] == [neutralised(text or "") for text in texts]


@given(
    texts=st.lists(
        st.lists(st.one_of(st.none(), cells, st.integers()), min_size=1, max_size=4), max_size=20
    )
)
@example(texts=[["\r0"]])  # written bare with "\n" line ends: the reader saw two rows
def test_any_row_survives_the_cursor_path_csv(texts: list[list[Any]]) -> None:
    """The CSV written off PostgreSQL (Python's csv module) reads back to the neutralised
    values; numbers stay numbers."""
    out = io.BytesIO()
    width = max((len(row) for row in texts), default=1)
    rows = [row + [None] * (width - len(row)) for row in texts]
    count = writers.csv_write(
        rows, [f"c{i}" for i in range(width)], out, neutralise=True, tick=lambda n: None
    )
    back = csv_rows(out.getvalue())
    assert count == len(rows) == len(back) - 1
    for written, read in zip(rows, back[1:], strict=True):
        assert read == [
            "" if v is None else str(v) if isinstance(v, int) else neutralised(v) for v in written
        ]


def test_an_apps_exports_module_is_imported_when_django_starts(settings: Any) -> None:
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "tests.exports.declaring_app"]
    try:
        assert EXPORTS["declared_in_an_app"].sql == "SELECT 1 AS one"
    finally:
        EXPORTS.pop("declared_in_an_app", None)


@postgres_only
@pytest.mark.parametrize("fmt", ["xlsx", "csv", "jsonl"])
def test_an_export_that_fails_halfway_leaves_no_file_behind(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """XlsxWriter keeps the rows in temporary files until the workbook is closed: an export that
    failed or was cancelled halfway left them in /tmp (hundreds of MB for a big one)."""
    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    export_register(
        Export(
            name="fails_halfway",
            sql="SELECT i, 1 / (9000 - i) AS inverse FROM generate_series(1, 10000) AS i",
            count_first=False,
        )
    )
    try:
        with pytest.raises(psycopg.errors.DataError, match="division by zero"):
            run("fails_halfway", fmt)
    finally:
        EXPORTS.pop("fails_halfway")
    assert not ExportFile.objects.exists()
    assert list(system_tmp.iterdir()) == []
    assert [p for p in media.rglob("*") if p.is_file()] == []


def test_a_file_placed_by_an_attempt_that_died_before_recording_it_is_replaced_any_day_later(
    media: Path,
) -> None:
    """Killed after the file was stored but before its record: the redelivery removed a file of
    today's name only, so one placed the day before stayed in the storage for good, recorded
    nowhere, never pruned."""
    token, job_id = uuid.uuid4().hex, str(uuid.uuid4())
    folder = f"exports/{token}"
    default_storage.save(f"{folder}/jobs-2020-01-01.csv", ContentFile(b"the dead attempt's"))
    export_run(
        job_id=job_id, export="jobs", format="csv", gzip=False, filters={}, token=token,
        owner_id=None,
    )  # fmt: skip
    record = ExportFile.objects.get(job_id=job_id)
    assert default_storage.listdir(folder)[1] == [record.name.rsplit("/", 1)[1]]
