"""``manage.py alerts``: what the alert check watches, and what fires now; ``--check`` runs a
check here, notifications included (as the periodic job does; cron can run it too, where the
workers themselves are in doubt)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from app.alerts import alerts_check
from app.models import AlertState


class Command(BaseCommand):
    help = "Show the alert states (README, 'What to watch'); --check runs a check first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true", help="check now, and notify changes")

    def handle(self, *args: Any, check: bool, **options: Any) -> None:
        if check:
            for t in alerts_check():
                self.stdout.write(f"{t.state}: {t.key}: {t.summary}")
        states = list(AlertState.objects.order_by("-firing", "key"))
        if not states:
            self.stdout.write("no check has run yet (the periodic job runs every minute)")
        for state in states:
            if state.firing and state.since:
                mark = f"FIRING since {state.since:%Y-%m-%d %H:%M} UTC"
            else:
                mark = "ok"
            self.stdout.write(f"{state.key:40} {mark:34} {state.summary}")
