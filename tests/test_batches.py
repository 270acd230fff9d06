"""app/batches.py on the database: each member counts once, the last enqueues the callback once,
in the transaction that ends the member's record (app.jobs.Job's hooks)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import transaction

from app.batches import BATCH_HEADER, batch_member_end, batch_start
from app.enqueue import EnqueueError
from app.models import Batch, BatchMember, JobRecord, JobStatus, OutboxMessage
from tests import jobs
from tests.support import Broker, read_events, running_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
CALLBACK = jobs.accept_anything_tracked.name


def start(n: int) -> tuple[str, list[str]]:
    with transaction.atomic():
        return batch_start(
            task=jobs.tracked_record,
            members=[{"path": f"/tmp/{i}"} for i in range(n)],
            callback=CALLBACK,
            callback_kwargs={"gallery": 7},
        )


def callbacks() -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(task_name=CALLBACK))


def test_members_carry_the_batch_id_and_the_last_end_enqueues_the_callback_once() -> None:
    batch_id, job_ids = start(4)
    messages = OutboxMessage.objects.filter(task_name=jobs.tracked_record.name)
    assert {m.options["headers"][BATCH_HEADER] for m in messages} == {batch_id}
    for job_id, ok in zip(job_ids[:3], [True, False, True], strict=True):
        assert batch_member_end(batch_id=batch_id, job_id=job_id, succeeded=ok)
    assert not callbacks()
    assert not batch_member_end(batch_id=batch_id, job_id=job_ids[0], succeeded=False)  # again
    assert batch_member_end(batch_id=batch_id, job_id=job_ids[3], succeeded=True)
    assert not batch_member_end(batch_id=batch_id, job_id=job_ids[3], succeeded=True)
    [callback] = callbacks()
    assert callback.kwargs == {
        "gallery": 7,
        "batch_id": batch_id,
        "succeeded": sorted([job_ids[0], job_ids[2], job_ids[3]]),
        "failed": [job_ids[1]],
    }
    batch = Batch.objects.get(id=batch_id)
    assert (batch.remaining, str(batch.callback_job_id)) == (0, str(callback.task_id))


def test_an_end_rolled_back_with_its_transaction_counts_when_it_comes_again() -> None:
    """A worker that dies before the member's transaction commits: nothing counted; the
    redelivered job's end counts, and enqueues the callback."""
    batch_id, [job_id] = start(1)
    with pytest.raises(RuntimeError), transaction.atomic():
        batch_member_end(batch_id=batch_id, job_id=job_id, succeeded=True)
        raise RuntimeError("worker died")
    assert BatchMember.objects.get(job_id=job_id).state == "pending" and not callbacks()
    assert batch_member_end(batch_id=batch_id, job_id=job_id, succeeded=True)
    assert len(callbacks()) == 1


def test_the_base_task_ends_record_and_member_together() -> None:
    batch_id, (ok_id, bad_id) = start(2)
    task = jobs.tracked_record
    for job_id in (ok_id, bad_id):
        JobRecord.objects.filter(id=job_id).update(status=JobStatus.STARTED)
    task.push_request(id=ok_id, **{BATCH_HEADER: batch_id})
    try:
        task.on_success({"done": 1}, ok_id, (), {})
    finally:
        task.pop_request()
    task.push_request(id=bad_id, **{BATCH_HEADER: batch_id})
    try:
        task.on_failure(ValueError("bad"), bad_id, (), {}, None)  # type: ignore[arg-type]
    finally:
        task.pop_request()
    assert JobRecord.objects.get(id=ok_id).status == JobStatus.SUCCEEDED
    assert JobRecord.objects.get(id=bad_id).status in (JobStatus.DEAD, JobStatus.FAILED)
    [callback] = callbacks()
    assert (callback.kwargs["succeeded"], callback.kwargs["failed"]) == ([ok_id], [bad_id])


def test_an_empty_batch_calls_back_at_once_and_untracked_tasks_are_refused() -> None:
    batch_id, job_ids = start(0)
    assert job_ids == [] and callbacks()[0].kwargs["batch_id"] == batch_id
    with pytest.raises(EnqueueError, match="not tracked"):
        batch_start(task=jobs.record, members=[{}], callback=CALLBACK)


@pytest.mark.slow
def test_a_worker_killed_once_the_last_member_ended_calls_back_once(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    """The moment the images issue names: the last member's end (its record, the batch's count,
    the callback in the outbox) is committed, and its worker process is SIGKILLed before it
    acknowledged the message. The message comes again and is skipped; the callback runs once."""
    probes = tmp_path / "callback-runs.jsonl"
    with transaction.atomic():
        batch_id, (member,) = batch_start(
            task=jobs.dies_after_its_end,
            members=[{"path": str(events)}],
            callback=CALLBACK,
        )
    with running_worker(log_dir=tmp_path, env={"PROBE_LOG": str(probes)}) as worker:
        callback = JobRecord.objects.filter(task_name=CALLBACK, status=JobStatus.SUCCEEDED)
        wait_for(callback.exists, what="the callback to run")
        wait_for(
            lambda: "redelivered message acknowledged and skipped" in worker.output(),
            what="the member's message to come again and be skipped",
        )
        time.sleep(1)  # a second callback, were there one, would run now
    assert Path(f"{events}.killed").exists()  # the process did die after the end
    assert "WorkerLostError" in worker.output() or "signal 9" in worker.output()
    assert [e["event"] for e in read_events(events)] == ["start"]  # ran once, skipped once
    record = JobRecord.objects.get(id=member)
    assert (record.status, record.attempts) == (JobStatus.SUCCEEDED, 1)
    assert Batch.objects.get(id=batch_id).remaining == 0
    assert len(probes.read_text().splitlines()) == 1
    assert callback.count() == 1
    assert broker.depth("default") == broker.depth("default.dead") == 0
