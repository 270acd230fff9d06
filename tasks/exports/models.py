"""A finished export file: who may download it and until when (the periodic prune removes
files whose time is up)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ExportFile(models.Model):
    #: The job that wrote it: a redelivered job finds its file here instead of writing another.
    job_id = models.UUIDField(primary_key=True)
    export = models.CharField(max_length=100)
    format = models.CharField(max_length=10)
    name = models.CharField(max_length=300, unique=True)  # in default storage
    rows = models.BigIntegerField()
    bytes = models.BigIntegerField()
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name
