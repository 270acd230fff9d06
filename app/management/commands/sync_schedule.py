"""Copy config/schedule.py (and each family's ``SCHEDULE``) into django-celery-beat's tables.

How a code change is told from an admin edit: for each schedule of the code, ``ScheduleSync``
keeps a fingerprint of the row as the sync last wrote it. A row that still has that fingerprint
was not touched in the admin, so a changed code entry is applied to it; a row that differs was
edited by an operator and is kept (``--reset`` puts the code's back). A schedule that left the
code is disabled, not deleted. Running it again changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from celery import current_app
from celery.schedules import crontab
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)

from app.models import ScheduleSync
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
        "enabled": True,
    }
    if "crontab" in entry:
        unknown = set(entry["crontab"]) - set(CRONTAB_FIELDS)
        if unknown:
            raise CommandError(f"schedule entry {name!r}: unknown crontab fields {sorted(unknown)}")
        fields["crontab"] = schedule_find(CrontabSchedule, **entry["crontab"])
        period = crontab_period(entry["crontab"])
    else:
        fields["interval"] = schedule_find(
            IntervalSchedule, every=entry["every"], period=IntervalSchedule.SECONDS
        )
        period = int(entry["every"])
    # No backlog storm: a message still waiting when the next run is due is dropped by the
    # worker (Celery's `expires`), so after an outage a job due every minute runs once, not a
    # hundred times.
    fields["expire_seconds"] = int(entry.get("expires", period))
    return fields


def crontab_period(fields: dict[str, str]) -> int:
    """Seconds between the next two runs of a crontab from now (at least 1)."""
    spec = {key: value for key, value in fields.items() if key != "timezone"}

    def next_run(after: datetime) -> datetime:
        return after + crontab(**spec, nowfun=lambda: after).remaining_estimate(after)

    first = next_run(datetime.now(UTC).replace(second=0, microsecond=0))
    return max(1, int((next_run(first + timedelta(seconds=1)) - first).total_seconds()))


def fingerprint(task: PeriodicTask) -> str:
    """The schedule fields of a row, hashed: what an edit in the admin changes."""
    when: Any
    if task.crontab is not None:
        when = [getattr(task.crontab, f) for f in CRONTAB_FIELDS[:-1]]
        when.append(str(task.crontab.timezone))
    elif task.interval is not None:
        when = [task.interval.every, task.interval.period]
    else:
        when = str(task.clocked or task.solar)
    fields = [task.task, json.loads(task.args or "[]"), json.loads(task.kwargs or "{}"),
              task.queue, task.expire_seconds, task.enabled, task.one_off, when]  # fmt: skip
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class Command(BaseCommand):
    help = (
        "Create the periodic jobs of the code that are missing, apply code changes to those not "
        "edited in the admin, disable those that left the code; --reset overwrites edits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="overwrite entries edited in the admin with the code's",
        )

    @transaction.atomic
    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        code = schedule_all()
        for name, entry in code.items():
            self.stdout.write(f"{name}: {self.sync_one(name, entry, reset=reset)}")
        # A schedule that left the code: disabled, not deleted (its history and any admin
        # edits stay; put it back in the code and the next sync enables it again).
        for record in ScheduleSync.objects.exclude(name__in=list(code)):
            task = PeriodicTask.objects.filter(name=record.name).first()
            if task is not None and task.enabled:
                task.enabled = False
                task.save(update_fields=["enabled"])
                ScheduleSync.objects.filter(name=record.name).update(written=fingerprint(task))
                self.stdout.write(f"{record.name}: disabled (no longer in the code)")
        # A deleted family leaves its periodic jobs behind: beat would send a task no worker
        # knows, and each run would end in a dead-letter queue. Disabled, not deleted: put the
        # family back and enable them in the admin.
        orphans = PeriodicTask.objects.filter(enabled=True).exclude(
            task__in=list(current_app.tasks)
        )
        for name in orphans.values_list("name", flat=True):
            self.stdout.write(f"{name}: disabled (its task is not registered)")
        orphans.update(enabled=False)
        PeriodicTasks.update_changed()  # beat reloads the schedule (bulk updates send no signal)

    def sync_one(self, name: str, entry: dict[str, Any], *, reset: bool) -> str:
        fields = schedule_fields(name, entry)
        # A task no worker knows (a typo, a module gone): beat would send it to a dead-letter
        # queue on every run. Written disabled, so each sync agrees with itself.
        fields["enabled"] = entry["task"] in current_app.tasks
        wanted = fingerprint(PeriodicTask(name=name, **fields))
        task = PeriodicTask.objects.filter(name=name).first()
        last = ScheduleSync.objects.filter(name=name).values_list("written", flat=True).first()
        if task is None:
            task = PeriodicTask.objects.create(name=name, **fields)
            state = "created"
        elif fingerprint(task) == wanted:
            state = "up to date"
        elif reset or fingerprint(task) == last:
            for field, value in fields.items():
                setattr(task, field, value)
            task.save()
            state = "reset" if reset else "updated (the code changed)"
        else:
            return "kept: edited in the admin (--reset puts the code's back)"
        ScheduleSync.objects.update_or_create(name=name, defaults={"written": wanted})
        return state
