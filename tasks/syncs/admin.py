from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from tasks.syncs.models import Contact, SyncPart, SyncState


@admin.register(SyncState)
class SyncStateAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Each sync's checkpoint and lease: read-only, written by the sync jobs."""

    list_display = ("name", "job_id", "cursor", "pages", "created", "updated", "unchanged",
                    "failed", "lease_until", "finished_at", "error")  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(SyncPart)
class SyncPartAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("job_id", "index", "cursor", "last", "pages", "finished_at", "error")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("external_id", "name", "email", "remote_updated_at")
    search_fields = ("external_id", "name", "email")
