"""One run of a measurement: a publish run or a drain run, each in a fresh vhost of its own."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Queue
from kombu.utils.uuid import uuid

from tests.bench import probe, publisher
from tests.bench.rabbit import fresh_vhost, ready_count, total_count
from tests.bench.workers import ROOT, running, tree_cpu_seconds


@dataclass(frozen=True)
class Sample:
    """One run: a rate, and other figures (JSON key suffix -> value)."""

    per_s: float
    extra: dict[str, float] = field(default_factory=dict)
    #: What ran, for the reader (e.g. the worker's command line).
    note: str = ""


@dataclass(frozen=True)
class Measurement:
    """The median of a scenario's runs (extras too), and the runs' rates."""

    per_s: float
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
        rates = [sample.per_s for sample in samples]
        return cls(statistics.median(rates), rates, extra, samples[0].note)


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


# --- drain ---------------------------------------------------------------------------------------


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
    wait_until(
        lambda: ready_count(url, queue.name) == n, timeout=60, what=f"{n} in queue", every=0.1
    )


def drain(drain: Drain, n: int, loglevel: str) -> Sample:
    """Fill the queue (untimed), start the worker, wait for ``n`` completions.

    The rate is n / (``worker_ready`` -> the last task's ``task_postrun``), both recorded in the
    worker (see ``probe``); then the queue must hold nothing, unacked messages included. Extras:
    ``startup_s``, launch -> ``worker_ready``; ``cpu_ms_per_1k``, CPU time of the worker's
    processes (all of them) between ``worker_ready`` and the last completion, per 1,000 jobs.
    """
    with fresh_vhost(drain.label) as url, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        fill(url, drain.queue, drain.task, n)
        probe_dir = Path(tmp)
        env = {
            **base_env(url),
            "BENCH_PROBE_DIR": tmp,
            "LOG_LEVEL": drain.loglevel or loglevel,
            **drain.env,
        }
        log = probe_dir / "worker.log"
        argv = drain.argv(env)
        launched = time.time()
        with running(argv, env=env, log=log) as worker:
            try:
                wait_until(
                    lambda: worker.poll() is not None or probe.ready_at(probe_dir) is not None,
                    timeout=120,
                    what="worker_ready",
                    every=0.005,
                )
                cpu_start = tree_cpu_seconds(worker.pid)
                wait_until(
                    lambda: worker.poll() is not None or probe.completions(probe_dir) >= n,
                    timeout=max(120.0, n / 100),
                    what=f"{n} jobs done",
                    every=0.02,
                )
                cpu = tree_cpu_seconds(worker.pid) - cpu_start
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
        ready = probe.ready_at(probe_dir)
        assert ready is not None
        seconds = probe.last_completion(probe_dir) - ready
        return Sample(
            n / seconds,
            {"startup_s": round(ready - launched, 2), "cpu_ms_per_1k": round(cpu / n * 1e6)},
            note="celery " + " ".join(argv),
        )
