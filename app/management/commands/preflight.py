"""Stop early, with instructions, when the database or RabbitMQ is unreachable (``make run``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from app.health import broker_error, database_error
from config.celery import app as celery_app

HOW_TO_START_RABBITMQ = """\
RabbitMQ is not reachable at {url}: {error}
Start one, then run this again:
  - Debian/Ubuntu:  sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached
  - macOS:          brew install rabbitmq && brew services start rabbitmq
  - Docker:         docker compose up -d rabbitmq
or point CELERY_BROKER_URL in .env at a running broker."""


class Command(BaseCommand):
    help = "Check that the database and RabbitMQ answer; say how to fix it when they don't."

    def handle(self, *args: Any, **options: Any) -> None:
        error = broker_error()
        if error:
            url = celery_app.connection_for_write().as_uri()  # password masked
            raise CommandError(HOW_TO_START_RABBITMQ.format(url=url, error=error))
        error = database_error()
        if error:
            raise CommandError(
                f"The database is not reachable: {error}\nCheck DATABASE_URL in .env."
            )
        self.stdout.write("preflight: database and RabbitMQ are reachable")
