"""Management commands: newtask, sync_schedule, preflight."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from config.schedule import SCHEDULE
from tests.support import ROOT


@pytest.fixture
def new_module_name() -> Iterator[str]:
    name = f"zz_scaffold_{uuid.uuid4().hex[:8]}"
    yield name
    (ROOT / "tasks" / f"{name}.py").unlink(missing_ok=True)
    (ROOT / "tests" / f"test_task_{name}.py").unlink(missing_ok=True)


def test_newtask_writes_a_module_the_worker_registers_and_a_test_that_passes(
    new_module_name: str,
) -> None:
    call_command("newtask", new_module_name)
    module = ROOT / "tasks" / f"{new_module_name}.py"
    test = ROOT / "tests" / f"test_task_{new_module_name}.py"
    assert module.exists() and test.exists()
    # A fresh process, as a worker starting after the file was added: no registration step.
    code = "from config import celery_app as a; a.loader.import_default_modules(); print(*a.tasks)"
    listed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
    )  # fmt: skip
    assert f"tasks.{new_module_name}.process" in listed.stdout, listed.stderr
    generated = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "3 passed" in generated.stdout


@pytest.mark.parametrize("bad", ["Invoices", "1st", "class", "my-task", "a.b", ""])
def test_newtask_refuses_names_that_are_not_modules(bad: str) -> None:
    with pytest.raises(CommandError, match="not a usable module name"):
        call_command("newtask", bad)


def test_newtask_never_overwrites(new_module_name: str) -> None:
    call_command("newtask", new_module_name)
    module = ROOT / "tasks" / f"{new_module_name}.py"
    module.write_text("# my edits\n")
    with pytest.raises(CommandError, match="not overwriting"):
        call_command("newtask", new_module_name)
    assert module.read_text() == "# my edits\n"


@pytest.mark.django_db
def test_sync_schedule_creates_missing_entries_and_keeps_admin_edits() -> None:
    call_command("sync_schedule")
    name = "example: say hello every hour"
    task = PeriodicTask.objects.get(name=name)
    assert task.task == SCHEDULE[name]["task"]
    task.enabled = False  # an operator pauses it in the admin
    task.kwargs = '{"name": "edited"}'
    task.save()
    call_command("sync_schedule")
    task.refresh_from_db()
    assert (task.enabled, task.kwargs) == (False, '{"name": "edited"}')
    call_command("sync_schedule", "--reset")
    task.refresh_from_db()
    assert task.kwargs == '{"name": "beat"}'
    assert PeriodicTask.objects.filter(name=name).count() == 1


@pytest.mark.django_db
def test_every_scheduled_task_exists() -> None:
    from config.celery import app as celery_app

    celery_app.loader.import_default_modules()
    assert {entry["task"] for entry in SCHEDULE.values()} <= set(celery_app.tasks)


def test_preflight_says_how_to_start_rabbitmq_when_it_is_down() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "preflight"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "RabbitMQ is not reachable at amqp://guest:**@127.0.0.1:1//" in result.stderr
    assert "rabbitmq-server -detached" in result.stderr


@pytest.mark.django_db
def test_preflight_passes_when_everything_answers(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("preflight")
    assert "reachable" in capsys.readouterr().out
