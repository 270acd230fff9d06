"""Default periodic jobs. ``manage.py sync_schedule`` copies them into django-celery-beat's tables.

Entries are created when missing and otherwise left alone, so a schedule edited in the admin
survives deploys; ``sync_schedule --reset`` puts these defaults back. Beat reads the database.

Each entry: name -> {"task": dotted task name, "crontab": crontab fields or "every": seconds,
"kwargs": JSON-serialisable dict, optional "queue"}. Crontab fields are those of
django-celery-beat's CrontabSchedule (minute, hour, day_of_week, day_of_month, month_of_year,
timezone); a field left out means "*", and the time zone CELERY_TIMEZONE.
"""

from __future__ import annotations

from typing import Any

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
    "example: say hello every hour": {
        "task": "tasks.example.say_hello",
        "crontab": {"minute": "0"},
        "kwargs": {"name": "beat"},
    },
}
