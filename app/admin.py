"""Admin: job records and the outbox, read-only, with the replay and cancel actions; periodic
tasks, with what may be scheduled checked.

Records are written by the engine, never edited by hand: a record's page is view-only (saving
stale values back could undo a worker's write). The actions are those of ``manage.py jobs``.

Periodic tasks: django-celery-beat's admin, registered again with ``PeriodicTaskAdmin`` below.
Its own form takes any registered task (or any name at all), any arguments and any message
headers, and its list actions (run now, enable, disable) need no more than the view permission:
whoever could open the page could run any task with any arguments.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import current_app
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask
from kombu.exceptions import OperationalError

from app import deadletters
from app.enqueue import EnqueueError
from app.models import AlertState, JobRecord, OutboxMessage
from app.periodic import (
    schedulable_tasks,
    schedule_arguments_check,
    schedule_arguments_parse,
    schedule_next_run,
)
from app.records import record_request_cancel, records_newest
from config.queues import QUEUES


class ReadOnlyAdmin(admin.ModelAdmin):
    """No adding, and no change form: only the list's actions need the change permission."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request)


@admin.register(JobRecord)
class JobRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "task_name",
        "queue",
        "status",
        "progress",
        "attempts",
        "enqueued_at",
        "finished_at",
    )
    list_filter = ("status", "queue", "task_name")
    search_fields = ("id", "task_name", "correlation_id", "idempotency_key")
    date_hierarchy = "enqueued_at"
    show_full_result_count = False  # no second COUNT(*) over a large table on every search
    fieldsets = (
        (None, {"fields": ("id", "task_name", "queue", "summary", "status", "cancel_requested")}),
        ("Progress", {"fields": ("progress", "progress_message", "attempts")}),
        ("Outcome", {"fields": ("result", "error", "traceback")}),
        ("Times", {"fields": ("enqueued_at", "started_at", "finished_at", "updated_at")}),
        ("Origin", {"fields": ("owner", "correlation_id", "idempotency_key", "replay_of")}),
        ("Replays", {"fields": ("replayed_as",)}),
        ("Arguments", {"fields": ("payload",)}),
    )
    readonly_fields = ("replayed_as",)
    actions = ("replay_dead", "cancel")

    @admin.display(description="replayed as")
    def replayed_as(self, record: JobRecord) -> str:
        replays = record.replays.order_by("enqueued_at")
        return (
            format_html_join(
                ", ",
                '<a href="{}">{}</a>',
                ((reverse("admin:app_jobrecord_change", args=[r.pk]), r.pk) for r in replays),
            )
            or "-"
        )

    @admin.action(description="Replay selected dead jobs", permissions=["change"])
    def replay_dead(self, request: HttpRequest, queryset: QuerySet[JobRecord]) -> None:
        """Replay dead jobs as new jobs linked to them; one that is not dead changes nothing."""
        ids = [str(pk) for pk in queryset.values_list("pk", flat=True)]
        try:
            replayed = deadletters.dead_letters_replay(job_ids=ids)
        except deadletters.DeadLetterError as exc:
            self.message_user(request, f"Nothing replayed: {exc}", messages.ERROR)
            return
        except EnqueueError as exc:  # e.g. the dead job's task no longer exists
            self.message_user(request, f"Replay stopped: {exc}", messages.ERROR)
            return
        except (OSError, OperationalError) as exc:  # the broker is down: say so, change nothing
            self.message_user(
                request, f"Nothing replayed: broker unreachable: {exc}", messages.ERROR
            )
            return
        links = format_html_join(
            ", ",
            '{} as <a href="{}">{}</a>',
            (
                (old, reverse("admin:app_jobrecord_change", args=[new]), new)
                for old, new in replayed
            ),
        )
        self.message_user(request, format_html("Replayed {} dead job(s): {}", len(replayed), links))

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[JobRecord]) -> None:
        """Cancel queued jobs at once; ask running ones to stop at their next progress report."""
        outcomes: dict[str, int] = {"cancelled": 0, "stopping": 0, "ended": 0}
        for pk in queryset.values_list("pk", flat=True):
            status = record_request_cancel(job_id=str(pk))
            if status is None:
                outcomes["ended"] += 1
            elif status == "cancelled":
                outcomes["cancelled"] += 1
            else:
                outcomes["stopping"] += 1
        parts = [f"{outcomes['cancelled']} cancelled"]
        if outcomes["stopping"]:
            parts.append(f"{outcomes['stopping']} running, will stop at their next progress report")
        if outcomes["ended"]:
            parts.append(f"{outcomes['ended']} had already ended, left as they were")
        level = messages.WARNING if outcomes["ended"] else messages.SUCCESS
        self.message_user(request, "Jobs: " + "; ".join(parts) + ".", level)


class OutboxStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("pending", "pending"), ("sent", "sent")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "pending":
            return queryset.filter(sent_at__isnull=True)
        if self.value() == "sent":
            return queryset.filter(sent_at__isnull=False)
        return queryset


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("task_name", "task_id", "created_at", "sent_at")
    list_filter = (OutboxStateFilter,)
    search_fields = ("task_name", "task_id")
    show_full_result_count = False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting a pending row would lose its message


NOT_SCHEDULABLE = (
    "%(value)s cannot be scheduled from the admin: only the tasks that the code schedules "
    "(config/schedule.py, the families' SCHEDULE) and those in the SCHEDULABLE_TASKS setting can."
)


def _task_choices() -> list[tuple[str, str]]:
    return [("", "---------"), *((name, name) for name in schedulable_tasks())]


def _queue_choices() -> list[tuple[str, str]]:
    return [("", "the task's own route (config/queues.py)"), *((q, q) for q in QUEUES)]


class PeriodicTaskForm(forms.ModelForm):
    """django-celery-beat's form, with the task chosen from ``schedulable_tasks()``, arguments
    that the task takes (app/periodic.py) and a queue of config/queues.py.

    Each check is a field's error, so a POST that names another task is refused however it was
    made. (The message headers, exchange and routing key are not in this form: a ``task`` header
    would replace the task the message names.)
    """

    task = forms.ChoiceField(
        label="Task", choices=_task_choices, error_messages={"invalid_choice": NOT_SCHEDULABLE}
    )
    queue = forms.ChoiceField(label="Queue", choices=_queue_choices, required=False)

    class Meta:
        model = PeriodicTask
        fields = (
            *("name", "task", "enabled", "description"),
            *("interval", "crontab", "solar", "clocked", "start_time", "one_off"),
            *("args", "kwargs", "expires", "expire_seconds", "queue", "priority"),
        )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        crontab = data.get("crontab")
        if crontab is not None:
            try:
                crontab.schedule  # noqa: B018  (Celery's own check, which beat meets)
            except ValueError as exc:
                self.add_error("crontab", f"beat would never run this crontab: {exc}")
        name = data.get("task")
        if not name or "args" not in data or "kwargs" not in data:
            return data  # already refused, by its field
        try:
            args, kwargs = schedule_arguments_parse(args=data["args"], kwargs=data["kwargs"])
            schedule_arguments_check(task=current_app.tasks[name], args=args, kwargs=kwargs)
        except ValidationError as exc:
            self.add_error(None, exc)
        return data


class PeriodicTaskChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        """The page's rows, each with the newest job record of its task: one query for the
        whole page, not one per row."""
        super().get_results(request)
        newest = records_newest(task_names={task.task for task in self.result_list})
        for task in self.result_list:
            task.last_job = newest.get(task.task)


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    """Staff only, as all of the admin is (``AdminSite.has_permission``); then Django's model
    permissions on periodic tasks: view, add, change, delete."""

    form = PeriodicTaskForm
    list_display = (
        "name",
        "enabled",
        "task",
        "scheduler",
        "last_run_at",
        "next_run",
        "last_outcome",
    )
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled", "description")}),
        *beat_admin.PeriodicTaskAdmin.fieldsets[1:],
    )
    readonly_fields = (
        *beat_admin.PeriodicTaskAdmin.readonly_fields,
        "headers",
        "exchange",
        "routing_key",
    )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return PeriodicTaskChangeList

    @admin.display(description="next run")
    def next_run(self, task: PeriodicTask) -> datetime | None:
        return schedule_next_run(task)

    @admin.display(description="last outcome")
    def last_outcome(self, task: PeriodicTask) -> str:
        if not getattr(current_app.tasks.get(task.task), "tracked", False):
            return "not tracked"
        record: JobRecord | None = getattr(task, "last_job", None)
        if record is None:
            return "-"
        at = record.finished_at or record.started_at or record.enqueued_at
        return format_html(
            '<a href="{}">{}</a>, {} ago',
            reverse("admin:app_jobrecord_change", args=[record.pk]),
            record.status,
            timesince(at),
        )

    # django-celery-beat's actions, with the change permission they lacked.

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().enable_tasks(request, queryset)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().disable_tasks(request, queryset)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().toggle_tasks(request, queryset)

    @admin.action(description="Run selected tasks", permissions=["change"])
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        """Run now, as beat would: tasks that may not be scheduled here are not run either
        (beat's own cleanup entry, a row written outside the admin)."""
        refused = sorted(set(queryset.values_list("task", flat=True)) - set(schedulable_tasks()))
        if refused:
            self.message_user(
                request,
                f"Nothing run: {', '.join(refused)} cannot be scheduled from the admin.",
                messages.ERROR,
            )
            return
        super().run_tasks(request, queryset)


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyAdmin):
    """What the alert check (app/alerts.py) watches, firing first; written by the check only."""

    list_display = ("key", "firing", "since", "resolved_at", "summary", "checked_at")
    list_filter = ("firing",)
    search_fields = ("key",)
    ordering = ("-firing", "key")
