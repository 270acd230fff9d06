"""The periodic tasks admin, through Django's test client against the real admin site: what may
be scheduled (an allow-list, arguments the task takes), who may (staff, with the model's
permissions), and what the list shows (last run, next run, last outcome)."""

from __future__ import annotations

import html
import json
import re
import zoneinfo
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import formats, timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from pytest_django.fixtures import Settings

from app.beat import BeatScheduler
from app.models import JobRecord, JobStatus
from app.periodic import schedule_next_run
from config.celery import app as celery_app
from config.schedule import schedule_all
from tests import jobs  # noqa: F401  (registers the test jobs in this process)
from tests.support import Broker, running_beat, running_worker, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("development_http")]

ADD = reverse("admin:django_celery_beat_periodictask_add")
LIST = reverse("admin:django_celery_beat_periodictask_changelist")
NOT_SCHEDULABLE = "cannot be scheduled from the admin"


def change_url(task: PeriodicTask) -> str:
    return reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])


@pytest.fixture
def admin_client() -> Client:
    """A superuser's client (no password: hashing one costs a second per test)."""
    client = Client()
    client.force_login(User.objects.create_superuser("admin", password=None))
    return client


@pytest.fixture
def every_minute() -> IntervalSchedule:
    return IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)


@pytest.fixture
def schedulable(settings: Settings) -> None:
    """Two test jobs on the allow-list through the setting: one takes ``self`` (bind=True)."""
    settings.SCHEDULABLE_TASKS = ["tests.jobs.record", "tests.jobs.count_slowly"]


def form(interval: IntervalSchedule, **fields: str) -> dict[str, str]:
    """The add/change form as a browser posts it, with ``fields`` changed."""
    return {
        "name": "nightly count",
        "task": "tests.jobs.count_slowly",
        "enabled": "on",
        "description": "",
        "interval": str(interval.pk),
        "crontab": "",
        "solar": "",
        "clocked": "",
        "start_time_0": "",
        "start_time_1": "",
        "args": "[]",
        "kwargs": '{"upto": 3}',
        "expires_0": "",
        "expires_1": "",
        "expire_seconds": "",
        "queue": "",
        "priority": "",
        **fields,
    }


def errors(response: Any) -> str:
    """The form's errors, as the page shows them (its error lists), or "" when it saved."""
    if response.status_code == 302:
        return ""
    assert response.status_code == 200, response.status_code
    return " ".join(
        html.unescape(re.sub(r"<[^>]+>", " ", e))
        for e in re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.text, re.S)
    )


# --- What may be scheduled --------------------------------------------------------------------


def test_the_task_field_offers_the_code_s_schedules_and_the_setting_s_tasks_only(
    admin_client: Client, schedulable: None
) -> None:
    page = admin_client.get(ADD).text
    select = re.search(r'<select name="task".*?</select>', page, re.S)
    assert select is not None
    offered = set(re.findall(r'<option value="([^"]+)"', select.group(0)))
    code = {entry["task"] for entry in schedule_all().values()}
    assert offered == code | {"tests.jobs.record", "tests.jobs.count_slowly"}
    assert 'name="regtask"' not in page  # the stock form's second, free task field
    assert 'name="headers"' not in page


@pytest.mark.parametrize("task", ["tests.jobs.permanent", "celery.backend_cleanup", "os.system"])
def test_adding_a_task_off_the_allow_list_is_refused(
    admin_client: Client, schedulable: None, every_minute: IntervalSchedule, task: str
) -> None:
    response = admin_client.post(ADD, form(every_minute, task=task, kwargs='{"path": "x"}'))
    assert f"{task} {NOT_SCHEDULABLE}" in errors(response)
    assert not PeriodicTask.objects.exists()


def test_changing_a_schedule_to_a_task_off_the_allow_list_is_refused(
    admin_client: Client, schedulable: None, every_minute: IntervalSchedule
) -> None:
    task = PeriodicTask.objects.create(
        name="count", task="tests.jobs.count_slowly", interval=every_minute, kwargs='{"upto": 3}'
    )
    response = admin_client.post(
        change_url(task), form(every_minute, task="tests.jobs.permanent", kwargs='{"path": "x"}')
    )
    assert f"tests.jobs.permanent {NOT_SCHEDULABLE}" in errors(response)
    task.refresh_from_db()
    assert task.task == "tests.jobs.count_slowly"


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ("[]", '{"upto": 3, "pase": 1}', "takes no argument 'pase'"),
        ("[]", '{"pase": 1}', "takes no argument 'pase'"),  # not "missing 'upto'"
        ("[]", "{}", "missing a required argument: 'upto'"),
        ("[3, 1, 2]", "{}", "too many positional arguments"),
        ("[3]", '{"upto": 3}', "multiple values for argument 'upto'"),
        ("[]", '{"upto": {"__type__": "datetime", "__value__": "2030-01-01T00:00:00"}}',
         "kwargs['upto'] is a datetime, not plain JSON"),
        ("[NaN]", "{}", "args[0] is nan, which JSON does not allow"),
        ("[]", "[3]", "must be a JSON object"),
        ("3", "{}", "must be a JSON list"),
        ("[", "{}", "not JSON"),
    ],
)  # fmt: skip
def test_arguments_the_task_does_not_take_are_refused_and_named(
    admin_client: Client,
    schedulable: None,
    every_minute: IntervalSchedule,
    args: str,
    kwargs: str,
    error: str,
) -> None:
    response = admin_client.post(ADD, form(every_minute, args=args, kwargs=kwargs))
    assert error in errors(response)
    assert not PeriodicTask.objects.exists()


def test_a_bound_task_s_self_is_not_an_argument(
    admin_client: Client, schedulable: None, every_minute: IntervalSchedule
) -> None:
    """``tests.jobs.record(self, path, sleep=0.0)``: ``self`` is Celery's, not the schedule's."""
    too_many = form(every_minute, task="tests.jobs.record", args='["a", 1, 2]', kwargs="{}")
    assert "too many positional arguments" in errors(admin_client.post(ADD, too_many))
    good = form(every_minute, task="tests.jobs.record", args='["/tmp/x", 1]', kwargs="{}")
    assert errors(admin_client.post(ADD, good)) == ""


def test_a_schedulable_task_with_good_arguments_is_saved_and_can_be_changed(
    admin_client: Client, schedulable: None, every_minute: IntervalSchedule
) -> None:
    response = admin_client.post(ADD, form(every_minute, queue="default"))
    assert errors(response) == ""
    task = PeriodicTask.objects.get(name="nightly count")
    assert (task.task, json.loads(task.kwargs), task.queue) == (
        "tests.jobs.count_slowly",
        {"upto": 3},
        "default",
    )
    changed = form(every_minute, kwargs='{"upto": 5, "pause": 0.5}')
    assert errors(admin_client.post(change_url(task), changed)) == ""
    task.refresh_from_db()
    assert json.loads(task.kwargs) == {"upto": 5, "pause": 0.5}


def test_a_code_schedule_s_task_is_schedulable_without_the_setting(
    admin_client: Client, every_minute: IntervalSchedule
) -> None:
    """The engine's own (config/schedule.py): a family's would fail this test once the family is
    deleted."""
    fields = form(every_minute, task="tasks.maintenance.prune_jobs", kwargs="{}")
    assert errors(admin_client.post(ADD, fields)) == ""
    assert PeriodicTask.objects.get().task == "tasks.maintenance.prune_jobs"


def test_a_queue_is_one_of_config_queues(
    admin_client: Client, schedulable: None, every_minute: IntervalSchedule
) -> None:
    response = admin_client.post(ADD, form(every_minute, queue="default.dead"))
    assert "Select a valid choice. default.dead is not one of the available choices" in errors(
        response
    )


def test_message_headers_exchange_and_routing_key_are_not_taken_from_the_form(
    admin_client: Client, schedulable: None, every_minute: IntervalSchedule
) -> None:
    """A ``task`` header replaces the task name Celery writes into the message
    (``send_task_message`` updates its headers with the caller's): the schedule would run
    any task at all, under an allowed task's name."""
    hostile = {
        "headers": '{"task": "tests.jobs.permanent"}',
        "exchange": "",
        "routing_key": "default.dead",
    }
    assert errors(admin_client.post(ADD, form(every_minute, **hostile))) == ""
    task = PeriodicTask.objects.get()
    assert (task.headers, task.exchange, task.routing_key) in {
        (None, None, None),
        ("{}", None, None),
    }


# --- Who may ----------------------------------------------------------------------------------


def user_with(*codenames: str, staff: bool) -> Client:
    user = User.objects.create_user("operator", password=None, is_staff=staff)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_celery_beat", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


ALL = ("view_periodictask", "add_periodictask", "change_periodictask", "delete_periodictask")


def test_a_user_who_is_not_staff_is_sent_to_the_login_page_even_with_every_permission(
    schedulable: None, every_minute: IntervalSchedule
) -> None:
    client = user_with(*ALL, staff=False)
    for response in (client.get(LIST), client.get(ADD), client.post(ADD, form(every_minute))):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert not PeriodicTask.objects.exists()


def test_staff_without_the_add_permission_cannot_add(
    schedulable: None, every_minute: IntervalSchedule
) -> None:
    client = user_with("view_periodictask", staff=True)
    assert client.get(LIST).status_code == 200
    assert client.post(ADD, form(every_minute)).status_code == 403
    assert not PeriodicTask.objects.exists()


@pytest.mark.parametrize("action", ["enable_tasks", "toggle_tasks", "run_tasks"])
def test_staff_who_may_only_view_cannot_use_the_list_actions(
    broker: Broker, every_minute: IntervalSchedule, action: str
) -> None:
    """django-celery-beat's actions asked for no permission: view was enough to run a task."""
    task = PeriodicTask.objects.create(
        name="prune",
        task="tasks.maintenance.prune_jobs",  # in the code's schedule, whichever families remain
        interval=every_minute,
        enabled=False,
    )
    client = user_with("view_periodictask", staff=True)
    client.post(LIST, {"action": action, "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert not task.enabled
    assert broker.depth("default") == 0


def test_run_now_runs_no_task_off_the_allow_list(
    admin_client: Client, broker: Broker, every_minute: IntervalSchedule
) -> None:
    """Rows written outside the admin (beat's own cleanup entry) stay beat's to send."""
    cleanup = PeriodicTask.objects.create(
        name="celery.backend_cleanup", task="celery.backend_cleanup", interval=every_minute
    )
    response = admin_client.post(
        LIST, {"action": "run_tasks", "_selected_action": [cleanup.pk]}, follow=True
    )
    assert f"celery.backend_cleanup {NOT_SCHEDULABLE}" in response.text
    assert broker.depth("default") == 0


def test_run_now_sends_a_schedulable_task(
    admin_client: Client, broker: Broker, every_minute: IntervalSchedule
) -> None:
    prune = PeriodicTask.objects.create(
        name="prune",
        task="tasks.maintenance.prune_jobs",  # in the code's schedule, whichever families remain
        interval=every_minute,
    )
    admin_client.post(LIST, {"action": "run_tasks", "_selected_action": [prune.pk]})
    assert broker.depth("default") == 1


# --- What the list shows ----------------------------------------------------------------------


def shown(value: datetime) -> str:
    """A date and time as the admin's list shows it (in TIME_ZONE)."""
    return str(formats.localize(timezone.localtime(value)))


def test_the_list_shows_last_run_next_run_and_the_newest_record_s_outcome(
    admin_client: Client, every_minute: IntervalSchedule
) -> None:
    last_run = timezone.now() - timedelta(seconds=20)
    PeriodicTask.objects.create(
        name="tracked", task="tests.jobs.tracked_record", interval=every_minute,
        kwargs='{"path": "x"}', last_run_at=last_run,
    )  # fmt: skip
    PeriodicTask.objects.create(
        name="untracked", task="tests.jobs.record", interval=every_minute, kwargs='{"path": "x"}'
    )
    old = JobRecord.objects.create(
        task_name="tests.jobs.tracked_record", status=JobStatus.SUCCEEDED
    )
    newest = JobRecord.objects.create(task_name="tests.jobs.tracked_record", status=JobStatus.DEAD)
    JobRecord.objects.filter(pk=old.pk).update(enqueued_at=timezone.now() - timedelta(hours=1))
    page = admin_client.get(LIST).text
    row = re.search(r"<tr>.*?>tracked<.*?</tr>", page, re.S)
    assert row is not None
    assert shown(last_run) in row.group(0)
    assert shown(last_run + timedelta(seconds=60)) in row.group(0)
    newest_link = reverse("admin:app_jobrecord_change", args=[newest.pk])
    assert f'<a href="{newest_link}">dead</a>' in row.group(0)
    untracked = re.search(r"<tr>.*?>untracked<.*?</tr>", page, re.S)
    assert untracked is not None and "not tracked" in untracked.group(0)


def test_the_list_makes_as_many_queries_for_many_schedules_as_for_one(
    admin_client: Client, every_minute: IntervalSchedule
) -> None:
    def list_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(LIST).status_code == 200
        return len(queries)

    def add(n: int, task: str) -> None:
        for _ in range(n):
            PeriodicTask.objects.create(
                name=f"{task} {PeriodicTask.objects.count()}",
                task=task,
                interval=every_minute,
                kwargs='{"path": "x"}',
            )
            JobRecord.objects.create(task_name=task, status=JobStatus.SUCCEEDED)

    add(1, "tests.jobs.tracked_record")
    one = list_queries()
    add(30, "tests.jobs.tracked_record")
    add(30, "tests.jobs.effect_then_die")
    add(30, "tests.jobs.count_slowly")
    assert list_queries() == one


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_tracked_job_that_beat_sends_gets_a_record_and_the_list_shows_its_outcome(
    admin_client: Client, broker: Broker, events: Path, tmp_path: Path
) -> None:
    """Beat publishes with plain ``apply_async``, not ``job_enqueue``: no record is written
    before the job starts. The worker's start writes one (``record_start`` inserts it)."""
    every_minute = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="tracked", task="tests.jobs.tracked_record", interval=every_minute,
        kwargs=json.dumps({"path": str(events)}), last_run_at=timezone.now() - timedelta(minutes=2),
    )  # fmt: skip
    # Beat first: it starts while the worker does (which waits for its ping).
    with running_beat(log_dir=tmp_path), running_worker(log_dir=tmp_path):
        record = wait_for(
            lambda: JobRecord.objects.filter(
                task_name="tests.jobs.tracked_record", status=JobStatus.SUCCEEDED
            ).first(),
            timeout=60,
            what="the job beat sent to succeed",
        )
    row = re.search(r"<tr>.*?>tracked<.*?</tr>", admin_client.get(LIST).text, re.S)
    link = reverse("admin:app_jobrecord_change", args=[record.pk])
    assert row is not None and f'<a href="{link}">succeeded</a>' in row.group(0)


# --- When a schedule runs next (app/periodic.py) ----------------------------------------------

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def at(text: str, tz: zoneinfo.ZoneInfo = BERLIN) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def crontab_task(**fields: str) -> PeriodicTask:
    crontab = CrontabSchedule.objects.create(**fields)
    return PeriodicTask(name="t", task="tests.jobs.noop", crontab=crontab)


def test_next_run_of_a_crontab_is_reckoned_in_its_own_time_zone() -> None:
    task = crontab_task(minute="30", hour="2", timezone="Europe/Berlin")
    task.last_run_at = at("2030-01-10 02:30")
    assert schedule_next_run(task, now=at("2030-01-10 12:00")) == at("2030-01-11 02:30")


def test_next_run_of_an_interval_counts_from_the_last_run(every_minute: IntervalSchedule) -> None:
    task = PeriodicTask(name="t", task="tests.jobs.noop", interval=every_minute)
    task.last_run_at = at("2030-01-10 12:00:00", zoneinfo.ZoneInfo("UTC"))
    now = task.last_run_at + timedelta(seconds=15)
    assert schedule_next_run(task, now=now) == task.last_run_at + timedelta(seconds=60)
    # Overdue (beat was down): due now, not in the past.
    later = task.last_run_at + timedelta(hours=1)
    assert schedule_next_run(task, now=later) == later


def test_next_run_of_a_task_that_never_ran_counts_from_its_last_change(
    every_minute: IntervalSchedule,
) -> None:
    """As django-celery-beat's scheduler does (``ModelEntry``: ``date_changed``)."""
    task = PeriodicTask.objects.create(name="t", task="tests.jobs.noop", interval=every_minute)
    assert task.last_run_at is None
    assert schedule_next_run(task, now=task.date_changed) == task.date_changed + timedelta(
        seconds=60
    )


def test_a_disabled_expired_or_spent_one_off_task_runs_no_more(
    every_minute: IntervalSchedule,
) -> None:
    now = timezone.now()
    disabled = PeriodicTask(name="t", task="t", interval=every_minute, enabled=False)
    expired = PeriodicTask(name="t", task="t", interval=every_minute, expires=now)
    spent = PeriodicTask(name="t", task="t", interval=every_minute, one_off=True, total_run_count=1)
    assert [schedule_next_run(t, now=now) for t in (disabled, expired, spent)] == [None] * 3


def test_next_run_waits_for_the_start_time(every_minute: IntervalSchedule) -> None:
    now = timezone.now()
    task = PeriodicTask(
        name="t",
        task="t",
        interval=every_minute,
        last_run_at=now,
        start_time=now + timedelta(days=2),
    )
    assert schedule_next_run(task, now=now) == now + timedelta(days=2)


#: Every hour (django-celery-beat reads only crontabs whose hour is near the present one).
FEBRUARY_30 = {"minute": "0", "hour": "*", "day_of_month": "30", "month_of_year": "2"}


def test_a_crontab_that_names_no_real_date_is_refused_in_the_form(
    admin_client: Client, schedulable: None, every_minute: IntervalSchedule
) -> None:
    never = CrontabSchedule.objects.create(**FEBRUARY_30, timezone="UTC")
    fields = {**form(every_minute), "interval": "", "crontab": str(never.pk)}
    response = admin_client.post(ADD, fields)
    assert "beat would never run this crontab: Invalid crontab: day_of_month '30' never" in (
        errors(response)
    )
    assert not PeriodicTask.objects.exists()


def test_a_schedule_with_a_crontab_celery_refuses_is_named_by_beat_and_listed(
    admin_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Made before this check, or another way (the shell, a data migration): beat left it out
    without a word, and the list's "next run" column raised (a 500 for the whole list)."""
    never = crontab_task(**FEBRUARY_30, timezone="UTC")
    never.save()
    fine = crontab_task(minute="0", hour="*", timezone="UTC")
    fine.name = "fine"
    fine.save()
    entries = BeatScheduler(app=celery_app, lazy=True).all_as_schedule()
    assert list(entries) == ["fine"]
    assert "periodic task 't' never runs: Invalid crontab: day_of_month '30'" in caplog.text
    assert schedule_next_run(never) is None
    listed = admin_client.get(LIST)
    assert listed.status_code == 200 and "fine" in listed.text
