"""Periodic tasks as the admin may change them: which tasks, which arguments; when each runs next.

django-celery-beat's own admin lets anyone who may change a periodic task schedule any registered
task with any arguments. Here the admin (app/admin.py) schedules only the tasks the code schedules
(config/schedule.py and the families' ``SCHEDULE``) and those named in
``settings.SCHEDULABLE_TASKS``, with arguments their signature takes, in plain JSON.
"""

from __future__ import annotations

import inspect
import math
from datetime import datetime
from typing import Any

from celery import Task, current_app
from celery.utils.time import maybe_make_aware
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from kombu.utils.json import loads

from app.beat import wall_clock
from config.schedule import schedule_all


def schedulable_tasks() -> list[str]:
    """The task names the admin may schedule, registered ones only, sorted.

    Read on each call: a family's ``SCHEDULE`` is read from its module, and tests change the
    setting. A name that is not registered (its family deleted) is left out: beat would send a
    task that no worker knows.
    """
    names = {entry["task"] for entry in schedule_all().values()}
    names.update(settings.SCHEDULABLE_TASKS)
    return sorted(names & set(current_app.tasks))


def schedule_arguments_parse(*, args: str, kwargs: str) -> tuple[list[Any], dict[str, Any]]:
    """The arguments as beat will send them (it reads them with kombu's JSON), or a
    ``ValidationError`` per field.

    Plain JSON only: kombu's reader turns ``{"__type__": "datetime", ...}`` and the like into
    Python objects, which no task of a JSON-only wire expects.
    """
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for field, text, kind in (("args", args, list), ("kwargs", kwargs, dict)):
        try:
            value = loads(text or ("[]" if kind is list else "{}"))
        except ValueError as exc:
            errors[field] = f"not JSON: {exc}"
            continue
        if not isinstance(value, kind):
            errors[field] = f"must be a JSON {'list' if kind is list else 'object'}"
            continue
        problem = _not_plain_json(value, field)
        if problem:
            errors[field] = problem
        parsed[field] = value
    if errors:
        raise ValidationError(errors)
    return parsed["args"], parsed["kwargs"]


def _not_plain_json(value: Any, where: str) -> str | None:
    """What in ``value`` is not a JSON scalar, list or object (with its path), or None."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value}, which JSON does not allow"
    if isinstance(value, list):
        return next(
            (p for i, v in enumerate(value) if (p := _not_plain_json(v, f"{where}[{i}]"))), None
        )
    if isinstance(value, dict):
        return next(
            (p for k, v in value.items() if (p := _not_plain_json(v, f"{where}[{k!r}]"))), None
        )
    return f"{where} is a {type(value).__name__}, not plain JSON (a string, number, list...)"


def schedule_arguments_check(*, task: Task, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Refuse arguments ``task`` does not take: a ``ValidationError`` naming the argument.

    Bound to the signature of ``task.run``, which leaves out a ``bind=True`` task's ``self``
    (a bound method, or Celery's retry wrapper of one). Unknown names are looked for first, so a
    misspelt name is named as such rather than as the required argument it misses.
    """
    signature = inspect.signature(task.run)
    params = signature.parameters.values()
    plain = signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in params],
        return_annotation=signature.empty,
    )
    described = f"{task.name}{plain}"  # e.g. tasks.syncs.run(name)
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        takes = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(set(kwargs) - takes)
        if unknown:
            names = ", ".join(repr(name) for name in unknown)
            raise ValidationError({"kwargs": f"{described} takes no argument {names}"})
    try:
        signature.bind_partial(*args)
    except TypeError as exc:
        raise ValidationError({"args": f"{described}: {exc}"}) from None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ValidationError({"kwargs": f"{described}: {exc}"}) from None


def schedule_next_run(task: PeriodicTask, *, now: datetime | None = None) -> datetime | None:
    """When beat will send ``task`` next, reckoned as beat does; None when it will not.

    Beat asks the schedule how long remains from the last run (``remaining_estimate``), with
    the last run in the schedule's time zone (a crontab's own, else Celery's); a task that never
    ran counts from when it was last changed, as django-celery-beat's scheduler does. Overdue
    (beat is down, or about to send it): ``now``. A crontab Celery refuses (30 February): None,
    as beat leaves it out.
    """
    now = now or timezone.now()
    if not task.enabled or (task.one_off and task.total_run_count):
        return None
    if task.expires is not None and task.expires <= now:
        return None
    if task.clocked is not None:
        return None if task.last_run_at else max(task.clocked.clocked_time, now)
    # A new object on each access: its clock is ours to set. A crontab read on the wall clock
    # across daylight-saving changes, as beat reads it (app/beat.py).
    try:
        schedule = wall_clock(task.schedule)
    except ValueError:
        return None
    tz = getattr(schedule, "tz", None) or current_app.timezone
    schedule.nowfun = lambda: now.astimezone(tz)
    last = maybe_make_aware(task.last_run_at or task.date_changed).astimezone(tz)
    due = now + schedule.remaining_estimate(last)
    if task.start_time is not None:
        due = max(due, task.start_time)
    return max(due, now)
