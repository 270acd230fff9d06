"""The task library's layout, read from the folder: no list to edit when a family comes or goes.

- ``tasks/<name>.py``: a family of tasks only; workers import it.
- ``tasks/<name>/``: a family that is also a Django app (models, admin, templates, commands);
  workers import its ``tasks.py``, and its ``api.py``'s ``router`` is mounted at ``/api/<name>/``.

Only the file system is read here, so settings can use it before Django starts.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"


def _entries() -> list[pkgutil.ModuleInfo]:
    return sorted(pkgutil.iter_modules([str(TASKS_DIR)]), key=lambda m: m.name)


def family_apps() -> list[str]:
    """Every family package, as a Django app name (``tasks.<name>``)."""
    return [f"tasks.{entry.name}" for entry in _entries() if entry.ispkg]


def task_modules() -> list[str]:
    """Every module that defines tasks: plain modules and each package's ``tasks.py``."""
    modules = []
    for entry in _entries():
        if not entry.ispkg:
            modules.append(f"tasks.{entry.name}")
        elif (TASKS_DIR / entry.name / "tasks.py").exists():
            modules.append(f"tasks.{entry.name}.tasks")
    return modules


def api_modules() -> dict[str, str]:
    """URL prefix -> module with a django-ninja ``router``, for each package with an ``api.py``."""
    return {
        entry.name: f"tasks.{entry.name}.api"
        for entry in _entries()
        if entry.ispkg and (TASKS_DIR / entry.name / "api.py").exists()
    }
