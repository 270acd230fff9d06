"""Exports: validate a request, run the export in a job, deliver the link, prune old files.

The file is written to a spool file named after the job, then moved into default storage under
``<EXPORTS_OUTPUT_DIR>/<random token>/<export>-<date>.<ext>`` only when complete, and recorded
(``ExportFile``) in the same transaction that enqueues the email. A job killed while writing
leaves only its spool file, which its redelivery overwrites; one killed after the move but
before the record finds the stored file in its token's folder (the token is in the message; the
file's date may be an earlier day's) and removes it before writing again; one killed after the
record returns the recorded file.
"""

from __future__ import annotations

import gzip
import logging
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from celery import current_app
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone
from pydantic import TypeAdapter, ValidationError

from app.downloads import download_expiry_default, download_link
from app.enqueue import job_enqueue
from app.errors import PermanentError
from app.progress import progress
from tasks.exports import conf, writers
from tasks.exports.models import ExportFile
from tasks.exports.registry import EXPORTS, OPERATORS, Export

logger = logging.getLogger(__name__)

#: Format -> file extension.
FORMATS = {"csv": "csv", "xlsx": "xlsx", "jsonl": "jsonl"}
#: The most values an ``in`` filter takes.
MAX_IN_VALUES = 1000
#: Rows fetched per round trip on the cursor paths.
FETCH_SIZE = 2000
EMAIL_TASK = "tasks.email.send"


class ExportInvalid(ValueError):
    """The request names no declared export, format or filter, or a filter value is wrong."""


class ExportForbidden(PermissionError):
    """The export's ``allowed`` refuses the requesting user."""


def export_get(*, name: str) -> Export:
    try:
        return EXPORTS[name]
    except KeyError:
        raise ExportInvalid(
            f"export: no export is named {name!r}; the exports are {sorted(EXPORTS)}"
        ) from None


def filters_parse(*, export: Export, values: Mapping[str, Any]) -> dict[str, Any]:
    """The request's filter values, checked against what ``export`` declares and converted to
    the declared types (a naive datetime is taken in the project's time zone)."""
    unknown = sorted(set(values) - set(export.filters))
    if unknown:
        raise ExportInvalid(
            f"filters.{unknown[0]}: export {export.name!r} has no such filter; "
            f"it takes {sorted(export.filters)}"
        )
    parsed: dict[str, Any] = {}
    for name, spec in export.filters.items():
        value = values.get(name)
        if value is None:
            if spec.required:
                raise ExportInvalid(f"filters.{name}: required")
            continue
        kind: Any = list[spec.type] if spec.op == "in" else spec.type  # type: ignore[name-defined]
        try:
            value = TypeAdapter(kind).validate_python(value)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = "".join(f"[{part}]" for part in error["loc"])
            raise ExportInvalid(f"filters.{name}{where}: {error['msg']}") from None
        if spec.op == "in" and not 0 < len(value) <= MAX_IN_VALUES:
            raise ExportInvalid(f"filters.{name}: give 1 to {MAX_IN_VALUES} values")
        parsed[name] = _aware(value)
    return parsed


def _aware(value: Any) -> Any:
    if isinstance(value, list):
        return [_aware(item) for item in value]
    if isinstance(value, datetime) and timezone.is_naive(value):
        return timezone.make_aware(value)
    return value


def export_query(*, export: Export, values: Mapping[str, Any]) -> tuple[str, Any, list[str]]:
    """The export's SQL, its parameters and its headers (empty for a SQL report: its columns'
    names are read when it runs)."""
    if export.queryset is None:
        return export.sql, {name: values.get(name) for name in export.filters}, []
    queryset = export.queryset()
    for name, value in values.items():
        spec = export.filters[name]
        queryset = queryset.filter(**{f"{spec.field}__{OPERATORS[spec.op]}": value})
    query, params = queryset.values_list(*export.columns.values()).query.sql_with_params()
    return query, params, list(export.columns)


def export_start(
    *,
    export: str,
    format: str,
    gzip: bool = False,
    filters: Mapping[str, Any] | None = None,
    user: AbstractBaseUser | AnonymousUser,
) -> str:
    """Check the request and enqueue the export job for ``user`` (its owner, unless anonymous),
    in the caller's transaction; return the job id. ExportInvalid names what is wrong,
    ExportForbidden says the user may not; either way nothing is enqueued."""
    spec = export_get(name=export)
    if not spec.allowed(user):
        raise ExportForbidden(f"export {export!r} is not open to this user")
    owner = user if isinstance(user, User) and user.is_authenticated else None
    if format not in FORMATS:
        raise ExportInvalid(f"format: {format!r} is not one of {sorted(FORMATS)}")
    filters_parse(export=spec, values=filters or {})
    kwargs = {
        "export": export,
        "format": format,
        "gzip": bool(gzip),
        "filters": dict(filters or {}),
        # The stored file's unguessable folder, fixed in the message so a redelivery finds it.
        "token": secrets.token_urlsafe(18),
        "owner_id": owner.pk if owner is not None else None,
    }
    with transaction.atomic():
        return job_enqueue("tasks.exports.run", kwargs=kwargs, owner=owner)


def export_run(
    *,
    job_id: str,
    export: str,
    format: str,
    gzip: bool,
    filters: Mapping[str, Any],
    token: str,
    owner_id: int | None,
) -> dict[str, Any]:
    """Write the export, store it, record it and deliver its link; return the job's result."""
    done = ExportFile.objects.filter(job_id=job_id).first()
    if done is not None:  # redelivered after it was recorded: the link was sent already
        return _result(done)
    try:
        spec = export_get(name=export)
        values = filters_parse(export=spec, values=filters)
        if format not in FORMATS or not token.replace("-", "").replace("_", "").isalnum():
            raise ExportInvalid(f"format {format!r} or token {token!r} is not valid")
    except ExportInvalid as exc:
        raise PermanentError(str(exc)) from None
    extension = FORMATS[format] + (".gz" if gzip else "")
    folder = f"{conf.output_dir()}/{token}"
    _folder_clear(folder)  # what an attempt that died before recording it placed, any day
    name = f"{folder}/{export}-{timezone.localdate():%Y-%m-%d}.{extension}"
    spool = conf.spool_dir() / f"{job_id}.part"
    spool.parent.mkdir(parents=True, exist_ok=True)
    try:
        rows = _write(spec=spec, values=values, format=format, gzip=gzip, spool=spool)
        with transaction.atomic():
            saved = default_storage.save(name, _SpoolFile(spool))
            record = ExportFile.objects.create(
                job_id=job_id,
                export=export,
                format=format + (".gz" if gzip else ""),
                name=saved,
                rows=rows,
                bytes=default_storage.size(saved),
                owner_id=owner_id,
                expires_at=download_expiry_default(),
            )
            _deliver(record=record)
    finally:
        spool.unlink(missing_ok=True)
    return _result(record)


def _folder_clear(folder: str) -> None:
    """Delete the files in ``folder`` of default storage (the folder is one job's alone)."""
    try:
        _folders, files = default_storage.listdir(folder)
    except FileNotFoundError:  # the file system storage, when nothing was placed
        return
    for file in files:
        default_storage.delete(f"{folder}/{file}")


def _write(*, spec: Export, values: Mapping[str, Any], format: str, gzip: bool, spool: Path) -> int:
    query, params, headers = export_query(export=spec, values=values)
    with _reader() as reader, _output(spool, gzip=gzip) as out:
        postgres = reader.vendor == "postgresql"
        if postgres:
            query, params = writers.sql_inline(reader.connection, query, params), None
        total = _count(reader, query, params) if spec.count_first else None
        tick = _ticker(total)
        if format == "csv" and postgres:
            if not headers:
                headers = _columns(reader, query)
            return writers.csv_copy(
                reader.connection, query, headers, out, neutralise=spec.neutralise, tick=tick
            )
        with _rows(reader, query, params) as (rows, columns):
            headers = headers or columns
            if format == "csv":
                return writers.csv_write(rows, headers, out, neutralise=spec.neutralise, tick=tick)
            if format == "jsonl":
                return writers.jsonl_write(rows, headers, out, tick=tick)
            workbook = spool.with_suffix(".xlsx")  # XlsxWriter writes a file it can seek in
            # Its rows go to temporary files first (constant memory), removed only when the
            # workbook is closed: here, not in /tmp, so a cancel, an error or a kill leaves
            # them where this ``finally`` or the spool's prune removes them.
            scratch = spool.with_suffix(".xlsx-rows")
            scratch.mkdir(exist_ok=True)
            try:
                count = writers.xlsx_write(
                    rows,
                    headers,
                    str(workbook),
                    neutralise=spec.neutralise,
                    tick=tick,
                    tmpdir=str(scratch),
                )
                with workbook.open("rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
            finally:
                workbook.unlink(missing_ok=True)
                shutil.rmtree(scratch, ignore_errors=True)
            return count


@contextmanager
def _reader() -> Iterator[BaseDatabaseWrapper]:
    """A connection of its own for reading: the export's long statement (COPY, a cursor's
    transaction) must not hold the connection that writes the job's progress."""
    reader = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        reader.ensure_connection()
        yield reader
    finally:
        reader.close()


@contextmanager
def _output(spool: Path, *, gzip: bool) -> Iterator[IO[bytes]]:
    with spool.open("wb", buffering=1 << 20) as raw:
        if not gzip:
            yield raw
            return
        # mtime 0: the same rows give the same bytes; level 6 is gzip's own default.
        with _gzip_open(raw) as packed:
            yield packed  # type: ignore[misc]  # a GzipFile is a binary file


def _gzip_open(raw: IO[bytes]) -> gzip.GzipFile:
    return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)


def _count(reader: BaseDatabaseWrapper, query: str, params: Any) -> int:
    with reader.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM ({query}) AS t", params)  # noqa: S608
        return int(cursor.fetchone()[0])


def _columns(reader: BaseDatabaseWrapper, query: str) -> list[str]:
    with reader.cursor() as cursor:
        cursor.execute(f"SELECT * FROM ({query}) AS t LIMIT 0")  # noqa: S608
        return [column.name for column in cursor.description]


@contextmanager
def _rows(
    reader: BaseDatabaseWrapper, query: str, params: Any
) -> Iterator[tuple[Iterator[Sequence[Any]], list[str]]]:
    """The rows, read in batches, and the columns' names: through a server-side cursor on
    PostgreSQL (in a transaction of the reader's own), a plain cursor elsewhere."""
    with ExitStack() as stack:
        if reader.vendor == "postgresql":
            stack.enter_context(reader.connection.transaction())
            cursor = stack.enter_context(
                reader.connection.cursor(name=f"export_{secrets.token_hex(6)}")
            )
            cursor.execute(query)
        else:
            cursor = stack.enter_context(reader.cursor())
            cursor.execute(query, params)

        def rows() -> Iterator[Sequence[Any]]:
            while batch := cursor.fetchmany(FETCH_SIZE):
                yield from batch

        yield rows(), [column[0] for column in cursor.description]


def _ticker(total: int | None) -> writers.Tick:
    def tick(rows: int) -> None:
        if total:
            progress(min(99.0, 100 * rows / total), f"{rows:,} of {total:,} rows")
        else:
            progress(0, f"{rows:,} rows")

    return tick


class _SpoolFile(File):  # type: ignore[type-arg]
    """The finished spool file: FileSystemStorage moves a file that has a path (a rename on the
    same filesystem) instead of copying it; other storages upload it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.open("rb"), name=path.name)
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


def _deliver(*, record: ExportFile) -> None:
    """Email the owner the link through the email family when it is installed (by task name:
    families do not import each other); otherwise, or with no address, log it."""
    url = download_link(name=record.name, owner_id=record.owner_id, expires_at=record.expires_at)
    owner = record.owner
    if owner is not None and owner.email and EMAIL_TASK in current_app.tasks:
        job_enqueue(
            EMAIL_TASK,
            kwargs={
                "template": "export_ready",
                "to": [owner.email],
                "context": {
                    "export": record.export,
                    "rows": record.rows,
                    "url": url,
                    "expires_at": record.expires_at.isoformat(),
                },
                "cc": [],
                "bcc": [],
                "reply_to": [],
                "attachments": [],
                "from_email": None,
            },
            owner=owner,
        )
    else:
        logger.info("export %s ready: %s rows, %s (until %s)", record.export, record.rows, url,
                    record.expires_at)  # fmt: skip


def _result(record: ExportFile) -> dict[str, Any]:
    return {
        "rows": record.rows,
        "bytes": record.bytes,
        "format": record.format,
        "url": download_link(
            name=record.name, owner_id=record.owner_id, expires_at=record.expires_at
        ),
        "expires_at": record.expires_at.isoformat(),
    }


def exports_prune(*, now: datetime | None = None) -> int:
    """Remove expired files and their records, and spool files left by jobs that died and were
    not redelivered. Returns how many files were removed."""
    now = now or timezone.now()
    removed = 0
    for record in ExportFile.objects.filter(expires_at__lt=now).iterator():
        default_storage.delete(record.name)
        record.delete()
        removed += 1
    cutoff = (now - conf.spool_max_age()).timestamp()
    spool = conf.spool_dir()
    if spool.is_dir():
        for path in spool.iterdir():
            if path.stat().st_mtime < cutoff:
                if path.is_dir():  # an XLSX export's temporary rows
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed += 1
    return removed
