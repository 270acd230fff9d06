"""Default periodic jobs. ``manage.py sync_schedule`` copies them into django-celery-beat's tables.

Entries are created when missing and otherwise left alone, so a schedule edited in the admin
survives deploys; ``sync_schedule --reset`` puts these defaults back. Beat reads the database.

Each entry: name -> {"task": dotted task name, "crontab": crontab fields or "every": seconds,
"kwargs": JSON-serialisable dict, optional "queue"}.
"""

from __future__ import annotations

from typing import Any

SCHEDULE: dict[str, dict[str, Any]] = {
    "example: say hello every hour": {
        "task": "tasks.example.say_hello",
        "crontab": {"minute": "0"},
        "kwargs": {"name": "beat"},
    },
}
