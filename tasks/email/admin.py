from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from tasks.email.models import Bulk, BulkRecipient


class RecipientInline(admin.TabularInline):  # type: ignore[type-arg]
    model = BulkRecipient
    fields = ("address", "batch", "state", "error", "updated_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    max_num = 0


@admin.register(Bulk)
class BulkAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: bulk sends are written by bulk_start and their jobs."""

    list_display = ("id", "template", "batches", "aborted", "created_at", "ended_at")
    readonly_fields = ("id", "template", "context", "from_email", "batches", "fanned_out",
                       "aborted", "created_at", "ended_at")  # fmt: skip
    inlines = [RecipientInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(BulkRecipient)
class BulkRecipientAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("address", "state", "error", "bulk", "updated_at")
    list_filter = ("state",)
    search_fields = ("address",)
    readonly_fields = ("bulk", "address", "batch", "state", "error", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
