"""Copy config/schedule.py into django-celery-beat's tables without wiping admin edits."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from config.schedule import SCHEDULE


def schedule_fields(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The PeriodicTask fields for one SCHEDULE entry; a malformed entry names itself."""
    if "task" not in entry or ("crontab" in entry) == ("every" in entry):
        raise CommandError(f"schedule entry {name!r} needs 'task' and one of 'crontab' or 'every'")
    fields: dict[str, Any] = {
        "task": entry["task"],
        "kwargs": json.dumps(entry.get("kwargs", {})),
        "queue": entry.get("queue"),
        "interval": None,
        "crontab": None,
    }
    if "crontab" in entry:
        fields["crontab"], _ = CrontabSchedule.objects.get_or_create(**entry["crontab"])
    else:
        fields["interval"], _ = IntervalSchedule.objects.get_or_create(
            every=entry["every"], period=IntervalSchedule.SECONDS
        )
    return fields


class Command(BaseCommand):
    help = "Create the periodic jobs of config/schedule.py that are missing; --reset overwrites."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="overwrite existing entries of the same name with the defaults",
        )

    @transaction.atomic
    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        for name, entry in SCHEDULE.items():
            fields = schedule_fields(name, entry)
            if reset:
                _, created = PeriodicTask.objects.update_or_create(name=name, defaults=fields)
            else:
                _, created = PeriodicTask.objects.get_or_create(name=name, defaults=fields)
            state = "created" if created else ("reset" if reset else "kept (edited in the admin?)")
            self.stdout.write(f"{name}: {state}")
