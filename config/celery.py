"""The Celery application: configured from Django settings, tasks from every module in tasks/.

Run a worker with ``celery -A config worker``; ``bin/`` holds the exact commands the Procfile uses.
"""

from __future__ import annotations

import logging.config
import os
import pkgutil
from typing import Any

from celery import Celery, signals
from django.conf import settings
from django.db import close_old_connections

import tasks

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config", task_cls="app.jobs:Job")


@app.on_configure.connect
def read_django_settings(sender: Celery, **kwargs: Any) -> None:
    """Configure Celery from a plain copy of the CELERY_* Django settings.

    Celery looks settings up on every publish, dozens of times; through Django's settings object
    (``config_from_object("django.conf:settings")``) each lookup costs about 6 µs, which made
    ``delay()`` and the outbox relay about 1.5 times slower (make bench). Sent when Celery first
    needs its configuration, after Django has loaded its settings.
    """
    config = {name: getattr(settings, name) for name in dir(settings) if name.startswith("CELERY_")}
    # Every module in tasks/ is imported by workers: adding a file there is all it takes.
    config["CELERY_IMPORTS"] = [f"tasks.{m.name}" for m in pkgutil.iter_modules(tasks.__path__)]
    # The namespace, not lowercased keys: Celery's Django fixup reads CELERY_DB_REUSE_MAX as is.
    sender.config_from_object(config, namespace="CELERY")


@signals.task_prerun.connect
@signals.task_postrun.connect
def recycle_database_connections(**kwargs: Any) -> None:
    """Close obsolete (DATABASE_CONN_MAX_AGE) or broken connections around each task, as Django
    does around each request; see CELERY_DB_REUSE_MAX in config/settings.py."""
    close_old_connections()


@signals.setup_logging.connect
def use_django_logging(**kwargs: Any) -> None:
    """Workers and beat log with Django's LOGGING (task id, name and attempt on every line)."""
    logging.config.dictConfig(settings.LOGGING)
