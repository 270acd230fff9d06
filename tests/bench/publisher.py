"""A producer process: publishes N no-op tasks with ``.delay()`` and reports the time it took.

    python -m tests.bench.publisher {bare|template} N ['{"conf_key": value}']

The broker URL is read from ``BENCH_BROKER_URL``. ``template`` is ``config.celery.app`` as a web
process has it (Django set up, settings from the environment); ``bare`` is ``bare_app.make_app``.
The optional JSON object is applied to the app's conf before anything is published, to measure
what one setting costs. One message is published before the clock starts, so that connecting and
declaring are not timed. The last line printed is ``RESULT {"seconds": ..., "cpu_seconds": ...}``
(CPU time of this process, which other load on the machine hardly changes).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from celery import Celery

RESULT_PREFIX = "RESULT "


def load(kind: str, url: str) -> tuple[Celery, Any]:
    """The app and its no-op task."""
    if kind == "bare":
        from tests.bench.bare_app import NOOP, make_app

        app = make_app(url)
        return app, app.tasks[NOOP]
    if kind == "template":
        os.environ["CELERY_BROKER_URL"] = url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django

        django.setup()
        from config.celery import app as template_app
        from tests.bench.noop import noop

        return template_app, noop
    raise SystemExit(f"unknown app {kind!r}: bare or template")


def main(argv: list[str]) -> None:
    kind, n = argv[0], int(argv[1])
    overrides: dict[str, Any] = json.loads(argv[2]) if len(argv) > 2 else {}
    app, task = load(kind, os.environ["BENCH_BROKER_URL"])
    app.conf.update(overrides)
    task.delay()  # connect and declare, untimed
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(n):
        task.delay()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    app.close()
    print(RESULT_PREFIX + json.dumps({"seconds": seconds, "cpu_seconds": cpu, "n": n}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
