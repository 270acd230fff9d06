"""Export jobs on a real prefork worker (as bin/worker-cpu runs it): requested over the API,
emailed through the email family to a real SMTP server (logged without it), downloaded by the
owner only; cancelled halfway; SIGKILLed halfway and redelivered."""

from __future__ import annotations

import csv
import email
import email.policy
import gzip
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client

from app.models import JobRecord, JobStatus
from app.records import record_request_cancel
from tasks.exports import conf
from tasks.exports.models import ExportFile
from tasks.exports.services import export_start
from tests.exports import worker_exports
from tests.exports.probe import COLUMNS, probe_export
from tests.smtp import SmtpSink, smtp_sink
from tests.support import Worker, job_ended, running_worker, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("broker"),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the probe table is PostgreSQL's"),
]


@contextmanager
def exports_worker(
    tmp_path: Path, media: Path, *, queues: str = "exports", sink: SmtpSink | None = None
) -> Iterator[Worker]:
    with running_worker(
        queues_=queues,
        pool="prefork",
        concurrency=1,
        log_dir=tmp_path,
        env={"MEDIA_ROOT": str(media), **(sink.env() if sink else {})},
        extra_args=("--include", "tests.jobs,tests.exports.worker_exports"),
    ) as worker:
        yield worker


def started(job_id: str) -> JobRecord:
    """The job once it has written some rows."""
    return wait_for(
        lambda: JobRecord.objects.filter(
            id=job_id, status=JobStatus.STARTED, progress_message__endswith=" rows"
        ).first(),
        timeout=60,
        what=f"job {job_id} to write rows",
    )


def stored_files(media: Path) -> list[Path]:
    return sorted(path for path in (media / conf.output_dir()).rglob("*") if path.is_file())


def spooled(media: Path) -> list[Path]:
    return (
        list((media / "exports-partial").glob("*")) if (media / "exports-partial").is_dir() else []
    )


#: The link goes by email when the email family is installed, else to the log.
EMAIL_FAMILY = apps.is_installed("tasks.email")


def test_an_export_is_delivered_to_its_owner_and_downloads_for_them_only(
    development_http: None, media: Path, tmp_path: Path
) -> None:
    owner = User.objects.create_user("ann", "ann@example.com", is_staff=True)
    client = Client()
    client.force_login(owner)
    with probe_export(5000, table=worker_exports.TABLE), smtp_sink() as sink:
        answer = client.post(
            "/api/exports/",
            {"export": "probe", "format": "csv", "gzip": True},
            content_type="application/json",
        )
        assert answer.status_code == 202, answer.content
        queues = "exports,email" if EMAIL_FAMILY else "exports"
        with exports_worker(tmp_path, media, queues=queues, sink=sink) as worker:
            record = job_ended(answer.json()["id"])
            assert record.status == JobStatus.SUCCEEDED, record.error
            if EMAIL_FAMILY:
                wait_for(lambda: sink.messages, what="the email with the link")
    result = record.result or {}
    assert (result["rows"], result["format"]) == (5000, "csv.gz")
    if EMAIL_FAMILY:
        [received] = sink.messages
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert received.rcpt_tos == ["ann@example.com"]
        assert "probe" in message["Subject"]
        body = message.get_body(preferencelist=("plain",))
        assert body is not None and result["url"] in body.get_content()
    else:
        assert result["url"] in worker.output()

    link = urlparse(result["url"])
    download = client.get(link.path)
    assert download.status_code == 200
    assert download.streaming
    data = b"".join(download.streaming_content)  # type: ignore[attr-defined]
    assert len(data) == result["bytes"]
    rows = list(csv.reader(io.StringIO(gzip.decompress(data).decode(), newline="")))
    assert rows[0] == COLUMNS and len(rows) == 5001

    stranger = Client()
    stranger.force_login(User.objects.create_user("bob", is_staff=True))
    assert stranger.get(link.path).status_code == 403
    changed = link.path[:-3] + ("A" if link.path[-3] != "A" else "B") + link.path[-2:]
    assert client.get(changed).status_code == 404


def _slow_export(owner: User) -> str:
    with transaction.atomic():
        return export_start(export="probe_slow", format="csv", user=owner)


def test_a_cancelled_export_stops_within_two_seconds_and_leaves_no_file(
    media: Path, tmp_path: Path
) -> None:
    owner = User.objects.create_user("ann", is_staff=True)
    with probe_export(20_000, table=worker_exports.TABLE), exports_worker(tmp_path, media):
        job_id = _slow_export(owner)
        started(job_id)
        assert spooled(media), "the export writes its spool file"
        record_request_cancel(job_id=job_id)
        record = job_ended(job_id, timeout=2.5)
    assert record.status == JobStatus.CANCELLED
    assert not spooled(media) and not stored_files(media)
    assert not ExportFile.objects.exists()


def test_a_worker_killed_halfway_leaves_one_whole_file_after_redelivery(
    media: Path, tmp_path: Path
) -> None:
    owner = User.objects.create_user("ann", is_staff=True)
    rows = 4000
    with probe_export(rows, table=worker_exports.TABLE):
        with exports_worker(tmp_path, media) as worker:
            job_id = _slow_export(owner)
            started(job_id)
            worker.kill()
        assert len(spooled(media)) == 1 and not stored_files(media)  # the torn file is aside
        with exports_worker(tmp_path, media):
            record = job_ended(job_id, timeout=90)
    assert record.status == JobStatus.SUCCEEDED, record.error
    assert record.attempts == 2
    [stored] = stored_files(media)
    assert not spooled(media)
    written = list(csv.reader(io.StringIO(stored.read_text(), newline="")))
    assert written[0] == ["id", "label"]
    assert sorted(int(row[0]) for row in written[1:]) == list(range(1, rows + 1))
    assert ExportFile.objects.get().rows == rows == (record.result or {})["rows"]
