from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from tasks.example.models import LedgerEntry


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: entries are written by the job, once per idempotency key."""

    list_display = ("account", "amount", "created_at")
    search_fields = ("account",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
