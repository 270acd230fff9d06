"""Management commands: newtask, sync_schedule, preflight."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)
from django_celery_beat.schedulers import ModelEntry

from app.management.commands.sync_schedule import schedule_fields
from config import schedule
from config.celery import app as celery_app
from config.schedule import schedule_all
from tests import jobs  # noqa: F401  (registers tests.jobs.noop, the entries' task)
from tests.support import ROOT, running_beat, wait_for


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


HOURLY = "test: hourly"


@pytest.fixture
def hourly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A default entry at minute 0, like the cleanup entry beat writes for itself (hour 4)."""
    entry = {"task": "tests.jobs.noop", "crontab": {"minute": "0"}, "kwargs": {"name": "beat"}}
    monkeypatch.setitem(schedule.SCHEDULE, HOURLY, entry)


@pytest.mark.django_db
def test_sync_schedule_creates_missing_entries_and_keeps_admin_edits(hourly: None) -> None:
    call_command("sync_schedule")
    name = HOURLY
    task = PeriodicTask.objects.get(name=name)
    assert task.task == schedule_all()[name]["task"]
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


def hourly_hello() -> CrontabSchedule:
    crontab = PeriodicTask.objects.get(name=HOURLY).crontab
    assert crontab is not None
    return crontab


@pytest.mark.django_db
@pytest.mark.parametrize("other", [{"hour": "4"}, {"timezone": "Europe/Paris"}])
def test_sync_schedule_matches_a_crontab_on_every_field_time_zone_included(
    hourly: None, other: dict[str, str]
) -> None:
    # A row made in the admin that differs from a default only in one field, the time zone say.
    CrontabSchedule.objects.create(minute="0", **other)
    call_command("sync_schedule")
    crontab = hourly_hello()
    fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    assert [getattr(crontab, f) for f in fields] == ["0", "*", "*", "*", "*"]
    assert str(crontab.timezone) == "UTC"


@pytest.mark.django_db
def test_sync_schedule_reuses_one_of_several_identical_schedules(hourly: None) -> None:
    twins = [CrontabSchedule.objects.create(minute="0") for _ in range(2)]
    for _ in range(2):
        IntervalSchedule.objects.create(every=30, period=IntervalSchedule.SECONDS)
    call_command("sync_schedule")
    assert hourly_hello() == twins[0]
    assert CrontabSchedule.objects.filter(minute="0").count() == 2
    assert IntervalSchedule.objects.filter(every=30).count() == 2


@pytest.mark.parametrize("name", ["admin", "app", "jobs"])
def test_newtask_refuses_a_family_name_that_is_taken(name: str) -> None:
    with pytest.raises(CommandError, match=f"'{name}' is taken"):
        call_command("newtask", name, "--package")


@pytest.mark.django_db
def test_sync_schedule_disables_the_periodic_jobs_of_a_deleted_family(
    capsys: pytest.CaptureFixture[str],
) -> None:
    call_command("sync_schedule")  # the code's rows are there: the next sync writes only the orphan
    gone = PeriodicTask.objects.create(
        name="invoices: nightly",
        task="tasks.invoices.gone",
        interval=IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS),
    )
    created = PeriodicTasks.last_change()
    call_command("sync_schedule")
    gone.refresh_from_db()
    assert not gone.enabled
    assert "invoices: nightly: disabled (its task is not registered)" in capsys.readouterr().out
    # A bulk update sends no signal: the command marks the schedule changed, so a running beat
    # reloads it and stops sending the orphan.
    changed = PeriodicTasks.last_change()
    assert created is not None and changed is not None and changed > created
    assert PeriodicTask.objects.filter(enabled=True).count() == len(schedule_all())


def test_sync_schedule_names_an_entry_with_an_unknown_crontab_field() -> None:
    with pytest.raises(CommandError, match=r"'nightly': unknown crontab fields \['minutes'\]"):
        schedule_fields("nightly", {"task": "tests.jobs.noop", "crontab": {"minutes": "0"}})


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sync_schedule_runs_again_after_beat_added_its_own_entries(
    hourly: None, tmp_path: Path
) -> None:
    """The second `make run`: sync, beat writes its crontab for celery.backend_cleanup
    (minute 0, hour 4), sync again."""
    call_command("sync_schedule")
    with running_beat(log_dir=tmp_path) as beat:
        wait_for(
            lambda: (
                beat.poll() is not None
                or PeriodicTask.objects.filter(name="celery.backend_cleanup").exists()
            ),
            timeout=60,
            what="beat to write its cleanup entry",
        )
        assert beat.poll() is None, (tmp_path / "beat.log").read_text()
    call_command("sync_schedule")
    assert hourly_hello().hour == "*"
    cleanup = PeriodicTask.objects.get(name="celery.backend_cleanup").crontab
    assert cleanup is not None and cleanup.hour == "4"


@pytest.mark.django_db
def test_every_scheduled_task_exists() -> None:
    celery_app.loader.import_default_modules()
    assert {entry["task"] for entry in schedule_all().values()} <= set(celery_app.tasks)


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


def periodic_rows() -> list[tuple[object, ...]]:
    fields = ("name", "task", "kwargs", "queue", "enabled", "expire_seconds", "crontab_id",
              "interval_id")  # fmt: skip
    return list(PeriodicTask.objects.order_by("name").values_list(*fields))


@pytest.mark.django_db
def test_sync_schedule_three_times_leaves_the_same_rows(
    hourly: None, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("sync_schedule")
    first = (periodic_rows(), CrontabSchedule.objects.count(), IntervalSchedule.objects.count())
    capsys.readouterr()
    for _ in range(2):
        call_command("sync_schedule")
        again = (periodic_rows(), CrontabSchedule.objects.count(), IntervalSchedule.objects.count())
        assert again == first
    out = capsys.readouterr().out
    assert f"{HOURLY}: up to date" in out and "created" not in out


@pytest.mark.django_db
def test_sync_schedule_applies_a_code_change_to_an_unedited_schedule(
    hourly: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("sync_schedule")
    changed = {"task": "tests.jobs.noop", "crontab": {"minute": "30"}, "kwargs": {"name": "new"}}
    monkeypatch.setitem(schedule.SCHEDULE, HOURLY, changed)
    call_command("sync_schedule")
    task = PeriodicTask.objects.get(name=HOURLY)
    assert (hourly_hello().minute, task.kwargs) == ("30", '{"name": "new"}')
    assert f"{HOURLY}: updated (the code changed)" in capsys.readouterr().out


@pytest.mark.django_db
def test_sync_schedule_keeps_an_admin_edit_when_the_code_changes_too(
    hourly: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("sync_schedule")
    task = PeriodicTask.objects.get(name=HOURLY)
    task.crontab = CrontabSchedule.objects.create(minute="45", hour="6")  # the operator's hour
    task.save()
    changed = {"task": "tests.jobs.noop", "crontab": {"minute": "30"}, "kwargs": {"name": "beat"}}
    monkeypatch.setitem(schedule.SCHEDULE, HOURLY, changed)
    call_command("sync_schedule")
    assert (hourly_hello().minute, hourly_hello().hour) == ("45", "6")
    assert f"{HOURLY}: kept: edited in the admin" in capsys.readouterr().out
    call_command("sync_schedule", "--reset")
    assert (hourly_hello().minute, hourly_hello().hour) == ("30", "*")


@pytest.mark.django_db
def test_a_schedule_that_left_the_code_is_disabled_and_comes_back_with_it(
    hourly: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("sync_schedule")
    entry = schedule.SCHEDULE[HOURLY]
    monkeypatch.delitem(schedule.SCHEDULE, HOURLY)
    call_command("sync_schedule")
    assert not PeriodicTask.objects.get(name=HOURLY).enabled
    assert f"{HOURLY}: disabled (no longer in the code)" in capsys.readouterr().out
    monkeypatch.setitem(schedule.SCHEDULE, HOURLY, entry)
    call_command("sync_schedule")
    assert PeriodicTask.objects.get(name=HOURLY).enabled


@pytest.mark.django_db
def test_a_schedule_made_in_the_admin_is_not_touched(hourly: None) -> None:
    mine = PeriodicTask.objects.create(
        name="ops: my own", task="tests.jobs.noop",
        interval=IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES),
    )  # fmt: skip
    call_command("sync_schedule")
    mine.refresh_from_db()
    assert mine.enabled and mine.expire_seconds is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("entry", "expires"),
    [
        ({"every": 30}, 30),
        ({"crontab": {"minute": "0"}}, 3600),
        ({"crontab": {"minute": "17", "hour": "3"}}, 86400),
        ({"crontab": {"minute": "*/5"}, "expires": 60}, 60),
    ],
)
def test_every_periodic_message_expires_when_the_next_run_is_due(
    monkeypatch: pytest.MonkeyPatch, entry: dict[str, Any], expires: int
) -> None:
    """After an outage, a job due every minute runs once, not once per missed minute: the
    messages beat sent meanwhile expire on the worker."""
    monkeypatch.setitem(schedule.SCHEDULE, "test: expiring", {"task": "tests.jobs.noop", **entry})
    call_command("sync_schedule")
    task = PeriodicTask.objects.get(name="test: expiring")
    assert task.expire_seconds == expires
    assert ModelEntry(task, app=celery_app).options["expires"] == expires  # what beat sends
