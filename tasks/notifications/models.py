from __future__ import annotations

from django.db import models


class NotificationStatus(models.TextChoices):
    QUEUED = "queued"
    SENDING = "sending"  # claimed; the provider is being called
    RETRYING = "retrying"  # the provider did not take it (5xx, 429, no connection): tried again
    SENT = "sent"  # the provider took it, under provider_message_id
    FAILED = "failed"  # the provider refused it (4xx), or retries ran out: it was not sent
    #: The call may or may not have reached the provider (no answer, or the worker stopped
    #: mid-send). Not tried again: a notification goes out at most once.
    UNKNOWN = "unknown"


class Notification(models.Model):
    """One push or SMS message and what became of it, written by ``notification_send`` and the
    job that delivers it."""

    channel = models.CharField(max_length=20)
    to = models.CharField(max_length=4096)  # a phone number in E.164, or a device token
    title = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    data = models.JSONField(null=True, blank=True)
    provider = models.CharField(max_length=200, blank=True)  # dotted path of the class used
    provider_message_id = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.QUEUED
    )
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)  # calls made to the provider
    job_id = models.CharField(max_length=36, blank=True)  # the job enqueued to deliver it
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.channel} to {self.to} ({self.status})"
