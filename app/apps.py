import importlib

from django.apps import AppConfig

from config.celery import app as celery_app


class JobsAppConfig(AppConfig):
    """The engine tasks plug into: base job class, records, outbox, consumer, health, commands."""

    name = "app"
    verbose_name = "Jobs"

    def ready(self) -> None:
        # Finalized first, Celery builds each @shared_task's class as its module is imported, so
        # a misspelt option (app/jobs.py) fails at the import that holds it, not at first use.
        celery_app.finalize(auto=True)
        # Every process (web too) knows every task, so job_enqueue can refuse unknown names.
        for module in celery_app.conf.imports:
            importlib.import_module(module)
