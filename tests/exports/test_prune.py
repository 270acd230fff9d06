"""The periodic prune: expired files and their records go; live ones, and spool files young
enough to belong to a running job, stay."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from tasks.exports import conf
from tasks.exports.models import ExportFile
from tasks.exports.services import exports_prune

pytestmark = pytest.mark.django_db


def stored(name: str, *, expires_in: timedelta) -> ExportFile:
    saved = default_storage.save(name, ContentFile(b"id\n1\n"))
    return ExportFile.objects.create(
        job_id=uuid.uuid4(), export="jobs", format="csv", name=saved, rows=1, bytes=5,
        expires_at=timezone.now() + expires_in,
    )  # fmt: skip


def test_prune_removes_expired_files_and_abandoned_spool_files_only(media: Path) -> None:
    expired = stored("exports/a/jobs.csv", expires_in=timedelta(seconds=-1))
    live = stored("exports/b/jobs.csv", expires_in=timedelta(days=1))
    spool = conf.spool_dir()
    spool.mkdir(parents=True)
    abandoned, running = spool / "old.part", spool / "new.part"
    abandoned.write_bytes(b"torn")
    running.write_bytes(b"half")
    # An XLSX export killed halfway: its workbook's temporary rows, in a folder.
    rows = spool / "old.xlsx-rows"
    rows.mkdir()
    (rows / "tmp1234").write_bytes(b"<row/>")
    day_ago = time.time() - conf.spool_max_age().total_seconds() - 60
    os.utime(abandoned, (day_ago, day_ago))
    os.utime(rows, (day_ago, day_ago))

    assert exports_prune() == 3
    assert not rows.exists()

    assert not default_storage.exists(expired.name)
    assert not ExportFile.objects.filter(pk=expired.pk).exists()
    assert default_storage.exists(live.name) and ExportFile.objects.filter(pk=live.pk).exists()
    assert not abandoned.exists() and running.exists()
