"""Declared exports. A request names one of these and gives values for its filters; it never
sends SQL, field names or lookups of its own.

A queryset export, its columns as ``header -> field path``:

    EXPORTS["jobs"] = Export(
        name="jobs",
        queryset=lambda: JobRecord.objects.order_by("enqueued_at"),
        columns={"id": "id", "task": "task_name", "status": "status", "owner": "owner__username"},
        filters={"status": Filter(str, field="status"),
                 "since": Filter(datetime, field="enqueued_at", op="gte")},
    )

A SQL report: its columns are the SELECT's, its filters the ``%(name)s`` parameters (``None``
when the request leaves one out, so write ``(%(since)s IS NULL OR day >= %(since)s)``; write a
literal ``%`` as ``%%``).

``neutralise=False`` turns off the spreadsheet-formula guard for an export whose files are read
by programs, never opened in a spreadsheet (see ``writers.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from app.models import JobRecord

#: The Python types a filter value can have; the request's JSON value is converted to it.
FILTER_TYPES: tuple[type, ...] = (str, int, float, Decimal, bool, date, datetime)
#: Filter operators -> Django lookups (queryset exports).
OPERATORS: dict[str, str] = {
    "eq": "exact",
    "lt": "lt",
    "lte": "lte",
    "gt": "gt",
    "gte": "gte",
    "in": "in",
    "contains": "contains",
    "icontains": "icontains",
    "startswith": "startswith",
}


@dataclass(frozen=True)
class Filter:
    """A value a request may give. ``field`` and ``op`` say what it filters in a queryset
    export (``in`` takes a list); a SQL report binds it to ``%(name)s`` instead."""

    type: type
    field: str = ""
    op: str = "eq"
    required: bool = False

    def __post_init__(self) -> None:
        if self.type not in FILTER_TYPES:
            raise TypeError(f"filter type {self.type!r} is not one of {FILTER_TYPES}")
        if self.op not in OPERATORS:
            raise ValueError(f"filter operator {self.op!r} is not one of {sorted(OPERATORS)}")


def staff_only(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_active and getattr(user, "is_staff", False))


@dataclass(frozen=True)
class Export:
    """A named export: ``queryset`` with ``columns``, or ``sql``."""

    name: str
    queryset: Callable[[], QuerySet[Any]] | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    sql: str = ""
    filters: Mapping[str, Filter] = field(default_factory=dict)
    neutralise: bool = True
    #: Who may start it (the request's user): staff by default, as exports hold many rows.
    allowed: Callable[[AbstractBaseUser | AnonymousUser], bool] = staff_only
    #: Count the rows first, for a percentage (one more pass over the query).
    count_first: bool = True

    def __post_init__(self) -> None:
        if (self.queryset is None) == (not self.sql):
            raise ValueError(f"export {self.name!r}: give a queryset or sql, not both or neither")
        if self.queryset is not None:
            if not self.columns:
                raise ValueError(f"export {self.name!r}: a queryset export lists its columns")
            missing = [name for name, spec in self.filters.items() if not spec.field]
            if missing:
                raise ValueError(f"export {self.name!r}: filters {missing} name no field")


EXPORTS: dict[str, Export] = {}


def export_register(export: Export) -> Export:
    EXPORTS[export.name] = export
    return export


# The two examples: every job record, and a daily report of outcomes per task.
export_register(
    Export(
        name="jobs",
        queryset=lambda: JobRecord.objects.order_by("enqueued_at", "id"),
        columns={
            "id": "id",
            "task": "task_name",
            "queue": "queue",
            "status": "status",
            "attempts": "attempts",
            "error": "error",
            "owner": "owner__username",
            "enqueued_at": "enqueued_at",
            "finished_at": "finished_at",
        },
        filters={
            "status": Filter(str, field="status"),
            "statuses": Filter(str, field="status", op="in"),
            "task": Filter(str, field="task_name"),
            "since": Filter(datetime, field="enqueued_at", op="gte"),
            "until": Filter(datetime, field="enqueued_at", op="lt"),
        },
    )
)
export_register(
    Export(
        name="job_outcomes_by_day",
        sql="""
            SELECT date(enqueued_at) AS day, task_name AS task,
                   COUNT(*) AS jobs,
                   SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS succeeded,
                   SUM(CASE WHEN status IN ('failed', 'dead') THEN 1 ELSE 0 END) AS failed
            FROM app_jobrecord
            WHERE (%(since)s IS NULL OR enqueued_at >= %(since)s)
              AND (%(task)s IS NULL OR task_name = %(task)s)
            GROUP BY date(enqueued_at), task_name
            ORDER BY day, task
        """,
        filters={"since": Filter(date), "task": Filter(str)},
    )
)
