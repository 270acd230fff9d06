"""A producer process for the enqueue-latency and relay scenarios, and the fill of one drain.

    python -m tests.bench.producer MODE N

The broker URL is read from ``BENCH_BROKER_URL``, the database from ``DATABASE_URL`` (a database
of the bench's own, see ``postgres``). Modes:

- ``bare-delay``: ``noop.delay()`` of a bare ``Celery()`` app (no confirms, no Django), N times,
  each call timed: the latency baseline;
- ``delay``: ``noop.delay()`` of ``config.celery.app`` (publisher confirms on), N times, timed;
- ``job-enqueue``: ``with transaction.atomic(): job_enqueue(tracked_noop)``, N times, each timed
  from entering ``atomic()`` to its exit, after-commit publish included (what a web request
  pays); afterwards every outbox row must be marked sent, or the figure would hide failures;
- ``relay``: N pending outbox rows as ``job_enqueue`` writes them while the broker is down,
  bulk-created and analysed (untimed), then one timed ``outbox_relay()``, which must publish all;
  then N/2 timed ``delay()`` of the bare app (no confirms), for comparison (``bare_seconds``);
- ``fill-enqueued``: the state N ``job_enqueue(tracked_noop)`` leave (queued job records, outbox
  rows sent, N messages), for a drain: untimed, the rows bulk-created then relayed.

The latency modes make ``WARMUP`` calls first, untimed (connections, declarations, first-call
imports), so the queue ends with N + ``WARMUP`` messages. The last line printed is
``RESULT {...}``: ``seconds`` (timed part), ``cpu_seconds`` (this process, timed part), ``n``,
and for the latency modes ``p50_ms``, ``p99_ms``, ``mean_ms``, ``max_ms``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

RESULT_PREFIX = "RESULT "
WARMUP = 20


def template() -> None:
    """Django set up as a web process has it; the broker and database from the environment."""
    os.environ["CELERY_BROKER_URL"] = os.environ["BENCH_BROKER_URL"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def timed_calls(call: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(WARMUP):
        call()
    latencies = []
    clock = time.perf_counter
    start, cpu_start = clock(), time.process_time()
    for _ in range(n):
        before = clock()
        call()
        latencies.append(clock() - before)
    seconds, cpu = clock() - start, time.process_time() - cpu_start
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "p50_ms": cuts[49] * 1e3,
        "p99_ms": cuts[98] * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3,
        "max_ms": max(latencies) * 1e3,
    }


def bare_delay(n: int) -> dict[str, float]:
    from tests.bench.bare_app import NOOP, make_app

    app = make_app(os.environ["BENCH_BROKER_URL"])
    try:
        return timed_calls(app.tasks[NOOP].delay, n)
    finally:
        app.close()


def delay(n: int) -> dict[str, float]:
    template()
    from tests.bench.noop import noop

    return timed_calls(noop.delay, n)


def job_enqueue(n: int) -> dict[str, float]:
    template()
    from django.db import transaction

    from app.enqueue import job_enqueue
    from app.models import JobRecord, OutboxMessage
    from tests.bench.noop import tracked_noop

    def call() -> None:
        with transaction.atomic():
            job_enqueue(tracked_noop)

    result = timed_calls(call, n)
    pending = OutboxMessage.objects.filter(sent_at__isnull=True).count()
    if pending:
        raise RuntimeError(f"{pending} outbox rows not published after commit: see the log")
    records = JobRecord.objects.count()
    if records != n + WARMUP:
        raise RuntimeError(f"{records} job records, expected {n + WARMUP}")
    return result


def pending_rows(n: int, *, records: bool) -> None:
    """What ``n`` calls of ``job_enqueue(tracked_noop)`` leave when the after-commit publish fails
    (the broker is down): pending outbox rows and, with ``records``, queued job records; written
    in bulk, then analysed (as autovacuum would have, while the broker was down)."""
    from django.db import connection

    from app.context import MESSAGE_HEADER
    from app.models import JobRecord, OutboxMessage
    from config.celery import app
    from config.queues import DEFAULT_QUEUE, work_queue
    from tests.bench.noop import TRACKED_NAME

    with app.connection_for_write() as conn:  # as a worker would have declared it
        work_queue(DEFAULT_QUEUE)(conn.default_channel).declare()
    ids = [uuid.uuid4() for _ in range(n)]
    if records:
        JobRecord.objects.bulk_create(
            (
                JobRecord(
                    id=job_id,
                    task_name=TRACKED_NAME,
                    queue=DEFAULT_QUEUE,
                    summary="",
                    payload={"args": [], "kwargs": {}},
                    correlation_id="",
                )
                for job_id in ids
            ),
            batch_size=1000,
        )
    OutboxMessage.objects.bulk_create(
        (
            OutboxMessage(
                task_id=job_id,
                task_name=TRACKED_NAME,
                args=[],
                kwargs={},
                options={"headers": {MESSAGE_HEADER: uuid.uuid4().hex}, "eta": None},
            )
            for job_id in ids
        ),
        batch_size=1000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE app_outboxmessage, app_jobrecord")


def relayed(n: int) -> None:
    """``outbox_relay()``, which must publish all ``n`` pending rows."""
    from app.models import OutboxMessage
    from app.outbox import outbox_relay

    published = outbox_relay()
    if published != n or OutboxMessage.objects.filter(sent_at__isnull=True).exists():
        raise RuntimeError(f"relay published {published} of {n} rows")


def relay(n: int) -> dict[str, float]:
    """The relay, then (a cross-check of the ratio, less exposed to load elsewhere on the machine
    than the separate publish scenario) a bare app's ``delay()`` without confirms in this same
    process, ``n // 2`` times, to the bare app's queue."""
    template()
    pending_rows(n, records=False)  # the relay never reads job records
    start, cpu_start = time.perf_counter(), time.process_time()
    relayed(n)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    from tests.bench.bare_app import NOOP, make_app

    bare = make_app(os.environ["BENCH_BROKER_URL"])
    task = bare.tasks[NOOP]
    task.delay()  # connect and declare, untimed
    start = time.perf_counter()
    for _ in range(n // 2):
        task.delay()
    bare_seconds = time.perf_counter() - start
    bare.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "bare_seconds": bare_seconds}


def fill_enqueued(n: int) -> dict[str, float]:
    """The state ``n`` ``job_enqueue(tracked_noop)`` calls leave with the broker up: queued job
    records, outbox rows sent, messages in the queue. Reached, to save time, as after an outage:
    the rows in bulk, then the relay (which publishes what ``outbox_publish_one`` would)."""
    template()
    start = time.perf_counter()
    pending_rows(n, records=True)
    relayed(n)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time()}


MODES: dict[str, Callable[[int], dict[str, float]]] = {
    "bare-delay": bare_delay,
    "delay": delay,
    "job-enqueue": job_enqueue,
    "relay": relay,
    "fill-enqueued": fill_enqueued,
}


def main(argv: list[str]) -> None:
    mode, n = argv[0], int(argv[1])
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    result: dict[str, Any] = {**MODES[mode](n), "n": n}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
