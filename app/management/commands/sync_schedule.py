"""Copy config/schedule.py into django-celery-beat's tables without wiping admin edits."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from celery import current_app
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)

from config.schedule import schedule_all

M = TypeVar("M", bound=models.Model)
CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone")


def schedule_find(model: type[M], **fields: Any) -> M:
    """The schedule row with exactly these fields, made when missing.

    Every field takes part, the model's defaults filled in: ``minute="0"`` alone would also match
    beat's own crontab (minute 0, hour 4) or one in another time zone. Schedule tables have no
    unique constraint, so rows made in the admin may repeat one another: the oldest is used.
    """
    spec = {
        field.name: field.get_default()
        for field in model._meta.concrete_fields
        if not field.primary_key and field.has_default()
    }
    spec.update(fields)
    return model._default_manager.filter(**spec).order_by("pk").first() or (
        model._default_manager.create(**spec)
    )


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
        unknown = set(entry["crontab"]) - set(CRONTAB_FIELDS)
        if unknown:
            raise CommandError(f"schedule entry {name!r}: unknown crontab fields {sorted(unknown)}")
        fields["crontab"] = schedule_find(CrontabSchedule, **entry["crontab"])
    else:
        fields["interval"] = schedule_find(
            IntervalSchedule, every=entry["every"], period=IntervalSchedule.SECONDS
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
        for name, entry in schedule_all().items():
            fields = schedule_fields(name, entry)
            if reset:
                _, created = PeriodicTask.objects.update_or_create(name=name, defaults=fields)
            else:
                _, created = PeriodicTask.objects.get_or_create(name=name, defaults=fields)
            state = "created" if created else ("reset" if reset else "kept (edited in the admin?)")
            self.stdout.write(f"{name}: {state}")
        # A deleted family leaves its periodic jobs behind: beat would send a task no worker
        # knows, and each run would end in a dead-letter queue. Disabled, not deleted: put the
        # family back and enable them in the admin.
        orphans = PeriodicTask.objects.filter(enabled=True).exclude(
            task__in=list(current_app.tasks)
        )
        for name in orphans.values_list("name", flat=True):
            self.stdout.write(f"{name}: disabled (its task is not registered)")
        if orphans.update(enabled=False):
            PeriodicTasks.update_changed()  # beat reloads the schedule
