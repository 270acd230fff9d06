from __future__ import annotations

from django.db import models


class Checkpoint(models.Model):
    """Where a run stands: the next page's cursor and what the run has done so far. Written in
    the transaction of each page's upserts, so a page is either stored with its checkpoint or
    not at all."""

    #: The next page's cursor (a page number, an offset or the remote's cursor); null: the first.
    cursor = models.JSONField(null=True, blank=True)
    pages = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    COUNTS = ("created", "updated", "unchanged", "failed")

    class Meta:
        abstract = True

    def counts(self) -> dict[str, int]:
        return {"pages": self.pages, **{name: getattr(self, name) for name in self.COUNTS}}


class SyncState(Checkpoint):
    """One row per sync: its lease (which run holds it, until when) and its checkpoint.

    A run takes the lease when it starts; another run of the same sync meanwhile is refused.
    A run that failed leaves its cursor: the next run resumes from the last good page."""

    name = models.CharField(max_length=100, primary_key=True)
    #: The run (job id) that holds or last held the lease; the counts are that run's.
    job_id = models.CharField(max_length=36, blank=True)
    #: Held until then (renewed at every page); null when released.
    lease_until = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    #: Page ranges of a fanned-out run (0: not fanned out).
    parts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class SyncPart(Checkpoint):
    """A page range of a fanned-out run, with its own checkpoint."""

    job_id = models.CharField(max_length=36)  # the run's (the parent's) job id
    index = models.PositiveIntegerField()
    last = models.PositiveIntegerField()  # the range's last page
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job_id", "index"], name="syncs_part_once"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id} part {self.index}"


class Contact(models.Model):
    """The example sync's table: contacts of a remote CRM, upserted by their remote id."""

    external_id = models.CharField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    email = models.CharField(max_length=254)
    remote_updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"
