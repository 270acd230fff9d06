"""Publish pending outbox rows now; ``--loop`` keeps relaying (an alternative to the beat job)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from app.outbox import outbox_relay


class Command(BaseCommand):
    help = "Publish outbox rows that were not published after commit (the broker was down)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--loop", action="store_true", help="keep relaying, every --interval")
        parser.add_argument("--interval", type=float, default=5.0)

    def handle(self, *args: Any, batch_size: int, loop: bool, interval: float, **opts: Any) -> None:
        while True:
            try:
                published = outbox_relay(batch_size=batch_size)
                self.stdout.write(f"published {published} outbox rows")
            except Exception as exc:  # broker still down: say so, and try again in --loop
                if not loop:
                    raise
                self.stderr.write(f"relay failed, retrying in {interval}s: {exc}")
            if not loop:
                return
            time.sleep(interval)
