"""THE list of scenarios, and the ratios between them.

A new scenario is an entry in ``SCENARIOS``, most often built by ``publish_scenario`` or
``drain_scenario``; a new ratio is an entry in ``RATIOS``.

A scenario's ``run`` does one run. Repeated scenarios run ``BENCH_REPEAT`` times, interleaved
with the others (round 1 of every scenario, then round 2...), so that a burst of load elsewhere on
the machine does not land on one scenario only; the median is kept. The rate goes to the JSON as
``<key>_per_s``, extras as ``<key>_<name>``. The table shows each rate against its ``baseline``.
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


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    unit: str
    run: Callable[[Settings], Sample]
    repeated: bool
    baseline: str | None = None

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


def drain_scenario(drain: Drain) -> Callable[[Settings], Sample]:
    def run(settings: Settings) -> Sample:
        return measure.drain(drain, settings.drain_n, settings.loglevel)

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


def template_drain(label: str, script: str, *, loglevel: str | None = None) -> Drain:
    """The template's worker as ``bin/<script>`` starts it, on the ``default`` queue."""
    return Drain(
        label=label,
        queue=work_queue(DEFAULT_QUEUE),
        task=noop.NAME,
        argv=lambda env: template_worker_argv(script, queue=DEFAULT_QUEUE, env=env),
        loglevel=loglevel,
    )


PUBLISH_BASE = "noop_publish_bare"
DRAIN_BASE = "noop_drain_bare"
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
        "noop_drain_template_cpu",
        "drain, template bin/worker-cpu",
        "jobs/s",
        drain_scenario(template_drain("drain-cpu", "worker-cpu")),
        repeated=True,
        baseline=DRAIN_BASE,
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
    "noop_drain_ratio_template_cpu_vs_bare_acks_late": (
        "noop_drain_template_cpu",
        "noop_drain_bare_acks_late",
    ),
}
