"""Loaded into every bench worker (by ``bare_app`` and ``noop``) to time the drain from inside.

With ``BENCH_PROBE_DIR`` set, the worker writes there:

- ``ready``: when ``worker_ready`` fired, i.e. right after the consumer started consuming, with
  the pool up (Celery sends it between ``consumer.consume()`` and the event loop);
- ``done``: one fixed-width line per finished task, with the time it finished (``task_postrun``,
  in whichever process or thread ran it). ``O_APPEND`` writes of one short line are atomic, so
  the file's size counts completions and its largest time is when the last one finished.

Every scenario pays the same few microseconds per task for this. Without the variable, nothing
is connected.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import signals

PROBE_DIR = os.environ.get("BENCH_PROBE_DIR", "")
READY_FILE = "ready"
DONE_FILE = "done"
#: One completion: a time.time() stamp, fixed width so that size // RECORD_SIZE counts them.
RECORD_SIZE = 18
_fds: dict[int, int] = {}


def _done_fd() -> int:
    """This process's descriptor (opened after any fork; threads share it)."""
    pid = os.getpid()
    fd = _fds.get(pid)
    if fd is None:
        path = os.path.join(PROBE_DIR, DONE_FILE)
        fd = _fds[pid] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return fd


def on_worker_ready(**kwargs: Any) -> None:
    Path(PROBE_DIR, READY_FILE).write_text(f"{time.time():.6f}\n")


def on_task_postrun(**kwargs: Any) -> None:
    os.write(_done_fd(), b"%17.6f\n" % time.time())


def completions(probe_dir: Path) -> int:
    path = probe_dir / DONE_FILE
    return path.stat().st_size // RECORD_SIZE if path.exists() else 0


def last_completion(probe_dir: Path) -> float:
    return max(float(line) for line in (probe_dir / DONE_FILE).read_text().split())


def ready_at(probe_dir: Path) -> float | None:
    path = probe_dir / READY_FILE
    text = path.read_text() if path.exists() else ""
    return float(text) if text.endswith("\n") else None


if PROBE_DIR:
    signals.worker_ready.connect(on_worker_ready, weak=False)
    signals.task_postrun.connect(on_task_postrun, weak=False)
