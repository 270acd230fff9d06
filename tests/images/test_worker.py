"""Image jobs on a real prefork worker (as bin/worker-cpu runs it): variants from an upload,
bad files, and batches of 50 with a callback, a SIGKILLed worker included."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from PIL import Image

from app.enqueue import job_enqueue
from app.models import Batch, BatchMember, JobRecord, JobStatus, OutboxMessage
from app.outbox import outbox_relay
from tasks.images.services import images_batch_start
from tests import jobs  # noqa: F401  (registers the batch callback used here)
from tests.images.pictures import BAD_MESSAGES, bad_file, encode, photo
from tests.support import (
    Broker,
    Worker,
    job_ended,
    peak_rss_mb,
    read_events,
    running_worker,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("broker")]
CALLBACK = "tasks.images.batch_probe_for_tests"


@contextmanager
def images_worker(tmp_path: Path, media: Path) -> Iterator[Worker]:
    with running_worker(
        queues_="images",
        pool="prefork",
        concurrency=2,
        log_dir=tmp_path,
        env={"DJANGO_SETTINGS_MODULE": "config.settings", "MEDIA_ROOT": str(media)},
        extra_args=("--prefetch-multiplier", "1", "--max-memory-per-child", "1000000"),
    ) as worker:
        yield worker


def test_an_upload_becomes_its_variants(
    development_http: None, media: Path, tmp_path: Path
) -> None:
    response = Client().post(
        "/api/images/", {"file": _upload(encode(photo(2000, 1500), quality=90))}
    )
    assert response.status_code == 202, response.content
    with images_worker(tmp_path, media):
        record = job_ended(response.json()["id"])
    assert record.status == JobStatus.SUCCEEDED, record.error
    result: dict[str, Any] = record.result or {}
    expected = {"thumb": (200, 200, "JPEG"), "medium": (800, 600, "WEBP")}
    expected["large"] = (1600, 1200, "JPEG")
    assert set(result) == set(expected)
    for name, (width, height, fmt) in expected.items():
        variant = result[name]
        assert (variant["width"], variant["height"], variant["format"]) == (width, height, fmt)
        assert variant["url"] == f"/media/images/{record.id}/{name}.{fmt.lower()[:4]}".replace(
            "jpeg", "jpg"
        )
        path = media / variant["url"].removeprefix("/media/")
        assert path.stat().st_size == variant["bytes"]
        with Image.open(path) as image:
            assert (image.format, image.size) == (fmt, (width, height))


def _upload(data: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("photo.jpg", data, content_type="image/jpeg")


def test_bad_files_fail_for_good_at_once_and_the_worker_keeps_going(
    media: Path, tmp_path: Path
) -> None:
    """Written to storage directly (the endpoint would refuse most at the door)."""
    names = sorted(BAD_MESSAGES)
    for name in names:
        (media / f"{name}.img").write_bytes(bad_file(name))
    (media / "good.jpg").write_bytes(encode(photo()))
    with transaction.atomic():
        bad = {
            name: job_enqueue("tasks.images.process", kwargs={"source": f"{name}.img"})
            for name in names
        }
    with images_worker(tmp_path, media) as worker:
        records = {name: job_ended(job_id) for name, job_id in bad.items()}
        with transaction.atomic():
            good = job_enqueue("tasks.images.process", kwargs={"source": "good.jpg"})
        assert job_ended(good).status == JobStatus.SUCCEEDED
        assert worker.ping() and worker.process.poll() is None
        peak = peak_rss_mb(worker)
    for name, record in records.items():
        assert (record.status, record.attempts) == (JobStatus.DEAD, 1), name
        assert record.error.startswith("ImageInvalid") or record.error.startswith(
            "ImageTooLarge"
        ), record.error
        assert BAD_MESSAGES[name] in record.error, (name, record.error)
    assert peak < 400, f"a pool process reached {peak:.0f} MB"


def batch_of_50(media: Path, events: Path) -> tuple[str, list[str], set[str]]:
    """50 sources, every tenth corrupt (5); returns the batch id, job ids and corrupt ids."""
    sources = []
    for i in range(50):
        name = f"batch/{i:02d}.jpg"
        (media / name).parent.mkdir(exist_ok=True)
        data = encode(photo(400, 300, seed=i))
        if i % 10 == 3:
            data = bad_file("truncated JPEG") if i % 20 == 3 else bad_file("fake PNG")
        (media / name).write_bytes(data)
        sources.append(name)
    with transaction.atomic():
        batch_id, job_ids = images_batch_start(
            sources=sources, callback=CALLBACK, callback_kwargs={"path": str(events)}
        )
    return batch_id, job_ids, {job_ids[i] for i in range(3, 50, 10)}


def callback_ran(events: Path) -> list[dict[str, Any]]:
    outbox_relay()  # what the periodic relay does, had a worker died before publishing
    return [e for e in read_events(events) if e["event"] == "batch ended"]


def check_batch(batch_id: str, job_ids: list[str], corrupt: set[str], events: Path) -> None:
    [call] = wait_for(lambda: callback_ran(events), timeout=90, what="the batch's callback")
    assert call["batch_id"] == batch_id
    assert set(call["failed"]) == corrupt
    assert set(call["succeeded"]) == set(job_ids) - corrupt
    records = {str(r.id): r for r in JobRecord.objects.filter(id__in=job_ids)}
    assert {records[i].status for i in corrupt} == {JobStatus.DEAD}
    assert all("ImageInvalid" in records[i].error for i in corrupt)
    assert {records[i].status for i in set(job_ids) - corrupt} == {JobStatus.SUCCEEDED}
    assert len(OutboxMessage.objects.filter(task_name=CALLBACK)) == 1
    assert Batch.objects.get(id=batch_id).remaining == 0


@pytest.mark.slow
def test_a_batch_of_50_with_5_corrupt_calls_back_once_with_both_lists(
    media: Path, tmp_path: Path, events: Path
) -> None:
    batch_id, job_ids, corrupt = batch_of_50(media, events)
    with images_worker(tmp_path, media):
        check_batch(batch_id, job_ids, corrupt, events)
        wait_for(lambda: JobRecord.objects.filter(task_name=CALLBACK, status="succeeded"))
    records = JobRecord.objects.filter(id__in=corrupt)
    assert {r.attempts for r in records} == {1}  # no retries


@pytest.mark.slow
def test_a_batch_survives_a_sigkilled_worker(
    media: Path, tmp_path: Path, events: Path, broker: Broker
) -> None:
    batch_id, job_ids, corrupt = batch_of_50(media, events)
    with images_worker(tmp_path, media) as first:
        wait_for(
            lambda: (
                BatchMember.objects.filter(batch_id=batch_id).exclude(state="pending").count() >= 20
            ),
            timeout=60,
            what="20 members to end",
        )
        first.kill()
    with images_worker(tmp_path, media):
        check_batch(batch_id, job_ids, corrupt, events)
        wait_for(lambda: JobRecord.objects.filter(task_name=CALLBACK, status="succeeded"))
    assert len(callback_ran(events)) == 1
    assert {r.attempts for r in JobRecord.objects.filter(id__in=corrupt)} <= {1, 2}
