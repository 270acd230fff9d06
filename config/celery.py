"""The Celery application: configured from Django settings, tasks from every module in tasks/.

Run a worker with ``celery -A config worker``; ``bin/`` holds the exact commands the Procfile uses.
"""

from __future__ import annotations

import logging.config
import os
from typing import Any

from celery import Celery, signals
from celery.app.defaults import SETTING_KEYS
from django.conf import settings
from django.db import close_old_connections

from config.families import task_modules

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class App(Celery):  # type: ignore[misc]
    def gen_task_name(self, name: str, module: str) -> str:
        """``tasks.<family>.<task>``, whether the family is a module or a package with its tasks
        in ``tasks.py``: names stay stable when a module grows into a package (routes in
        config/queues.py, schedules and job records use them). Celery's documented hook."""
        if module.startswith("tasks.") and module.endswith(".tasks"):
            module = module.removesuffix(".tasks")
        return super().gen_task_name(name, module)


app = App("config", task_cls="app.jobs:Job")


@app.on_configure.connect
def read_django_settings(sender: Celery, **kwargs: Any) -> None:
    """Configure Celery from a plain copy of the CELERY_* Django settings.

    A copy, not ``config_from_object("django.conf:settings")``: Celery looks settings up dozens of
    times per publish, and each lookup through Django's settings object made ``delay()`` and the
    outbox relay measurably slower (make bench). Sent when Celery first needs its configuration,
    after Django has loaded its settings.

    Each setting goes in under Celery's own name (CELERY_TIMEZONE as ``timezone``): five of the
    namespaced names (CELERY_TIMEZONE, CELERY_IMPORTS, ...) are also Celery 3's names, and a worker
    warns about each of those it is given (a false alarm, celery#6366, that Celery silences only
    for the string "django.conf:settings"). A name Celery does not define stays as it is, for
    Celery's Django fixup reads CELERY_DB_REUSE_MAX so. The CELERY namespace stays on the app:
    django-celery-beat reads ``<namespace>_TIMEZONE`` for its crontabs' default time zone.
    """
    config: dict[str, Any] = {}
    for name in dir(settings):
        if name.startswith("CELERY_"):
            key = name.removeprefix("CELERY_").lower()
            config[key if key in SETTING_KEYS else name] = getattr(settings, name)
    # Every module in tasks/ (and each package's tasks.py) is imported by workers: adding a file
    # or a folder there is all it takes.
    config["imports"] = task_modules()
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
