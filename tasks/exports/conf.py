"""The exports family's settings: set them in config/settings.py (or the environment there) to
change them; these are the defaults. Read when used, so tests and deployments can override."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.conf import settings


def output_dir() -> str:
    """Where finished files go in default storage: ``<dir>/<random>/<export>-<date>.<ext>``."""
    return str(getattr(settings, "EXPORTS_OUTPUT_DIR", "exports"))


def spool_max_age() -> timedelta:
    """A partial file this old was left by a job that died and was not redelivered."""
    return timedelta(hours=getattr(settings, "EXPORTS_SPOOL_MAX_AGE_HOURS", 24))


def spool_dir() -> Path:
    """Where a file is written before it is complete. With local media storage this is inside
    MEDIA_ROOT, on the same filesystem, so that moving the finished file into place is a rename;
    with remote storage (S3) the finished file is uploaded from here in one piece."""
    default = Path(settings.MEDIA_ROOT) / "exports-partial"
    return Path(getattr(settings, "EXPORTS_SPOOL_DIR", default))
