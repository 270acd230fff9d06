from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from app.urlguard import UnsafeUrl, url_check
from tasks.webhooks.signing import SecretError, secret_generate, secrets_parse


def endpoint_url_validate(value: str) -> None:
    """The URL guard's verdict at save time (it is checked again at every request)."""
    try:
        url_check(value)
    except UnsafeUrl as exc:
        raise ValidationError(str(exc)) from None


def endpoint_secrets_validate(value: str) -> None:
    try:
        secrets_parse(value)
    except SecretError as exc:
        raise ValidationError(str(exc)) from None


def endpoint_event_types_validate(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise ValidationError('event types are a list of names, e.g. ["invoice.paid"]')


class Endpoint(models.Model):
    """A subscriber: where to POST, with what secrets, for which events."""

    url = models.URLField(
        max_length=2000,
        validators=[endpoint_url_validate],
        help_text="http or https, resolving to public addresses only",
    )
    description = models.CharField(max_length=200, blank=True)
    secrets = models.TextField(
        default=secret_generate,
        validators=[endpoint_secrets_validate],
        help_text="whsec_ secrets, space-separated, newest first. Every one signs each message: "
        "to rotate, put the new secret first, and remove the old one once the receiver has it.",
    )
    event_types = models.JSONField(
        default=list,
        blank=True,
        validators=[endpoint_event_types_validate],
        help_text='Event types to receive, e.g. ["invoice.paid", "user.*"]; empty for all.',
    )
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url

    def subscribes_to(self, event_type: str) -> bool:
        """True if this endpoint takes ``event_type``: no types listed, the type, or its prefix
        followed by ``.*``."""
        if not self.event_types:
            return True
        return any(
            event_type == t or (t.endswith(".*") and event_type.startswith(t[:-1]))
            for t in self.event_types
        )


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DISABLED = "disabled"  # the endpoint was disabled before the message reached it


class Delivery(models.Model):
    """One message to one endpoint. ``msg_id`` (the webhook-id header) is the same at every
    attempt, so that a receiver drops a message it already has."""

    msg_id = models.CharField(max_length=100)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=200)
    #: The whole body as sent: {"type", "timestamp", "data"}.
    payload = models.JSONField()
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    error = models.TextField(blank=True)
    job_id = models.CharField(max_length=36, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["msg_id", "endpoint"], name="webhooks_msg_once"),
        ]

    def __str__(self) -> str:
        return f"{self.msg_id} {self.event_type} -> {self.endpoint_id}"


class DeliveryAttempt(models.Model):
    """One POST (or one refusal to make it): the delivery log."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response = models.TextField(blank=True)  # the start of the receiver's answer
    attempted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error[:60]}"
