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
app.config_from_object("django.conf:settings", namespace="CELERY")
# Every module in tasks/ is imported by workers: adding a file there is all it takes.
app.conf.imports = [f"tasks.{module.name}" for module in pkgutil.iter_modules(tasks.__path__)]


@signals.task_prerun.connect
@signals.task_postrun.connect
def recycle_database_connections(**kwargs: Any) -> None:
    """Return the connection to the pool (or drop a broken one) around each task, as Django does
    around each request; see CELERY_DB_REUSE_MAX in config/settings.py."""
    close_old_connections()


@signals.setup_logging.connect
def use_django_logging(**kwargs: Any) -> None:
    """Workers and beat log with Django's LOGGING (task id, name and attempt on every line)."""
    logging.config.dictConfig(settings.LOGGING)
