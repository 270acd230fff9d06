"""``python -m tests.bench.metrics_scrape``: how long a /metrics scrape takes on 300,000 job
records, part by part, on a fresh PostgreSQL database and RabbitMQ vhost.

The records: 240,000 that ended over the last 30 days, 30,000 that ended within the last minute
(the rows a scrape counts live, at 500 jobs/s) and 30,000 queued ones (a backlog: 25,000 in
exports, 5,000 in default); 20,000 outbox rows waiting (a broker outage) among 320,000. Each
part is timed over BENCH_SCRAPES scrapes (median, max); then the one-off fold of a day of records
(the first scrape after a day without one), and for scale the same counts read without the
indexes' help (a GROUP BY over every record). Writes ``metrics_*`` keys to bench-results.json.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tests.bench import postgres, rabbit, report
from tests.bench.__main__ import RESULTS

SCRAPES = int(os.environ.get("BENCH_SCRAPES", "20"))

FILL = """
INSERT INTO app_jobrecord (id, task_name, queue, summary, payload, status, progress,
    progress_message, attempts, error, traceback, cancel_requested, correlation_id,
    enqueued_at, started_at, finished_at, updated_at)
SELECT gen_random_uuid(), 'tasks.bench.t' || (i % 20),
    (ARRAY['default','email','api','exports','images','email_bulk'])[1 + i % 6], '', '{{}}',
    CASE WHEN i % 50 = 0 THEN 'dead' WHEN i % 97 = 0 THEN 'failed' ELSE 'succeeded' END,
    100, '', 1 + (i % 7 = 0)::int, '', '', FALSE, '',
    {finished} - interval '2 seconds', {finished} - (i % 30) * interval '100 ms', {finished}, now()
FROM generate_series(1, {n}) AS i
"""
QUEUED = """
INSERT INTO app_jobrecord (id, task_name, queue, summary, payload, status, progress,
    progress_message, attempts, error, traceback, cancel_requested, correlation_id,
    enqueued_at, updated_at)
SELECT gen_random_uuid(), 'tasks.bench.queued', CASE WHEN i % 6 = 0 THEN 'default' ELSE 'exports'
    END, '', '{}', 'queued', 0, '', 0, '', '', FALSE, '',
    now() - i * interval '100 ms', now()
FROM generate_series(1, 30000) AS i
"""
OUTBOX = """
INSERT INTO app_outboxmessage (task_id, task_name, args, kwargs, options, created_at, sent_at,
    error)
SELECT gen_random_uuid(), 'tasks.bench.t', '[]', '{}', '{}', now() - i * interval '8 seconds',
    CASE WHEN i <= 20000 THEN NULL ELSE now() - i * interval '8 seconds' END, ''
FROM generate_series(1, 320000) AS i
"""


def timed(call: Callable[[], Any], n: int) -> tuple[float, float]:
    """Median and max milliseconds of ``n`` calls."""
    runs = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), max(runs)


def measure() -> dict[str, float]:
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from app import alerts, metrics
    from app.alerts import oldest_waiting
    from app.models import JobTallyMark
    from config import queues
    from config.celery import app as celery_app

    with connection.cursor() as cursor:
        cursor.execute(FILL.format(n=240_000, finished="now() - i * interval '10 seconds'"))
        cursor.execute(FILL.format(n=30_000, finished="now() - i * interval '2 ms'"))
        cursor.execute(QUEUED)
        cursor.execute(OUTBOX)
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM app_jobrecord")
        records = cursor.fetchone()[0]
    # A message in default.dead, as RabbitMQ leaves one, for the head-message read.
    with celery_app.connection_for_write() as conn:
        for queue in queues.TASK_QUEUES:
            queue(conn.default_channel).declare()
        conn.Producer().publish(
            {}, exchange="dead", routing_key="default",
            headers={"x-death": [{"queue": "default", "reason": "rejected", "count": 1,
                                  "time": timezone.now()}]},
        )  # fmt: skip
    # As after regular scrapes: the mark a minute back, everything before it in the tally.
    JobTallyMark.objects.create(id=1, folded_before=timezone.now() - metrics.SETTLE * 25)
    metrics.tally_fold(now=timezone.now())
    print(f"{records:,} job records; scrapes of each part, median and max (ms):", flush=True)

    figures: dict[str, float] = {}
    parts: dict[str, Callable[[], Any]] = {
        "queues_rabbitmq": alerts.queues_read,
        "oldest_waiting_records": oldest_waiting,
        "outcomes": lambda: metrics.outcomes_total(now=timezone.now()),
        "outbox": metrics.outbox_read,
        "page": metrics.metrics_page,
    }
    for name, call in parts.items():
        median, worst = timed(call, SCRAPES)
        figures[f"metrics_scrape_{name}_ms"] = round(median, 1)
        figures[f"metrics_scrape_{name}_max_ms"] = round(worst, 1)
        print(f"  {name:22} {median:8.1f} {worst:8.1f}", flush=True)

    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT count(*) FROM app_jobrecord "
            "WHERE finished_at >= now() - '1 minute'::interval"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    print(f"  the live read's plan:\n    {plan.replace(chr(10), chr(10) + '    ')}")

    def dead_head() -> None:
        with celery_app.connection_for_read() as conn:
            alerts._dead_since(conn.channel(), "default.dead")

    median, _ = timed(dead_head, SCRAPES)
    print(f"  dead-letter head read   {median:8.1f}  (connect, basic_get, reject)")
    figures["metrics_dead_head_read_ms"] = round(median, 1)

    # The first scrape after a day without any: it folds a day of records, once.
    JobTallyMark.objects.filter(id=1).update(folded_before=timezone.now() - timedelta(days=1))
    started = time.perf_counter()
    metrics.tally_fold(now=timezone.now())
    figures["metrics_fold_one_day_ms"] = round((time.perf_counter() - started) * 1000, 1)
    print(f"  fold of a day of records {figures['metrics_fold_one_day_ms']:8.1f}  (once)")

    # For scale: the same outcome counts over every record, as without a tally and index.
    def every_record() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT task_name, queue, status, count(*), sum(attempts - 1), "
                "sum(extract(epoch from finished_at - started_at)) FROM app_jobrecord "
                "GROUP BY task_name, queue, status"
            )
            cursor.fetchall()

    median, _ = timed(every_record, 5)
    figures["metrics_every_record_count_ms"] = round(median, 1)
    print(f"  counting every record    {median:8.1f}  (for scale: what the tally avoids)")
    figures["metrics_scrape_records"] = records
    return figures


def main() -> None:
    with (
        postgres.session(),
        postgres.fresh_database("metrics") as db,
        rabbit.fresh_vhost("metrics") as url,
    ):
        os.environ.update(
            DATABASE_URL=db, CELERY_BROKER_URL=url, DJANGO_SETTINGS_MODULE="config.settings"
        )
        figures = measure()
    report.merge_json(RESULTS, figures)
    print(f"{len(figures)} figures written to {RESULTS}")


if __name__ == "__main__":
    main()
