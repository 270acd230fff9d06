"""``python -m tests.bench.jobs_page``: the jobs page's queries on a busy day's job records.

A fresh PostgreSQL database (tests/bench/postgres.py) gets BENCH_PAGE_N records (300,000 by
default) enqueued over the last day across a dozen tasks, most succeeded, a few percent failed or
dead, some still open, and BENCH_PAGE_OLDER_N more from the month before (records are kept
JOBS_RETENTION_DAYS), all written by one INSERT ... SELECT. Then, as a staff user through Django's
test client, GET /jobs/ is timed (the view, its queries and the template), and the time spent in
its queries is summed; median of BENCH_PAGE_REPEAT. Twice: right after ANALYZE (the state of a
table that workers keep updating: few pages marked all-visible, so index-only scans still read the
rows) and after VACUUM (as autovacuum leaves it). EXPLAIN ANALYZE of each query is printed, and
the alert check's measuring (app/alerts.py) on the same records is timed too.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from tests.bench import postgres

FILL = """
INSERT INTO app_jobrecord (
    id, task_name, queue, summary, payload, status, progress, progress_message, attempts,
    error, traceback, cancel_requested, correlation_id, enqueued_at, started_at, finished_at,
    updated_at
)
SELECT gen_random_uuid(), 'tasks.family' || (i % 12) || '.job', 'default', 'id=' || i,
    '{{"args": [], "kwargs": {{}}}}', status, 100, '', 1, '', '', FALSE, '',
    at, at, CASE WHEN status IN ('queued', 'started', 'retrying') THEN NULL ELSE at END, at
FROM (
    SELECT i, now() - {span} * random() - {offset} AS at, CASE
        WHEN i % 200 < 188 THEN 'succeeded'
        WHEN i % 200 < 194 THEN 'failed'
        WHEN i % 200 < 196 THEN 'dead'
        WHEN i % 200 < 198 THEN 'queued'
        WHEN i % 200 < 199 THEN 'started'
        ELSE 'cancelled' END AS status
    FROM generate_series(1, {n}) AS i
    ORDER BY at  -- inserted in time order, as a live system writes them
) AS generated
"""


def fill(database: str, *, n: int, older_n: int) -> None:
    postgres.psql(
        FILL.format(n=n, span="interval '1 day'", offset="interval '0'"), database=database
    )
    if older_n:
        sql = FILL.format(n=older_n, span="interval '29 days'", offset="interval '1 day'")
        postgres.psql(sql, database=database)
    postgres.psql("ANALYZE app_jobrecord", database=database)


def measure(repeat: int) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
    client = Client()
    client.force_login(user)
    totals, in_queries = [], []
    for _ in range(repeat + 1):  # the first warms the caches (the server's and Python's)
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get("/jobs/", secure=True, HTTP_HOST="localhost")
            totals.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
        in_queries.append(sum(float(q["time"]) for q in captured.captured_queries))
    queries = [q["sql"] for q in captured.captured_queries]
    with connection.cursor() as cursor:
        for sql in queries:
            if "app_jobrecord" in sql:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                print("\n".join(row[0] for row in cursor.fetchall()), end="\n\n")
    return {
        "page_ms": round(1000 * statistics.median(totals[1:]), 1),
        "queries_ms": round(1000 * statistics.median(in_queries[1:]), 1),
        "queries": len(queries),
        "check_ms": round(1000 * check_seconds(repeat), 1),
    }


def check_seconds(repeat: int) -> float:
    """The alert check's measuring (app/alerts.py) on the same records, RabbitMQ included."""
    from django.utils import timezone

    from app.alerts import Thresholds, alerts_measure

    window = Thresholds.from_settings().window
    times = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        alerts_measure(now=timezone.now(), window=window)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    n = int(os.environ.get("BENCH_PAGE_N", "300000"))
    older_n = int(os.environ.get("BENCH_PAGE_OLDER_N", "300000"))
    repeat = int(os.environ.get("BENCH_PAGE_REPEAT", "5"))
    with postgres.session(), postgres.fresh_database("jobs_page") as url:
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django

        django.setup()
        from django.conf import settings

        settings.DEBUG = True  # Django records query times only then
        database = url.rsplit("/", 1)[1]
        started = time.perf_counter()
        fill(database, n=n, older_n=older_n)
        print(
            f"{n} records in the last day, {older_n} older: {time.perf_counter() - started:.0f} s"
        )
        results = {"analyzed": measure(repeat)}
        postgres.psql("VACUUM ANALYZE app_jobrecord", database=database)
        results["vacuumed"] = measure(repeat)
        from django.db import connections

        connections.close_all()
    for state, figures in results.items():
        print(f"{state}: GET /jobs/ {figures['page_ms']} ms, of which {figures['queries']} "
              f"queries {figures['queries_ms']} ms; the alert check's measuring "
              f"{figures['check_ms']} ms")  # fmt: skip


if __name__ == "__main__":
    main()
