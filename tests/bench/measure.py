"""One run of a measurement: publish, enqueue latency, relay or drain, each in a fresh vhost of its
own (and, where a database is used, a fresh PostgreSQL database of its own: ``postgres``)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Queue
from kombu.utils.uuid import uuid

from tests.bench import bare_app, postgres, probe, producer, publisher
from tests.bench.rabbit import fresh_vhost, ready_count, total_count
from tests.bench.scraper import scraping
from tests.bench.workers import ROOT, running, tree_cpu_seconds


@dataclass(frozen=True)
class Sample:
    """One run: its figure (a rate, or a latency in ms), and other figures (JSON key suffix ->
    value)."""

    value: float
    extra: dict[str, float] = field(default_factory=dict)
    #: What ran, for the reader (e.g. the worker's command line).
    note: str = ""


@dataclass(frozen=True)
class Measurement:
    """The median of a scenario's runs (extras too), and the runs' figures."""

    value: float
    runs: list[float]
    extra: dict[str, float]
    note: str

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> Measurement:
        names = sorted({name for sample in samples for name in sample.extra})
        extra = {
            name: statistics.median(s.extra[name] for s in samples if name in s.extra)
            for name in names
        }
        values = [sample.value for sample in samples]
        return cls(statistics.median(values), values, extra, samples[0].note)


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, every: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def base_env(url: str) -> dict[str, str]:
    """What every bench process gets: the vhost, for the bare app and for the template's."""
    return {
        **os.environ,
        "BENCH_BROKER_URL": url,
        "CELERY_BROKER_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }


@contextmanager
def maybe_database(label: str, wanted: bool) -> Iterator[str | None]:
    """A fresh PostgreSQL database's URL when ``wanted``, else None."""
    with postgres.fresh_database(label) if wanted else nullcontext() as url:
        yield url


def run_producer(mode: str, n: int, env: Mapping[str, str]) -> dict[str, float]:
    """``python -m tests.bench.producer MODE N``; its RESULT."""
    command = [sys.executable, "-m", "tests.bench.producer", mode, str(n)]
    out = subprocess.run(
        command, cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=900
    )
    if out.returncode:
        raise RuntimeError(f"producer {mode} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(
        out.stdout.splitlines()[-1].removeprefix(producer.RESULT_PREFIX)
    )
    return result


# --- publish -------------------------------------------------------------------------------------


def publish(label: str, app: str, queue: str, n: int, conf: Mapping[str, Any]) -> Sample:
    """``n`` ``.delay()`` calls from one producer process (``publisher``), in a new vhost."""
    with fresh_vhost(label) as url:
        command = [sys.executable, "-m", "tests.bench.publisher", app, str(n), json.dumps(conf)]
        out = subprocess.run(
            command, cwd=ROOT, env=base_env(url), capture_output=True, text=True, timeout=900
        )
        if out.returncode:
            raise RuntimeError(f"publisher failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.splitlines()[-1].removeprefix(publisher.RESULT_PREFIX))
        # The warm-up message plus n: nothing lost (without confirms, the broker may lag a bit).
        wait_until(
            lambda: ready_count(url, queue) == n + 1,
            timeout=30,
            what=f"{n + 1} messages in {queue}",
            every=0.1,
        )
    return Sample(n / result["seconds"], {"cpu_us_per_msg": round(result["cpu_seconds"] / n * 1e6)})


# --- enqueue latency and relay -------------------------------------------------------------------


def latency(label: str, mode: str, queue: str, n: int, *, database: bool) -> Sample:
    """``n`` timed enqueues (``producer`` MODE) in a new vhost (and database): the p99 latency in
    ms; extras ``p50_ms``, ``mean_ms``, ``max_ms``, ``cpu_us_per_msg`` (the producer's CPU per
    enqueue) and, with a database, ``db_cpu_us_per_msg`` (the PostgreSQL server's, whole run)."""
    with fresh_vhost(label) as url, maybe_database(label, database) as db:
        env = {**base_env(url), **({"DATABASE_URL": db} if db else {})}
        db_cpu = postgres.server_cpu_seconds()
        result = run_producer(mode, n, env)
        db_cpu = postgres.server_cpu_seconds() - db_cpu
        expected = n + producer.WARMUP
        wait_until(
            lambda: ready_count(url, queue) == expected,
            timeout=30,
            what=f"{expected} messages in {queue}",
            every=0.1,
        )
    extra = {
        "p50_ms": round(result["p50_ms"], 3),
        "mean_ms": round(result["mean_ms"], 3),
        "max_ms": round(result["max_ms"], 1),
        "cpu_us_per_msg": round(result["cpu_seconds"] / n * 1e6),
    }
    if db:
        extra["db_cpu_us_per_msg"] = round(db_cpu / expected * 1e6)
    return Sample(result["p99_ms"], extra)


def relay(label: str, queue: str, n: int) -> Sample:
    """``outbox_relay()`` over ``n`` pending rows (``producer`` relay): rows per second; extras
    ``cpu_us_per_msg`` (the relay process's), ``db_cpu_us_per_msg`` (the PostgreSQL server's,
    whole run: the untimed bulk insert included), and the cross-check: ``bare_publish_per_s``,
    a bare ``delay()`` without confirms in the same process right after, and
    ``ratio_vs_bare_same_process``."""
    with fresh_vhost(label) as url, postgres.fresh_database(label) as db:
        db_cpu = postgres.server_cpu_seconds()
        result = run_producer("relay", n, {**base_env(url), "DATABASE_URL": db})
        db_cpu = postgres.server_cpu_seconds() - db_cpu
        bare_n = n // 2 + 1  # with the warm-up message
        for name, count in ((queue, n), (bare_app.QUEUE.name, bare_n)):
            wait_until(
                lambda: ready_count(url, name) == count,  # noqa: B023  (called at once)
                timeout=30,
                what=f"{count} in {name}",
                every=0.1,
            )
    rate, bare_rate = n / result["seconds"], (n // 2) / result["bare_seconds"]
    return Sample(
        rate,
        {
            "cpu_us_per_msg": round(result["cpu_seconds"] / n * 1e6),
            "db_cpu_us_per_msg": round(db_cpu / n * 1e6),
            "bare_publish_per_s": round(bare_rate, 1),
            "ratio_vs_bare_same_process": round(rate / bare_rate, 3),
        },
    )


# --- email --------------------------------------------------------------------------------------


def smtp(label: str, mode: str, n: int) -> Sample:
    """``n`` emails (``tests.bench.smtp`` MODE) on a fresh database: messages per second."""
    with postgres.fresh_database(label) as db:
        command = [sys.executable, "-m", "tests.bench.smtp", mode, str(n)]
        env = {**os.environ, "DATABASE_URL": db, "DJANGO_SETTINGS_MODULE": "config.settings"}
        out = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        if out.returncode:
            raise RuntimeError(f"smtp {mode} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.splitlines()[-1].removeprefix("RESULT "))
    return Sample(n / result["seconds"], {"ms_per_msg": round(result["seconds"] / n * 1e3, 2)})


# --- images ------------------------------------------------------------------------------------


def thumbnail(mode: str, n: int) -> Sample:
    """``n`` thumbnails of 12-megapixel JPEGs (``tests.bench.thumbnail`` MODE): images per
    second; extras ``peak_rss_mb`` and ``ssim`` (the worst of the outputs against a reference)."""
    command = [sys.executable, "-m", "tests.bench.thumbnail", mode, str(n)]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"thumbnail {mode} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.splitlines()[-1].removeprefix("RESULT "))
    extra = {"peak_rss_mb": round(result["peak_rss_mb"], 1), "ssim": round(result["ssim"], 4)}
    return Sample(n / result["seconds"], extra)


# --- API syncs ---------------------------------------------------------------------------------


def sync(label: str, mode: str, pages: int) -> Sample:
    """``pages`` pages (``tests.bench.sync`` MODE) on a fresh database: pages per second."""
    with postgres.fresh_database(label) as db:
        command = [sys.executable, "-m", "tests.bench.sync", mode, str(pages)]
        env = {**os.environ, "DATABASE_URL": db, "DJANGO_SETTINGS_MODULE": "config.settings"}
        out = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        if out.returncode:
            raise RuntimeError(f"sync {mode} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.splitlines()[-1].removeprefix("RESULT "))
    seconds = result["seconds"]
    return Sample(pages / seconds, {"ms_per_page": round(seconds / pages * 1e3, 1)})


# --- exports -----------------------------------------------------------------------------------


def run_exports(mode: str, rows: int) -> dict[str, float]:
    """``python -m tests.bench.exports MODE ROWS`` on a fresh database; its RESULT."""
    with postgres.fresh_database(f"export-{mode}") as db:
        command = [sys.executable, "-m", "tests.bench.exports", mode, str(rows)]
        env = {**os.environ, "DATABASE_URL": db, "DJANGO_SETTINGS_MODULE": "config.settings"}
        out = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        if out.returncode:
            raise RuntimeError(f"export {mode} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        result: dict[str, float] = json.loads(out.stdout.splitlines()[-1].removeprefix("RESULT "))
    return result


def export(mode: str, rows: int) -> Sample:
    """One pass of export MODE (``tests.bench.exports``) over the ``rows``-row probe table: rows
    per second; extras ``cpu_us_per_row`` (the exporting process's CPU), ``db_cpu_us_per_row``
    (the PostgreSQL server's), ``bytes_per_row`` and, for ``csv-copy``, ``export_run_per_s``
    (the whole job: count, COPY, storage) and the cross-check ``bare_copy_same_process_per_s``,
    ``ratio_vs_bare_same_process`` (bare COPY passes interleaved with its own)."""
    result = run_exports(mode, rows)
    extra = {
        "cpu_us_per_row": round(result["cpu_seconds"] / rows * 1e6, 2),
        "db_cpu_us_per_row": round(result["db_cpu_seconds"] / rows * 1e6, 2),
        "bytes_per_row": round(result["bytes"] / rows, 1),
    }
    if "export_run_seconds" in result:
        extra["export_run_per_s"] = round(rows / result["export_run_seconds"])
        extra["bare_copy_same_process_per_s"] = round(rows / result["bare_seconds"])
        extra["ratio_vs_bare_same_process"] = round(result["bare_seconds"] / result["seconds"], 3)
    return Sample(rows / result["seconds"], extra)


def export_rss(small: int, large: int) -> Sample:
    """The peak RSS growth (MB) of ``export_run`` as CSV from ``small`` rows to ``large``, each
    in a process of its own; extras ``peak_small_mb``, ``peak_large_mb``."""
    peaks = {rows: run_exports("rss", rows)["peak_rss_mb"] for rows in (small, large)}
    extra = {"peak_small_mb": round(peaks[small], 1), "peak_large_mb": round(peaks[large], 1)}
    return Sample(peaks[large] - peaks[small], extra)


# --- drain ---------------------------------------------------------------------------------------

#: Fills a drain's queue: (the environment, broker and database URLs included; n).
Filler = Callable[[Mapping[str, str], int], None]


@dataclass(frozen=True)
class Drain:
    """A drain scenario: a queue filled with no-op messages, and the worker that empties it."""

    label: str
    #: The queue to fill and the task name to put in it.
    queue: Queue
    task: str
    #: The worker's arguments after ``python -m celery``, built for the worker's environment.
    argv: Callable[[Mapping[str, str]], Sequence[str]]
    #: Added to the worker's environment.
    env: Mapping[str, str] = field(default_factory=dict)
    #: The worker's log level, when not the one every scenario gets (BENCH_LOGLEVEL).
    loglevel: str | None = None
    #: Run on a fresh PostgreSQL database (``DATABASE_URL`` for the fill and the worker); without
    #: it, the worker has no DATABASE_URL (the template falls back to SQLite, never opened).
    database: bool = False
    #: Fills the queue, when ``fill`` (raw messages, as ``apply_async`` sends them) does not.
    filler: Filler | None = None
    #: With a database, the drain must leave N succeeded job records (tracked) or none.
    tracked: bool = False
    #: Scrape /metrics every second while the worker runs (tests/bench/scraper.py).
    scraped: bool = False


def fill(url: str, queue: Queue, task: str, n: int) -> None:
    """Put ``n`` messages of ``task`` in ``queue``, as Celery formats them (protocol 2, JSON,
    persistent) but published straight through kombu without confirms, to save time."""
    app = Celery("fill", broker=url, set_as_current=False)
    try:
        with app.connection_for_write() as conn:
            queue(conn.default_channel).declare()
            producer = conn.Producer(serializer="json")
            for _ in range(n):
                message = app.amqp.as_task_v2(uuid(), task, (), {}, ignore_result=True)
                producer.publish(
                    message.body,
                    exchange=queue.exchange.name,
                    routing_key=queue.routing_key,
                    headers=message.headers,
                    delivery_mode=2,
                    **message.properties,
                )
    finally:
        app.close()


def fill_enqueued(env: Mapping[str, str], n: int) -> None:
    """What ``n`` ``job_enqueue(tracked_noop)`` with the broker up leave (``producer``)."""
    run_producer("fill-enqueued", n, env)


def drain(drain: Drain, n: int, loglevel: str) -> Sample:
    """Fill the queue (untimed), start the worker, wait for ``n`` completions.

    The rate is n / (``worker_ready`` -> the last task's ``task_postrun``), both recorded in the
    worker (see ``probe``); then the queue must hold nothing, unacked messages included, and the
    job records must be as ``drain.records`` says. Extras: ``startup_s``, launch ->
    ``worker_ready``; ``cpu_ms_per_1k``, CPU time of the worker's processes (all of them) between
    ``worker_ready`` and the last completion, per 1,000 jobs; with a database,
    ``db_cpu_ms_per_1k``, the PostgreSQL server's CPU time over the same span, and
    ``db_connections_per_1k``, the connections the worker opened to the database then.
    """
    with (
        fresh_vhost(drain.label) as url,
        maybe_database(drain.label, drain.database) as db,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        env = {
            **base_env(url),
            **({"DATABASE_URL": db} if db else {}),
            "BENCH_PROBE_DIR": tmp,
            "LOG_LEVEL": drain.loglevel or loglevel,
            **drain.env,
        }
        if drain.filler:
            drain.filler({**env, "BENCH_PROBE_DIR": ""}, n)
        else:
            fill(url, drain.queue, drain.task, n)
        wait_until(
            lambda: ready_count(url, drain.queue.name) == n,
            timeout=60,
            what=f"{n} in queue",
            every=0.1,
        )
        probe_dir = Path(tmp)
        log = probe_dir / "worker.log"
        argv = drain.argv(env)
        launched = time.time()
        scrapes = scraping(env, probe_dir) if drain.scraped else nullcontext(None)
        with scrapes as scrape_log, running(argv, env=env, log=log) as worker:
            try:
                wait_until(
                    lambda: worker.poll() is not None or probe.ready_at(probe_dir) is not None,
                    timeout=120,
                    what="worker_ready",
                    every=0.005,
                )
                cpu_start = tree_cpu_seconds(worker.pid)
                db_cpu_start = postgres.server_cpu_seconds() if db else 0.0
                sessions_start = postgres.sessions(db) if db else 0
                wait_until(
                    lambda: worker.poll() is not None or probe.completions(probe_dir) >= n,
                    timeout=max(120.0, n / 20),  # 20 jobs/s at worst: tracked ones drain at ~500/s
                    what=f"{n} jobs done",
                    every=0.02,
                )
                cpu = tree_cpu_seconds(worker.pid) - cpu_start
                db_cpu = postgres.server_cpu_seconds() - db_cpu_start if db else 0.0
                # Less the first query that counts them.
                sessions = postgres.sessions(db) - sessions_start - 1 if db else 0
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.returncode}")
                wait_until(
                    lambda: total_count(url, drain.queue.name) == 0,
                    timeout=30,
                    what=f"{drain.queue.name} empty, unacked included",
                    every=0,
                )
            except Exception:
                print(f"--- worker log ({drain.label}) ---\n{log.read_text()[-5000:]}")
                raise
        if db:
            records = postgres.count_by_status(db)
            if records != ({"succeeded": n} if drain.tracked else {}):
                raise RuntimeError(f"job records by status after the drain: {records}")
        ready = probe.ready_at(probe_dir)
        assert ready is not None
        seconds = probe.last_completion(probe_dir) - ready
        extra = {"startup_s": round(ready - launched, 2), "cpu_ms_per_1k": round(cpu / n * 1e6)}
        if db:
            extra["db_cpu_ms_per_1k"] = round(db_cpu / n * 1e6)
            extra["db_connections_per_1k"] = round(sessions / n * 1e3, 1)
        if scrape_log is not None:
            took = [float(line) for line in scrape_log.read_text().split()]
            extra["scrapes"] = len(took)
            extra["scrape_ms_median"] = round(statistics.median(took), 1) if took else 0.0
        return Sample(n / seconds, extra, note="celery " + " ".join(argv))
