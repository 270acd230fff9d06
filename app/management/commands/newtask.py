"""Scaffold a task family: ``manage.py newtask NAME`` writes a module, ``--package`` a package.

- ``newtask NAME``: ``tasks/NAME.py`` (a task and the plain function it calls) and
  ``tests/test_task_NAME.py``.
- ``newtask NAME --package``: ``tasks/NAME/``, a family that is also a Django app (a model, a
  tracked task that uses it, an endpoint at ``/api/NAME/`` that enqueues it, its first
  migration), and ``tests/NAME/`` with a test of the whole path on the real broker and database.
"""

from __future__ import annotations

import keyword
import re
import subprocess
import sys
from pathlib import Path
from string import Template
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates" / "newtask"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _targets(base: Path, name: str, package: bool) -> dict[Path, Path]:
    """Where each template is written."""
    if not package:
        return {
            base / "tasks" / f"{name}.py": TEMPLATES / "task.py.tmpl",
            base / "tests" / f"test_task_{name}.py": TEMPLATES / "test_task.py.tmpl",
        }
    source = TEMPLATES / "package"
    targets = {}
    for template in sorted(source.rglob("*.tmpl")):
        relative = template.relative_to(source).with_suffix("")  # drop .tmpl
        relative = relative.with_name(relative.name.replace("NAME", name))
        if relative.parts[0] == "tests":
            targets[base / "tests" / name / Path(*relative.parts[1:])] = template
        else:
            targets[base / "tasks" / name / relative] = template
    return targets


class Command(BaseCommand):
    help = "Create a task module (or, with --package, a family package) and its tests."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="module name: lowercase letters, digits and underscores")
        parser.add_argument(
            "--package",
            action="store_true",
            help="a family package (Django app: model, task, endpoint, migration) in tasks/NAME/",
        )

    def handle(self, *args: Any, name: str, package: bool = False, **options: Any) -> None:
        if not NAME.match(name) or keyword.iskeyword(name):
            raise CommandError(
                f"{name!r} is not a usable module name: use lowercase letters, digits and "
                "underscores, starting with a letter (for example: invoices)"
            )
        taken_labels = {config.label for config in apps.get_app_configs()} | {"jobs"}
        if package and name in taken_labels:
            raise CommandError(
                f"{name!r} is taken: an installed app's label, or the jobs API's /api/jobs/"
            )
        base = Path(settings.BASE_DIR)
        targets = _targets(base, name, package)
        taken = [base / "tasks" / f"{name}.py", base / "tasks" / name, *targets]
        existing = sorted({str(path.relative_to(base)) for path in taken if path.exists()})
        if existing:
            raise CommandError(f"not overwriting {', '.join(existing)}")
        camel = "".join(part.capitalize() for part in name.split("_"))
        for path, template in targets.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(template.read_text()).substitute(name=name, Name=camel))
            self.stdout.write(f"created {path.relative_to(base)}")
        if package:
            # A new process: this one's settings were read before the folder existed.
            subprocess.run(
                [sys.executable, "manage.py", "makemigrations", name], cwd=base, check=True
            )
        self.stdout.write(
            f"Restart the workers (and the web app) to pick up tasks.{name}. Its tasks run on the "
            f"'default' queue unless you route 'tasks.{name}.*' in config/queues.py."
            + (f" Its endpoints: /api/{name}/ (see /api/docs)." if package else "")
        )
