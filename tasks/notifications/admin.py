from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from tasks.notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: rows are written by notification_send and the job that delivers them. Send a
    notification again with notification_send, so that it is validated and recorded."""

    list_display = ("created_at", "channel", "to", "status", "provider_message_id", "attempts")
    list_filter = ("status", "channel")
    search_fields = ("to", "provider_message_id", "job_id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
