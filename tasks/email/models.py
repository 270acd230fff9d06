"""Bulk sends and the state of each recipient, which is also the claim on its send."""

from __future__ import annotations

import uuid

from django.db import models


class Bulk(models.Model):
    """One bulk send. Its id is the id of its job record, which shows progress and the counts."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    template = models.CharField(max_length=200)
    context = models.JSONField(default=dict, blank=True)
    from_email = models.CharField(max_length=320, blank=True)
    batches = models.PositiveIntegerField(default=0)
    #: Set once the batch jobs are enqueued, so a redelivered bulk job enqueues them only once.
    fanned_out = models.BooleanField(default=False)
    #: Why the whole send stopped (an SMTP authentication failure), if it did.
    aborted = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.template} ({self.id})"


class RecipientState(models.TextChoices):
    PENDING = "pending"
    #: Claimed by a batch and handed to the SMTP server; set to a final state when it answers.
    #: Found by a later run, it means the worker stopped in between: the outcome is unknown.
    SENDING = "sending"
    SENT = "sent"
    REJECTED = "rejected"  # the server refused this address for good (5xx)
    FAILED = "failed"  # retries used up, the send aborted, or the outcome unknown


#: States that end a recipient's send.
FINAL_STATES = (RecipientState.SENT, RecipientState.REJECTED, RecipientState.FAILED)


class BulkRecipient(models.Model):
    bulk = models.ForeignKey(Bulk, on_delete=models.CASCADE, related_name="recipients")
    address = models.CharField(max_length=320)
    batch = models.PositiveIntegerField()
    state = models.CharField(
        max_length=10, choices=RecipientState.choices, default=RecipientState.PENDING
    )
    error = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bulk", "address"], name="email_bulk_address_once")
        ]
        indexes = [models.Index(fields=["bulk", "batch", "state"], name="email_bulk_batch_state")]

    def __str__(self) -> str:
        return f"{self.address}: {self.state}"
