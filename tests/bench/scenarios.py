"""THE list of scenarios, and the ratios between them.

A new scenario is an entry in ``SCENARIOS``, most often built by ``publish_scenario``,
``latency_scenario`` or ``drain_scenario``; a new ratio is an entry in ``RATIOS``.

A scenario's ``run`` does one run. Repeated scenarios run ``BENCH_REPEAT`` times, interleaved
with the others (round 1 of every scenario, then round 2...), so that a burst of load elsewhere on
the machine does not land on one scenario only; the median is kept. A scenario's figure is a rate
(JSON key ``<key>_per_s``) or, for the enqueue-latency ones, the p99 latency in ms
(``<key>_p99_ms``), or another (``<key>_<figure>``: ``export_rss_growth_mb``); extras go to the
JSON as ``<key>_<name>``. The table shows each figure against its ``baseline``'s: for a latency,
above 1 is slower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from config.queues import DEFAULT_QUEUE, work_queue
from tests.bench import bare_app, measure, noop
from tests.bench.measure import Drain, Sample
from tests.bench.workers import bare_worker_argv, template_worker_argv


@dataclass(frozen=True)
class Settings:
    publish_n: int
    drain_n: int
    repeat: int
    loglevel: str
    #: Timed enqueues per latency scenario, rows per relay run, messages per drain on PostgreSQL
    #: (untracked, and tracked: these drain two to three times slower).
    latency_n: int
    relay_n: int
    db_drain_n: int
    tracked_n: int
    #: Emails per SMTP scenario.
    smtp_n: int
    #: Thumbnails per images scenario.
    thumbnail_n: int
    #: Pages (of 100 records) per API sync scenario.
    sync_pages: int = 30
    #: Rows of the probe table the export scenarios write (the RSS one: its own two sizes).
    export_rows: int = 1_000_000


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    unit: str
    run: Callable[[Settings], Sample]
    repeated: bool
    baseline: str | None = None
    #: The JSON key suffix of the figure: ``per_s`` (a rate) or ``p99_ms`` (a latency).
    figure: str = "per_s"

    def runs(self, settings: Settings) -> int:
        return settings.repeat if self.repeated else 1


def publish_scenario(
    app: str, conf: Mapping[str, Any] | None = None, *, share: int = 1
) -> Callable[..., Sample]:
    """Publishing from ``app`` (bare or template), with ``conf`` overrides; 1/``share`` of N
    messages (the variants that only explain a cost are cut short, to save time)."""
    queue = bare_app.QUEUE.name if app == "bare" else DEFAULT_QUEUE

    def run(settings: Settings) -> Sample:
        n = settings.publish_n // share
        return measure.publish(f"pub-{app}", app, queue, n, conf or {})

    return run


def latency_scenario(mode: str, *, database: bool = True) -> Callable[[Settings], Sample]:
    """Enqueue latency, ``producer`` MODE, in a new vhost and (``database``) database."""
    queue = bare_app.QUEUE.name if mode.startswith("bare") else DEFAULT_QUEUE

    def run(settings: Settings) -> Sample:
        return measure.latency(f"lat-{mode}", mode, queue, settings.latency_n, database=database)

    return run


def relay_scenario(settings: Settings) -> Sample:
    return measure.relay("relay", DEFAULT_QUEUE, settings.relay_n)


def smtp_scenario(mode: str) -> Callable[[Settings], Sample]:
    def run(settings: Settings) -> Sample:
        return measure.smtp(f"smtp-{mode}", mode, settings.smtp_n)

    return run


def thumbnail_scenario(mode: str) -> Callable[[Settings], Sample]:
    def run(settings: Settings) -> Sample:
        return measure.thumbnail(mode, settings.thumbnail_n)

    return run


def sync_scenario(mode: str) -> Callable[[Settings], Sample]:
    def run(settings: Settings) -> Sample:
        return measure.sync(f"sync-{mode}", mode, settings.sync_pages)

    return run


def export_scenario(mode: str) -> Callable[[Settings], Sample]:
    def run(settings: Settings) -> Sample:
        return measure.export(mode, settings.export_rows)

    return run


#: The export RSS scenario's two sizes: the peak must not grow from one to the other.
EXPORT_RSS_ROWS = (100_000, 2_000_000)


def export_rss_scenario(settings: Settings) -> Sample:
    return measure.export_rss(*EXPORT_RSS_ROWS)


def drain_scenario(drain: Drain) -> Callable[[Settings], Sample]:
    def run(settings: Settings) -> Sample:
        if drain.database:
            n = settings.tracked_n if drain.tracked else settings.db_drain_n
        else:
            n = settings.drain_n
        return measure.drain(drain, n, settings.loglevel)

    return run


def bare_drain(
    label: str,
    *,
    pool: str = "prefork",
    concurrency: int = 2,
    extra: Sequence[str] = (),
    acks_late: bool = False,
) -> Drain:
    """A worker of the bare app on Celery's default queue."""
    return Drain(
        label=label,
        queue=bare_app.QUEUE,
        task=bare_app.NOOP,
        argv=lambda env: bare_worker_argv(
            pool=pool, concurrency=concurrency, loglevel=env["LOG_LEVEL"], extra=extra
        ),
        env={"BENCH_ACKS_LATE": "1" if acks_late else "0"},
    )


def template_drain(
    label: str,
    script: str,
    *,
    loglevel: str | None = None,
    task: str = noop.NAME,
    database: bool = False,
    filler: measure.Filler | None = None,
    tracked: bool = False,
    env: Mapping[str, str] | None = None,
    scraped: bool = False,
) -> Drain:
    """The template's worker as ``bin/<script>`` starts it (``env`` added to its environment), on
    the ``default`` queue."""
    return Drain(
        label=label,
        queue=work_queue(DEFAULT_QUEUE),
        task=task,
        argv=lambda env: template_worker_argv(script, queue=DEFAULT_QUEUE, env=env),
        env=env or {},
        loglevel=loglevel,
        database=database,
        filler=filler,
        tracked=tracked,
        scraped=scraped,
    )


PUBLISH_BASE = "noop_publish_bare"
DRAIN_BASE = "noop_drain_bare"
LATENCY_BASE = "enqueue_bare"
COPY_BASE = "bare_copy_rows"
PREFETCH_1 = ("--prefetch-multiplier", "1")

SCENARIOS: list[Scenario] = [
    Scenario(
        PUBLISH_BASE,
        "publish, bare Celery (no confirms)",
        "msg/s",
        publish_scenario("bare"),
        repeated=False,
    ),
    Scenario(
        "noop_publish_template",
        "publish, template (config.celery.app)",
        "msg/s",
        publish_scenario("template"),
        repeated=False,
        baseline=PUBLISH_BASE,
    ),
    Scenario(
        "noop_publish_bare_confirms",
        "publish, bare Celery + confirm_publish (N/4)",
        "msg/s",
        publish_scenario("bare", {"broker_transport_options": {"confirm_publish": True}}, share=4),
        repeated=False,
        baseline=PUBLISH_BASE,
    ),
    Scenario(
        "noop_publish_template_no_confirms",
        "publish, template with confirm_publish off (N/4)",
        "msg/s",
        publish_scenario(
            "template", {"broker_transport_options": {"confirm_publish": False}}, share=4
        ),
        repeated=False,
        baseline=PUBLISH_BASE,
    ),
    Scenario(
        DRAIN_BASE,
        "drain, bare prefork -c 2 (early ack, prefetch x4)",
        "jobs/s",
        drain_scenario(bare_drain("drain-bare")),
        repeated=True,
    ),
    Scenario(
        "noop_drain_bare_acks_late",
        "drain, bare prefork -c 2 + acks_late, prefetch x1",
        "jobs/s",
        drain_scenario(bare_drain("drain-bare-late", extra=PREFETCH_1, acks_late=True)),
        repeated=True,
        baseline=DRAIN_BASE,
    ),
    Scenario(
        "noop_drain_bare_threads_acks_late",
        "drain, bare threads -c 8 + acks_late, prefetch x1",
        "jobs/s",
        drain_scenario(
            bare_drain(
                "drain-bare-threads",
                pool="threads",
                concurrency=8,
                extra=PREFETCH_1,
                acks_late=True,
            )
        ),
        repeated=True,
        baseline=DRAIN_BASE,
    ),
    Scenario(
        "noop_drain_template_io",
        "drain, template bin/worker-io",
        "jobs/s",
        drain_scenario(template_drain("drain-io", "worker-io")),
        repeated=True,
        baseline=DRAIN_BASE,
    ),
    Scenario(
        "noop_drain_template_io_info",
        "drain, template bin/worker-io at INFO (its default), 1 run",
        "jobs/s",
        drain_scenario(template_drain("drain-io-info", "worker-io", loglevel="INFO")),
        repeated=False,  # to keep the whole bench within ~6 minutes; its cpu figure is steady
        baseline=DRAIN_BASE,
    ),
    Scenario(
        "noop_drain_template_io_no_events",
        "drain, template bin/worker-io with task events off",
        "jobs/s",
        drain_scenario(
            template_drain(
                "drain-io-no-events", "worker-io", env={"CELERY_WORKER_SEND_TASK_EVENTS": "0"}
            )
        ),
        repeated=True,
        baseline=DRAIN_BASE,
    ),
    Scenario(
        "noop_drain_template_cpu",
        "drain, template bin/worker-cpu",
        "jobs/s",
        drain_scenario(template_drain("drain-cpu", "worker-cpu")),
        repeated=True,
        baseline=DRAIN_BASE,
    ),
    # --- on PostgreSQL: enqueue latency, the outbox relay, tracked jobs --------------------------
    Scenario(
        LATENCY_BASE,
        "enqueue latency, bare Celery delay() (no confirms), 1 run",
        "ms p99",
        latency_scenario("bare-delay", database=False),
        repeated=False,
        figure="p99_ms",
    ),
    Scenario(
        "enqueue",
        "enqueue latency, template delay() (confirms), 1 run",
        "ms p99",
        latency_scenario("delay"),
        repeated=False,
        baseline=LATENCY_BASE,
        figure="p99_ms",
    ),
    Scenario(
        "outbox_enqueue",
        "enqueue latency, job_enqueue() of a tracked job in atomic(), 1 run",
        "ms p99",
        latency_scenario("job-enqueue"),
        repeated=False,
        baseline=LATENCY_BASE,
        figure="p99_ms",
    ),
    Scenario(
        "relay_rows",
        "outbox_relay() of pending rows, vs bare publish (no confirms), 1 run",
        "rows/s",
        relay_scenario,
        repeated=False,
        baseline=PUBLISH_BASE,
    ),
    Scenario(
        "untracked_drain",
        "drain on PostgreSQL, bin/worker-io, untracked no-op",
        "jobs/s",
        drain_scenario(template_drain("drain-untracked", "worker-io", database=True)),
        repeated=True,
        baseline=DRAIN_BASE,
    ),
    Scenario(
        "tracked_drain",
        "drain on PostgreSQL, tracked no-op sent by apply_async (no record yet)",
        "jobs/s",
        drain_scenario(
            template_drain(
                "drain-tracked",
                "worker-io",
                task=noop.TRACKED_NAME,
                database=True,
                tracked=True,
            )
        ),
        repeated=True,  # the figure: a median, as its baseline is
        baseline=DRAIN_BASE,
    ),
    Scenario(
        "tracked_drain_scraped",
        "drain on PostgreSQL, tracked no-op, /metrics scraped every second meanwhile",
        "jobs/s",
        drain_scenario(
            template_drain(
                "drain-tracked-scraped",
                "worker-io",
                task=noop.TRACKED_NAME,
                database=True,
                tracked=True,
                scraped=True,
            )
        ),
        repeated=True,
        baseline=DRAIN_BASE,
    ),
    Scenario(
        "tracked_enqueued_drain",
        "drain on PostgreSQL, tracked no-op sent by job_enqueue (record exists), 1 run",
        "jobs/s",
        drain_scenario(
            template_drain(
                "drain-enqueued",
                "worker-io",
                task=noop.TRACKED_NAME,
                database=True,
                filler=measure.fill_enqueued,
                tracked=True,
            )
        ),
        repeated=False,  # one run each, N/BENCH_TRACKED_N: the bench within ~8 minutes
        baseline=DRAIN_BASE,
    ),
    Scenario(
        "smtp_per_message",
        "email, one SMTP connection per message (STARTTLS + AUTH), as N send jobs do",
        "msg/s",
        smtp_scenario("per-message"),
        repeated=True,
    ),
    Scenario(
        "smtp_bulk",
        "email, the bulk path: one connection per batch, a claim per recipient",
        "msg/s",
        smtp_scenario("bulk"),
        repeated=True,
        baseline="smtp_per_message",
    ),
    Scenario(
        "thumbnail_pillow",
        "images, 400-px JPEG thumbnails of 12 MP JPEGs: plain Pillow open/resize/save",
        "img/s",
        thumbnail_scenario("pillow"),
        repeated=True,
    ),
    Scenario(
        "thumbnail",
        "images, the same through the family's path (JPEG draft to the size needed)",
        "img/s",
        thumbnail_scenario("template"),
        repeated=True,
        baseline="thumbnail_pillow",
    ),
    Scenario(
        "thumbnail_draft2",
        "images, the family's path decoding at twice the size needed, 1 run",
        "img/s",
        thumbnail_scenario("draft2"),
        repeated=False,
        baseline="thumbnail_pillow",
    ),
    Scenario(
        "sync_naive",
        "API sync, naive: a connection per request, record-by-record upserts (20 ms/request)",
        "pages/s",
        sync_scenario("naive"),
        repeated=True,
    ),
    Scenario(
        "sync_pooled",
        "API sync, tasks.syncs: pooled client, a page per transaction with its checkpoint",
        "pages/s",
        sync_scenario("sync"),
        repeated=True,
        baseline="sync_naive",
    ),
    # --- exports: the probe table (tests/exports/probe.py), in-process, no broker --------------
    Scenario(
        COPY_BASE,
        "exports, bare COPY ... TO STDOUT (csv) through psycopg, chunks to a file",
        "rows/s",
        export_scenario("bare-copy"),
        repeated=True,
    ),
    Scenario(
        "csv_copy_rows",
        "exports, CSV: writers.csv_copy (COPY, formula cells neutralised in SQL)",
        "rows/s",
        export_scenario("csv-copy"),
        repeated=True,
        baseline=COPY_BASE,
    ),
    Scenario(
        "csv_cursor_rows",
        "exports, CSV: writers.csv_write over a server-side cursor (the path off PostgreSQL)",
        "rows/s",
        export_scenario("csv-cursor"),
        repeated=True,
        baseline=COPY_BASE,
    ),
    Scenario(
        "jsonl_rows",
        "exports, JSON Lines: writers.jsonl_write over a server-side cursor",
        "rows/s",
        export_scenario("jsonl"),
        repeated=True,
        baseline=COPY_BASE,
    ),
    Scenario(
        "xlsx_rows",
        "exports, XLSX: writers.xlsx_write (XlsxWriter, constant memory), 1 run",
        "rows/s",
        export_scenario("xlsx"),
        repeated=False,  # about a minute per million rows, and steady: pure Python
        baseline=COPY_BASE,
    ),
    Scenario(
        "export_rss",
        "exports, peak RSS of export_run (CSV), 2,000,000 rows less 100,000, 1 run",
        "MB",
        export_rss_scenario,
        repeated=False,
        figure="growth_mb",
    ),
]

#: JSON key -> (scenario, scenario it is divided by): the rates' ratio.
RATIOS: dict[str, tuple[str, str]] = {
    "noop_publish_ratio_vs_bare": ("noop_publish_template", PUBLISH_BASE),
    "noop_publish_ratio_bare_confirms_vs_bare": ("noop_publish_bare_confirms", PUBLISH_BASE),
    "noop_publish_ratio_template_no_confirms_vs_bare": (
        "noop_publish_template_no_confirms",
        PUBLISH_BASE,
    ),
    "noop_drain_ratio_vs_bare": ("noop_drain_template_io", DRAIN_BASE),
    "noop_drain_ratio_cpu_worker_vs_bare": ("noop_drain_template_cpu", DRAIN_BASE),
    "noop_drain_ratio_bare_acks_late_vs_bare": ("noop_drain_bare_acks_late", DRAIN_BASE),
    "noop_drain_ratio_bare_threads_acks_late_vs_bare": (
        "noop_drain_bare_threads_acks_late",
        DRAIN_BASE,
    ),
    # Same pool and flags, template app vs bare app: what the template itself costs a worker.
    "noop_drain_ratio_template_io_vs_bare_threads": (
        "noop_drain_template_io",
        "noop_drain_bare_threads_acks_late",
    ),
    # What INFO logging (two lines per job) costs the io worker.
    "noop_drain_ratio_template_io_info_vs_warning": (
        "noop_drain_template_io_info",
        "noop_drain_template_io",
    ),
    # What task events (on by default, for Flower) cost the io worker, nobody consuming them.
    "events_drain_ratio_vs_no_events": (
        "noop_drain_template_io",
        "noop_drain_template_io_no_events",
    ),
    "noop_drain_ratio_template_cpu_vs_bare_acks_late": (
        "noop_drain_template_cpu",
        "noop_drain_bare_acks_late",
    ),
    # Latencies (p99): above 1 is slower than a bare delay() without confirms.
    "enqueue_p99_ratio_vs_bare": ("enqueue", LATENCY_BASE),
    "outbox_enqueue_p99_ratio_vs_bare": ("outbox_enqueue", LATENCY_BASE),
    # The aim: >= 0.8.
    "relay_ratio_vs_unconfirmed_publish": ("relay_rows", PUBLISH_BASE),
    # The aims: tracked >= 0.5; untracked on PostgreSQL no slower than the io figure.
    "tracked_drain_ratio_vs_bare": ("tracked_drain", DRAIN_BASE),
    "tracked_enqueued_drain_ratio_vs_bare": ("tracked_enqueued_drain", DRAIN_BASE),
    "untracked_drain_ratio_vs_bare": ("untracked_drain", DRAIN_BASE),
    "untracked_drain_ratio_vs_template_io": ("untracked_drain", "noop_drain_template_io"),
    # What Prometheus scraping /metrics (every second here) costs a tracked drain.
    "tracked_drain_ratio_scraped_vs_not": ("tracked_drain_scraped", "tracked_drain"),
    # What tracking itself costs the same worker on the same database.
    "tracked_drain_ratio_vs_untracked": ("tracked_drain", "untracked_drain"),
    "tracked_enqueued_drain_ratio_vs_untracked": ("tracked_enqueued_drain", "untracked_drain"),
    # The email issue's aim: >= 5.
    "smtp_bulk_speedup": ("smtp_bulk", "smtp_per_message"),
    # The images issue's aim: >= 4, at a quality (the ssim extras) no worse than Pillow's.
    "thumbnail_speedup_vs_pillow": ("thumbnail", "thumbnail_pillow"),
    "thumbnail_draft2_speedup_vs_pillow": ("thumbnail_draft2", "thumbnail_pillow"),
    # The syncs issue's aim: >= 5.
    "sync_speedup_vs_naive": ("sync_pooled", "sync_naive"),
    # The exports issue's aim: CSV through the family's COPY >= 0.8 of a bare COPY.
    "csv_copy_ratio_vs_bare_copy": ("csv_copy_rows", COPY_BASE),
    "csv_cursor_ratio_vs_bare_copy": ("csv_cursor_rows", COPY_BASE),
    "jsonl_ratio_vs_bare_copy": ("jsonl_rows", COPY_BASE),
    "xlsx_ratio_vs_bare_copy": ("xlsx_rows", COPY_BASE),
}
