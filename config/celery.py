"""The Celery application: configured from Django settings, tasks from every module in tasks/.

Run a worker with ``celery -A config worker``; ``bin/`` holds the exact commands the Procfile uses.
"""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from celery import VERSION_BANNER, Celery, platforms, signals
from celery.app.defaults import SETTING_KEYS
from celery.apps import worker as celery_worker
from celery.apps.beat import Beat
from celery.beat import Service
from django.conf import settings
from django.db import close_old_connections
from django.utils.functional import cached_property

from config.families import task_modules
from config.logging import json_line

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
logger = logging.getLogger(__name__)


class BeatProcess(Beat):  # type: ignore[misc]
    quiet: bool
    #: With JSON logs, the start banner waits for logging and goes out as one log line.
    _banner_as_log_line = False

    def run(self) -> None:
        """Celery prints beat's start banner (versions, broker, scheduler) as a dozen raw lines
        ahead of its logging setup; with JSON logs they would be lines a collector cannot read."""
        if settings.LOG_FORMAT == "json" and not self.quiet:
            self.quiet = self._banner_as_log_line = True
        super().run()

    def install_sync_handler(self, service: Service) -> None:
        """SIGTERM and SIGINT stop beat by raising SystemExit; ``Service.start`` saves the
        schedule on its way out. Celery's own handler saves it inside the signal handler, which
        re-enters the database connection when the signal lands mid-query (beat's setup, each
        tick): psycopg's connection lock then waits for itself, and beat hangs until SIGKILL.

        Celery calls this once logging is set up, just before beat starts: the banner that
        ``run`` held back is logged here."""
        if self._banner_as_log_line:
            logger.info(
                "celery beat v%s is starting.\n%s", VERSION_BANNER, self.startup_info(service)
            )

        def stop(signum: int, frame: object) -> None:
            raise SystemExit()

        platforms.signals.update(SIGTERM=stop, SIGINT=stop)


class WorkerProcess(celery_worker.Worker):  # type: ignore[misc]
    """``celery worker`` with every line it writes in the format of config/logging.py."""

    def on_before_init(self, **kwargs: Any) -> None:
        """Logging is set up before Celery's first words (a warning when run as root), which
        it otherwise writes raw, ahead of its own logging setup."""
        logging.config.dictConfig(settings.LOGGING)
        super().on_before_init(**kwargs)

    def install_platform_tweaks(self, worker: celery_worker.Worker) -> None:
        """With JSON logs, what Celery says from its signal handlers ("worker: Warm shutdown")
        is a JSON line too. Celery writes those with one os.write, taking no lock, as a signal
        handler must (it may interrupt a log line being written): so does ``say_as_json``."""
        if settings.LOG_FORMAT == "json":
            celery_worker.safe_say = say_as_json
        super().install_platform_tweaks(worker)

    def emit_banner(self) -> None:
        """With JSON logs, the start banner (versions, broker, queues) is one log line: printed
        as Celery prints it, it would be a dozen lines a log collector cannot read."""
        if settings.LOG_FORMAT == "json":
            logger.info("%s", self.startup_info(artlines=False).strip())
        else:
            super().emit_banner()

    def on_start(self) -> None:
        """What a job prints goes through logging, as Celery does it unless logging is set up by
        someone else (config/logging.py, here): a stray print() is then a log line with the
        job's fields, not raw text in the middle of JSON lines."""
        super().on_start()
        if self.redirect_stdouts:
            self.app.log.redirect_stdouts(self.redirect_stdouts_level)


def say_as_json(message: str, f: TextIO | None = sys.__stderr__) -> None:
    """``celery.apps.worker.safe_say``, writing a JSON line (see ``install_platform_tweaks``)."""
    line = json_line(
        {
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "level": "warning",
            "logger": "celery.apps.worker",
            "message": message,
            "process": "MainProcess",
        }
    )
    if f is not None:  # no stream (pythonw); as Celery's, losing the line never stops a shutdown
        with contextlib.suppress(OSError):
            os.write(f.fileno(), line.encode() + b"\n")


class App(Celery):  # type: ignore[misc]
    @cached_property
    def Beat(self) -> type[BeatProcess]:
        """``celery beat`` runs this, as ``celery worker`` runs ``app.Worker``."""
        return self.subclass_with_self(BeatProcess)  # type: ignore[no-any-return]

    @cached_property
    def Worker(self) -> type[WorkerProcess]:
        """What ``celery worker`` runs."""
        return self.subclass_with_self(WorkerProcess)  # type: ignore[no-any-return]

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
    """Workers and beat log with Django's LOGGING: the same lines as the web app's, with the job's
    fields on every line logged inside a job (config/logging.py)."""
    logging.config.dictConfig(settings.LOGGING)
