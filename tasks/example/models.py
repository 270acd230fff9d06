from __future__ import annotations

from django.db import models


class LedgerEntry(models.Model):
    """The effect of the idempotent example job (``tasks.example.credit``)."""

    account = models.CharField(max_length=100)
    amount = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
        return f"{self.account} {self.amount:+d}"
