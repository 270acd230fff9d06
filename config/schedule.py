"""Default periodic jobs; a family's own are in its ``tasks.py`` (``SCHEDULE``).

``manage.py sync_schedule`` copies them all into django-celery-beat's tables.

A missing entry is created; a changed one is applied unless the schedule was edited in the
admin, which is kept (``sync_schedule --reset`` puts these back); one removed from here ends
disabled. Beat reads the database.

Each entry: name -> {"task": dotted task name, "crontab": crontab fields or "every": seconds,
"kwargs": JSON-serialisable dict, optional "queue", optional "expires": seconds a message may
wait, by default until the next run is due}. Crontab fields are those of
django-celery-beat's CrontabSchedule (minute, hour, day_of_week, day_of_month, month_of_year,
timezone); a field left out means "*", and the time zone CELERY_TIMEZONE.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from config.families import task_modules

SCHEDULE: dict[str, dict[str, Any]] = {
    "jobs: relay the outbox": {
        # Publishes jobs whose publish after commit failed because the broker was down.
        "task": "tasks.maintenance.relay_outbox",
        "every": 30,
    },
    "jobs: check alerts": {
        # Failure rates, dead-letter queues, waiting jobs, the outbox: app/alerts.py.
        "task": "tasks.maintenance.check_alerts",
        "every": 60,
    },
    "jobs: prune old records": {
        "task": "tasks.maintenance.prune_jobs",
        "crontab": {"minute": "17", "hour": "3"},
    },
}


def schedule_all() -> dict[str, dict[str, Any]]:
    """SCHEDULE and each task module's own ``SCHEDULE`` (a family keeps its periodic jobs next to
    its tasks, and takes them along when it is copied or deleted)."""
    entries = dict(SCHEDULE)
    for module in task_modules():
        entries.update(getattr(import_module(module), "SCHEDULE", {}))
    return entries
