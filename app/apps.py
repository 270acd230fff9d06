from django.apps import AppConfig


class JobsAppConfig(AppConfig):
    """The engine tasks plug into: base job class, worker consumer, health checks, commands."""

    name = "app"
    verbose_name = "Jobs"
