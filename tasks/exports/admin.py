"""Admin: finished export files, read-only (the periodic prune removes expired ones)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from tasks.exports.models import ExportFile


@admin.register(ExportFile)
class ExportFileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("created_at", "export", "format", "rows", "bytes", "owner", "expires_at")
    list_filter = ("export", "format")
    search_fields = ("name", "job_id")
    readonly_fields = [field.name for field in ExportFile._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
