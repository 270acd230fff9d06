"""Scaffold a task module in tasks/ and its test in tests/: ``manage.py newtask NAME``."""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates" / "newtask"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Command(BaseCommand):
    help = "Create tasks/NAME.py with an example job and tests/test_task_NAME.py with its test."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="module name: lowercase letters, digits and underscores")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        if not NAME.match(name) or keyword.iskeyword(name):
            raise CommandError(
                f"{name!r} is not a usable module name: use lowercase letters, digits and "
                "underscores, starting with a letter (for example: invoices)"
            )
        base = Path(settings.BASE_DIR)
        targets = {
            base / "tasks" / f"{name}.py": "task.py.tmpl",
            base / "tests" / f"test_task_{name}.py": "test_task.py.tmpl",
        }
        existing = [str(path.relative_to(base)) for path in targets if path.exists()]
        if existing:
            raise CommandError(f"not overwriting {', '.join(existing)}")
        for path, template in targets.items():
            text = Template((TEMPLATES / template).read_text()).substitute(name=name)
            path.write_text(text)
            self.stdout.write(f"created {path.relative_to(base)}")
        self.stdout.write(
            f"Workers pick up tasks.{name} on their next start. It runs on the 'default' queue "
            f"unless you route 'tasks.{name}.*' in config/queues.py."
        )
