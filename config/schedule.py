"""Default periodic jobs; a family's own are in its ``tasks.py`` (``SCHEDULE``).

``manage.py sync_schedule`` copies them all into django-celery-beat's tables.

Entries are created when missing and otherwise left alone, so a schedule edited in the admin
survives deploys; ``sync_schedule --reset`` puts these defaults back. Beat reads the database.

Each entry: name -> {"task": dotted task name, "crontab": crontab fields or "every": seconds,
"kwargs": JSON-serialisable dict, optional "queue"}. Crontab fields are those of
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
