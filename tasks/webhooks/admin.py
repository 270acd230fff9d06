from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from tasks.webhooks.models import Delivery, DeliveryAttempt, Endpoint
from tasks.webhooks.services import DeliveryNotRetryable, delivery_retry


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Endpoints are edited here; the URL is checked by the URL guard when saved."""

    list_display = ("url", "description", "event_types", "active", "disabled_reason")
    list_filter = ("active",)
    search_fields = ("url", "description")
    readonly_fields = ("disabled_at", "created_at")
    actions = ("enable",)

    @admin.action(description="Enable again (after the receiver is fixed)")
    def enable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        count = queryset.update(active=True, disabled_reason="", disabled_at=None)
        self.message_user(request, f"{count} endpoint(s) enabled", messages.SUCCESS)


class DeliveryAttemptInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DeliveryAttempt
    fields = ("number", "attempted_at", "status_code", "latency_ms", "error", "response")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The delivery log: read-only, written by the delivery job, one row per attempt inline.
    "Send again" puts failed deliveries back in the queue (``services.delivery_retry``)."""

    list_display = ("msg_id", "event_type", "endpoint", "status", "created_at", "ended_at")
    list_filter = ("status", "event_type")
    search_fields = ("msg_id", "event_type", "endpoint__url")
    list_select_related = ("endpoint",)
    inlines = (DeliveryAttemptInline,)
    actions = ("send_again",)

    @admin.action(
        description="Send again (failed, or disabled with the endpoint enabled again)",
        permissions=["send_again"],
    )
    def send_again(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        sent, refused = 0, []
        for pk in queryset.values_list("pk", flat=True):
            try:
                delivery_retry(delivery_id=pk)
                sent += 1
            except DeliveryNotRetryable as exc:
                refused.append(str(exc))
        if sent:
            self.message_user(request, f"{sent} deliveries queued to send again", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, f"Not sent again: {reason}", messages.WARNING)

    def has_send_again_permission(self, request: HttpRequest) -> bool:
        """The model's change permission (the form itself stays read-only for everyone)."""
        return request.user.has_perm("webhooks.change_delivery")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("delivery", "number", "status_code", "latency_ms", "error", "attempted_at")
    list_filter = ("status_code",)
    search_fields = ("delivery__msg_id",)
    list_select_related = ("delivery",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
