"""Admin: job records and the outbox, read-only, with the replay and cancel actions.

Records are written by the engine, never edited by hand: a record's page is view-only (saving
stale values back could undo a worker's write). The actions are those of ``manage.py jobs``.
django-celery-beat registers its own admin for periodic tasks.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from kombu.exceptions import OperationalError

from app import deadletters
from app.enqueue import EnqueueError
from app.models import JobRecord, OutboxMessage
from app.records import record_request_cancel


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
