"""``python -m tests.bench``: run the scenarios, print the table, update bench-results.json."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tests.bench import exports, postgres, producer, report
from tests.bench.measure import Measurement, Sample
from tests.bench.scenarios import EXPORT_RSS_ROWS, SCENARIOS, Scenario, Settings
from tests.bench.workers import ROOT

#: Where the figures go (BENCH_RESULTS: elsewhere, as the benchmark's own test does).
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench-results.json")

METHOD = """\
publish: one producer process, .delay() in a loop, JSON, ignore_result, N={publish_n} (the two
  variants that only explain a cost: N/4); timed after one warm-up publish; all messages are
  then checked to be in the queue. One run each. cpu = the producer's CPU time per message.
drain: N={drain_n} no-op messages published first (untimed); rate = N / (worker_ready -> last
  task_postrun), both stamped inside the worker: from the moment it consumes, pool up, to the
  last job done; then the queue is checked empty, unacked included. startup = process launch
  -> worker_ready; cpu = CPU time of all the worker's processes per 1,000 jobs (less sensitive
  to other load on the machine than the rate). Median of {repeat} interleaved runs. Every
  worker runs with --without-mingle --without-gossip and log level {loglevel} unless its label
  says otherwise (--loglevel, and LOG_LEVEL for the template's Django logging).
PostgreSQL scenarios: each run on a fresh database (a copy of one migrated for the run), server
  as configured (commits flushed to disk); one run each, but the untracked and tracked drains
  (median of {repeat}). cpu "+ db" = the PostgreSQL server's CPU time (other clients included).
enqueue latency: one producer process (Django set up, as a web process), N={latency_n} calls
  each timed, after {warmup} untimed; p99 (the figure) and p50 in ms; vs baseline = latency / bare
  Celery's (above 1 is slower). job_enqueue is timed from entering transaction.atomic() to its
  exit, the after-commit publish (confirmed) included; every outbox row is then checked sent.
relay: N={relay_n} pending outbox rows as job_enqueue leaves them when the broker is down
  (bulk-created, analysed, untimed), then outbox_relay() timed until all are published and
  confirmed; vs the bare publish above (relay_rows_ratio_vs_bare_same_process: vs a bare
  delay() loop in the relay's process right after it, a cross-check).
drain on PostgreSQL: N={db_drain_n} (tracked: {tracked_n}), the template's bin/worker-io
  (threads -c 8) with DATABASE_URL set; the untracked no-op never touches the database. Tracked:
  the record is made at start (sent by apply_async, as delay() does), or exists (the state
  job_enqueue leaves: queued records, messages published; reached in bulk, untimed). After the
  drain, N records must be succeeded (none for the untracked task). The JSON also has
  <key>_db_connections_per_1k: connections the worker opened to the database while draining.
  Scraped: the tracked drain while another process builds the /metrics page every second
  (tests/bench/scraper.py; extras: scrapes, scrape_ms_median).
email: N={smtp_n} messages (notice template, text and HTML) to an aiosmtpd server in its own
  process that requires STARTTLS and AUTH; on a fresh PostgreSQL database; the send-rate limit
  off. Per message: email_deliver N times (its claim, a connection each). Bulk: batch_send over
  N recipients (one connection; per recipient one commit with its claim). Median of {repeat}.
images: N={thumbnail_n} 400-pixel-wide JPEG thumbnails (quality 85) of four 12-megapixel
  photo-like JPEGs, in one process (tests/bench/thumbnail.py), after one warm-up; plain Pillow
  (open, Lanczos resize, save) vs the family's image_variants_make. ssim: the worst of the four
  outputs against the full decode resized with Lanczos, uncompressed (1 = identical). peak_rss_mb:
  the process's peak while making them. Median of {repeat} (draft2: 1 run).
API sync: {sync_pages} pages of 100 contacts from a local JSON API (its own process, 20 ms per
  request) into an empty table, on a fresh PostgreSQL database, rate limit off. Naive: a new
  connection per request, update_or_create per record (a commit each). tasks.syncs: sync_run,
  the pooled client, one transaction per page (upserts and checkpoint). Median of {repeat}.
exports: the probe table of tests/exports/probe.py ({export_rows} rows: awkward text, numeric,
  timestamptz, boolean, a NULL every 7th row), made by PostgreSQL on a fresh database, vacuumed
  and read once (untimed), then written to a local file in one process (tests/bench/exports.py):
  bare COPY ... TO STDOUT (FORMAT csv, HEADER) through psycopg's cursor.copy, each chunk written
  as it comes (the baseline); writers.csv_copy (the family's COPY, neutralised); csv_write,
  jsonl_write, xlsx_write over a server-side cursor. cpu = this process's CPU per row + db = the
  PostgreSQL server's (others' included). Median of {repeat} runs (xlsx: 1); a COPY run keeps the
  fastest of {export_passes} passes (a second or so each), and csv_copy's passes alternate with
  bare ones: csv_copy_rows_ratio_vs_bare_same_process, a cross-check less exposed to other load
  than the ratio of two scenarios' medians. csv_copy_rows_export_run_per_s: export_run as CSV,
  the whole job (a count first, COPY, the file stored and recorded), in the same process.
  export_rss: export_run as CSV in a process per size; peak RSS (VmHWM, started over before the
  export) at {export_rss_rows[1]:,} rows
  less at {export_rss_rows[0]:,}."""


def settings_from_env() -> Settings:
    return Settings(
        publish_n=int(os.environ.get("BENCH_N", "20000")),
        drain_n=int(os.environ.get("BENCH_DRAIN_N", "10000")),
        repeat=int(os.environ.get("BENCH_REPEAT", "3")),
        loglevel=os.environ.get("BENCH_LOGLEVEL", "WARNING"),
        latency_n=int(os.environ.get("BENCH_LATENCY_N", "2000")),
        relay_n=int(os.environ.get("BENCH_RELAY_N", "10000")),
        db_drain_n=int(os.environ.get("BENCH_DB_DRAIN_N", "5000")),
        tracked_n=int(os.environ.get("BENCH_TRACKED_N", "5000")),
        smtp_n=int(os.environ.get("BENCH_SMTP_N", "500")),
        thumbnail_n=int(os.environ.get("BENCH_THUMBNAIL_N", "24")),
        sync_pages=int(os.environ.get("BENCH_SYNC_PAGES", "30")),
        export_rows=int(os.environ.get("BENCH_EXPORT_ROWS", "1000000")),
    )


def selected() -> list[Scenario]:
    only = [word for word in os.environ.get("BENCH_ONLY", "").split(",") if word]
    return [s for s in SCENARIOS if not only or any(word in s.key for word in only)]


def busy_cpus(seconds: float = 1.0) -> float:
    """How many CPUs something was using over ``seconds`` (/proc/stat), before we start."""

    def sample() -> tuple[int, int]:
        first_line = Path("/proc/stat").read_text().splitlines()[0]
        values = [int(v) for v in first_line.split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def run(scenarios: list[Scenario], settings: Settings) -> dict[str, Measurement]:
    """Every scenario's runs, round by round (see ``scenarios``)."""
    samples: dict[str, list[Sample]] = {s.key: [] for s in scenarios}
    for round_ in range(max((s.runs(settings) for s in scenarios), default=0)):
        for scenario in scenarios:
            if round_ >= scenario.runs(settings):
                continue
            started = time.monotonic()
            sample = scenario.run(settings)
            samples[scenario.key].append(sample)
            print(
                f"  [{round_ + 1}] {scenario.label}: {report.number(sample.value)} {scenario.unit} "
                f"({time.monotonic() - started:.0f}s)",
                flush=True,
            )
    return {key: Measurement.of(runs) for key, runs in samples.items()}


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every cleanup, as Ctrl-C does


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    # Celery takes CELERY_BROKER_URL from the environment over any broker given in code: one
    # exported in the shell sent the bench's messages to that broker, not to each scenario's vhost.
    os.environ.pop("CELERY_BROKER_URL", None)
    settings = settings_from_env()
    started = time.monotonic()
    busy = busy_cpus()
    print(
        f"bench: publish N={settings.publish_n}, drain N={settings.drain_n} x{settings.repeat}, "
        f"worker log level {settings.loglevel}; {busy:.1f} of {os.cpu_count()} CPUs busy "
        "before starting",
        flush=True,
    )
    if busy > 0.3:
        print("  warning: something else is using the CPUs; rates will be low and noisy")
    scenarios = selected()
    with postgres.session():  # drops the bench's databases, however the run ends
        measurements = run(scenarios, settings)
    table = report.rows([(s, measurements[s.key]) for s in scenarios])
    print()
    print(report.format_table(table))
    figures = report.figures(table)
    print()
    print(report.format_ratios(figures))
    print()
    print(
        METHOD.format(
            **vars(settings),
            warmup=producer.WARMUP,
            export_rss_rows=EXPORT_RSS_ROWS,
            export_passes=exports.PASSES,
        )
    )
    print()
    print(report.notes(table))
    figures.update(
        noop_publish_n=settings.publish_n,
        noop_drain_n=settings.drain_n,
        noop_drain_repeat=settings.repeat,
        enqueue_latency_n=settings.latency_n,
        relay_n=settings.relay_n,
        db_drain_n=settings.db_drain_n,
        tracked_drain_n=settings.tracked_n,
        smtp_n=settings.smtp_n,
        thumbnail_n=settings.thumbnail_n,
        sync_pages=settings.sync_pages,
        export_rows=settings.export_rows,
        export_rss_small_rows=EXPORT_RSS_ROWS[0],
        export_rss_large_rows=EXPORT_RSS_ROWS[1],
    )
    report.merge_json(RESULTS, figures)
    load = os.getloadavg()[0]
    print(
        f"\n{len(figures)} figures written to {RESULTS} in {time.monotonic() - started:.0f}s "
        f"(load average now {load:.1f})"
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: workers stopped, vhosts and databases deleted", file=sys.stderr)
        sys.exit(130)
