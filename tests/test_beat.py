"""``celery beat`` as the Procfile runs it (bin/beat), against the real database and a real worker:
one beat sends and a second stands by (app/beat.py); and beat's crontabs across daylight-saving
changes, driven through beat's own entry code with a controlled clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from django.db import connection
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app import beat as beat_module
from app.beat import (
    LEASE,
    STANDBY_POLL,
    AdvisoryLock,
    BeatEntry,
    BeatScheduler,
    LeaseLock,
    LockLost,
)
from app.models import BeatLease, OutboxMessage
from app.outbox import outbox_relay
from app.periodic import schedule_next_run
from config.celery import app as celery_app
from tests.support import (
    ROOT,
    Broker,
    TcpProxy,
    Worker,
    database_url,
    read_events,
    running_worker,
    wait_for,
)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's locks and sessions"
)
ACTIVE, STANDBY = "beat: active (lock held)", "beat: standby, another beat holds the lock"
LOST = "beat: lost the lock"
SENDING = "Scheduler: Sending due task"
#: How long after the active beat's process dies a standby sends on PostgreSQL: the lock goes
#: with the session, the standby polls every STANDBY_POLL, then reads the schedule. Generous for
#: a loaded two-core CI machine.
POSTGRESQL_TAKEOVER = 2 * STANDBY_POLL + 1


class Beat:
    """A real ``bin/beat`` process."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as an OOM killer or a lost machine would stop it: no clean-up runs."""
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def beat_start(
    tmp_path: Path, name: str = "beat", *, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    process_env = {
        **os.environ,
        "CELERY_BROKER_URL": celery_app.conf.broker_url,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **(env or {}),
    }
    with (tmp_path / f"{name}.log").open("wb") as out:
        return subprocess.Popen(
            ["sh", str(ROOT / "bin" / "beat")], cwd=ROOT, env=process_env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.fixture
def beats(tmp_path: Path) -> Iterator[Callable[..., Beat]]:
    """Start ``bin/beat`` processes; every one is stopped at the end, its log printed."""
    started: list[Beat] = []

    def start(name: str, env: dict[str, str] | None = None) -> Beat:
        started.append(Beat(beat_start(tmp_path, name, env=env), tmp_path / f"{name}.log"))
        return started[-1]

    yield start
    for beat in started:
        beat.stop()
        print(f"--- {beat.log.name} ---\n{beat.output()[-10000:]}")


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker for this module's beat processes: each start costs seconds."""
    with running_worker(log_dir=tmp_path_factory.mktemp("worker")) as worker:
        yield worker


def every(seconds: int, events: Path, name: str | None = None) -> PeriodicTask:
    """A schedule that runs tests.jobs.record every ``seconds``: one line per run in ``events``."""
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=seconds, period=IntervalSchedule.SECONDS
    )
    return PeriodicTask.objects.create(
        name=name or f"every {seconds} s",
        task="tests.jobs.record",
        interval=interval,
        kwargs=json.dumps({"path": str(events)}),
    )


def runs(events: Path) -> list[float]:
    """When each run started in the worker (epoch seconds), in order."""
    return sorted(line["at"] for line in read_events(events) if line["event"] == "start")


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in pairwise(times)]


def is_active(beat: Beat) -> bool:
    """Whether the beat's log says it holds the lock now."""
    log = beat.output()
    return log.rfind(ACTIVE) > max(log.rfind(LOST), log.rfind(STANDBY))


def sent_standing_by(log: str) -> bool:
    """Whether the beat sent anything while its log said it did not hold the lock."""
    active = False
    for line in log.splitlines():
        if ACTIVE in line or LOST in line or STANDBY in line:
            active = ACTIVE in line
        elif SENDING in line and not active:
            return True
    return False


def active_and_standby(first: Beat, second: Beat) -> tuple[Beat, Beat]:
    """Wait until one beat says it is active and the other that it stands by."""

    def settled() -> tuple[Beat, Beat] | None:
        for beat in (first, second):
            assert beat.process.poll() is None, beat.output()
        if ACTIVE in first.output() and STANDBY in second.output():
            return first, second
        if ACTIVE in second.output() and STANDBY in first.output():
            return second, first
        return None

    return wait_for(settled, timeout=60, what="one beat active and the other standing by")


# --- Processes ------------------------------------------------------------------------------------


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_beat_stops_on_sigterm_that_lands_during_a_database_query(tmp_path: Path) -> None:
    """`docker stop` while beat waits on the database (its setup; each tick): Celery's own
    handler saved the schedule inside the signal handler, on the connection the interrupted
    query still held, and beat hung until SIGKILL."""
    dsn = database_url().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE django_celery_beat_periodictasks IN ACCESS EXCLUSIVE MODE")
        beat = beat_start(tmp_path)
        try:
            with psycopg.connect(dsn, autocommit=True) as watcher:
                wait_for(
                    lambda: (
                        beat.poll() is not None
                        or watcher.execute(
                            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND query LIKE '%django_celery_beat_periodictasks%'"
                        ).fetchone()
                    ),
                    timeout=60,
                    what="beat to wait on the locked table",
                )
            assert beat.poll() is None, (tmp_path / "beat.log").read_text()
            beat.terminate()
            time.sleep(1)  # Python runs the handler at once: psycopg's wait wakes on EINTR
        finally:
            blocker.rollback()  # the query goes on; with the fix, SystemExit is already raised
        try:
            beat.wait(30)
        except subprocess.TimeoutExpired:
            beat.kill()
            pytest.fail(f"beat hung after SIGTERM: {(tmp_path / 'beat.log').read_text()}")
    assert beat.returncode == 0, (tmp_path / "beat.log").read_text()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_per_second_schedule_runs_in_a_worker(
    beats: Callable[..., Beat], broker: Broker, worker: Worker, events: Path
) -> None:
    every(1, events)
    beat = beats("beat")
    wait_for(lambda: len(runs(events)) >= 4, timeout=60, what="four runs in the worker")
    assert ACTIVE in beat.output()
    assert all(0.8 < gap < 1.5 for gap in gaps(runs(events))), gaps(runs(events))


@postgresql_only
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_beats_send_every_run_once_whatever_happens_to_the_active_one(
    beats: Callable[..., Beat], broker: Broker, worker: Worker, tmp_path: Path
) -> None:
    """Two beats for half a minute. The active one's lock session is cut, as a database restart
    or a network cut would: it stops sending, and one of the two takes the lock again. Then the
    active one is SIGKILLed right after it sent a run: the standby takes over.

    The three-second schedule tells a standby that knows the old beat's last run (next run three
    seconds after it) from one that does not (a run at once, on takeover)."""
    second, third = tmp_path / "every-second.jsonl", tmp_path / "every-3s.jsonl"
    schedules = [every(1, second), every(3, third)]
    pair = active_and_standby(beats("a"), beats("b"))
    started = time.monotonic()
    time.sleep(8)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    wait_for(lambda: LOST in pair[0].output(), timeout=10, what="the active beat to notice")
    active = wait_for(lambda: next(filter(is_active, pair), None), timeout=10, what="a new active")
    standby = pair[1] if active is pair[0] else pair[0]
    time.sleep(max(0, 18 - (time.monotonic() - started)))
    before = len(runs(third))
    wait_for(lambda: len(runs(third)) > before, timeout=10, what="a run of the 3 s schedule")
    killed = time.monotonic()
    active.kill()
    wait_for(lambda: is_active(standby), timeout=30, what="the standby to take over")
    takeover = time.monotonic() - killed
    time.sleep(max(0, 30 - (time.monotonic() - started)))
    standby.stop()
    time.sleep(1)  # the last message reaches the worker
    print(f"takeover {takeover:.2f} s; gaps: {gaps(runs(second))} / {gaps(runs(third))}")
    for beat in pair:
        assert not sent_standing_by(beat.output()), beat.output()
    assert takeover < POSTGRESQL_TAKEOVER, takeover
    for interval, events in ((1, second), (3, third)):
        times = gaps(runs(events))
        # No duplicate: a second beat sending, or a standby that does not know the last run,
        # makes a gap far shorter than the interval.
        assert min(times) > 0.8 * interval, (interval, times)
        # No lost run: the longest gap is a handover's.
        assert max(times) < interval + POSTGRESQL_TAKEOVER, (interval, times)
    # Every run recorded in the database ran once in the worker.
    for schedule, events in zip(schedules, (second, third), strict=True):
        schedule.refresh_from_db()
        assert schedule.total_run_count == len(runs(events))


SQLITE_SETUP = """
import os
from pathlib import Path
from django.core.management import call_command
from tests.test_beat import every
call_command("migrate", verbosity=0)
every(1, Path(os.environ["EVENTS"]))
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_beats_on_sqlite_hand_over_through_the_lease(
    beats: Callable[..., Beat], broker: Broker, worker: Worker, events: Path, tmp_path: Path
) -> None:
    """The same with SQLite's lease: the standby takes over once the dead beat's lease expired.
    A database of its own, whichever the tests run on (the worker's does not matter here)."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'beat.sqlite3'}"}
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SQLITE_SETUP], cwd=ROOT, check=True,
        capture_output=True, env={**os.environ, **env, "EVENTS": str(events)}, timeout=120,
    )  # fmt: skip
    active, standby = active_and_standby(beats("a", env), beats("b", env))
    wait_for(lambda: len(runs(events)) >= 3, timeout=30, what="three runs")
    killed = time.monotonic()
    active.kill()
    wait_for(lambda: ACTIVE in standby.output(), timeout=30, what="the standby to take over")
    takeover = time.monotonic() - killed
    count = len(runs(events))
    wait_for(lambda: len(runs(events)) >= count + 2, timeout=30, what="two more runs")
    print(f"takeover {takeover:.2f} s; gaps: {gaps(runs(events))}")
    # The dead beat renewed its lease at its last tick, a second or less before it died.
    assert LEASE.total_seconds() - 2 < takeover < LEASE.total_seconds() + 2 * STANDBY_POLL + 1
    times = gaps(runs(events))
    assert min(times) > 0.8, times
    assert max(times) < 1 + takeover + 1, times


# --- The locks, function by function -------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """Beat's clock, stopped: ``clock[0] += timedelta(...)`` moves it."""
    now = [datetime(2025, 6, 1, 12, tzinfo=UTC)]
    monkeypatch.setattr(beat_module, "clock_now", lambda: now[0])
    return now


def last_run(task: PeriodicTask) -> tuple[datetime | None, int]:
    task.refresh_from_db()
    return task.last_run_at, task.total_run_count


@pytest.mark.django_db
def test_the_lease_passes_to_a_standby_only_once_it_expired(
    clock: list[datetime], events: Path
) -> None:
    """LeaseLock, the SQLite lock, on the test database (any vendor)."""
    task = every(1, events)
    first, second = LeaseLock(holder="first"), LeaseLock(holder="second")
    assert first.acquire() and not second.acquire()
    assert first.record_run(task_id=task.pk, at=clock[0])
    assert last_run(task) == (clock[0], 1)
    clock[0] += LEASE * 0.9
    assert first.confirm() and not second.acquire()  # renewed: another lease from now
    clock[0] += LEASE * 0.9
    assert not second.acquire()
    clock[0] += LEASE * 0.2  # expired
    assert second.acquire()
    assert not first.confirm()
    with pytest.raises(LockLost):
        first.record_run(task_id=task.pk, at=clock[0])
    assert last_run(task) == (clock[0] - LEASE * 2, 1)  # nothing recorded
    second.release()
    clock[0] -= timedelta(minutes=1)  # a standby on a host whose clock is behind
    assert first.acquire()  # at once, no expiry to wait for


@pytest.mark.django_db
def test_a_run_of_a_disabled_schedule_is_not_recorded(clock: list[datetime], events: Path) -> None:
    task = every(1, events)
    lock = LeaseLock(holder="only")
    assert lock.acquire()
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)
    assert not lock.record_run(task_id=task.pk, at=clock[0])
    assert last_run(task) == (None, 0)
    assert BeatLease.objects.get().holder == "only"


@pytest.mark.django_db(transaction=True)
@hypothesis_settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edited_at=st.sets(st.integers(min_value=0, max_value=40), max_size=6))
def test_schedules_edited_while_beat_reads_them_send_no_run_twice(
    edited_at: set[int], events: Path
) -> None:
    """Someone saves a schedule in the admin while beat's tick reads the schedule (in a CI run: a
    second beat starting, which writes its default entries). django-celery-beat then reloads
    and flags its heap for a rebuild; the flag outlived the tick, and the next tick rebuilt the
    heap from entries that did not know the run just sent, so the run went out twice, 7 ms
    apart. Here edits land on any of beat's reads of the change marker."""
    start = datetime(2025, 6, 1, 12, tzinfo=UTC)
    clock = [start]
    task = every(3, events)
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=start - timedelta(seconds=3))
    sent: list[float] = []
    reads = [0]
    read = PeriodicTasks.last_change

    def last_change() -> datetime | None:
        if reads[0] in edited_at:
            PeriodicTasks.update_changed()  # as the admin's save does
        reads[0] += 1
        return read()

    def send(entry: BeatEntry, producer: Any = None, advance: bool = False) -> None:
        sent.append((clock[0] - start).total_seconds())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(beat_module, "clock_now", lambda: clock[0])
        scheduler = BeatScheduler(app=celery_app)
        PeriodicTask.objects.exclude(pk=task.pk).update(enabled=False)  # the project's own
        patch.setattr(scheduler, "apply_async", send)
        patch.setattr(PeriodicTasks, "last_change", last_change)
        try:
            for _ in range(24):
                scheduler.tick()
                clock[0] += timedelta(seconds=0.5)
        finally:
            scheduler.close()
            PeriodicTask.objects.all().delete()
    assert sent == [0, 3, 6, 9]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_dropped_lock_session_lets_a_standby_in_and_stops_the_old_beat(events: Path) -> None:
    """The advisory lock lives as long as its session. When that session drops (here:
    pg_terminate_backend, as a server restart or a network cut would), the old beat's next run
    fails to record, so it is not sent, and the standby gets the lock."""
    task = every(1, events)
    first, second = AdvisoryLock(), AdvisoryLock()
    try:
        assert first.acquire() and not second.acquire()
        now = datetime.now(UTC)
        assert first.record_run(task_id=task.pk, at=now)
        assert first.confirm()
        assert first._conn is not None
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first._conn.info.backend_pid])
        wait_for(second.acquire, timeout=10, what="the lock, once the session ended")
        with pytest.raises(LockLost):
            first.record_run(task_id=task.pk, at=now + timedelta(seconds=1))
        assert not first.confirm() and not first.acquire()
        assert last_run(task) == (now, 1)
    finally:
        first.release()
        second.release()


# --- Daylight saving ------------------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")
SPRING_FORWARD, FALL_BACK = date(2025, 3, 30), date(2025, 10, 26)
HOURS = [f"{hour:02}:00" for hour in range(24)]


def runs_on(
    day: date, schedule: CrontabSchedule | IntervalSchedule, clock: list[datetime]
) -> dict[date, list[str]]:
    """The runs of ``schedule`` from the day before ``day`` to the day after, in Berlin wall time
    with the UTC offset, as beat makes them: its loop asks the entry whether it is due, sends
    (``next(entry)`` records the run) when it is, then sleeps for what the entry said, at most
    a minute."""
    field = "crontab" if isinstance(schedule, CrontabSchedule) else "interval"
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), BERLIN).astimezone(UTC)
    model = PeriodicTask(name="dst", task="tests.jobs.noop", last_run_at=start, **{field: schedule})
    entry = BeatEntry(model, app=celery_app)
    clock[0] = start + timedelta(seconds=1)
    made: dict[date, list[str]] = {}
    while clock[0] < start + timedelta(days=3):
        due, wait = entry.is_due()
        if due:
            entry = next(entry)
            local = clock[0].astimezone(BERLIN)
            made.setdefault(local.date(), []).append(local.strftime("%H:%M%z"))
        clock[0] += timedelta(seconds=min(max(wait, 0.01), 60))
    return made


@pytest.mark.parametrize(
    ("day", "runs_that_day"),
    [(SPRING_FORWARD, ["03:00+0200"]), (FALL_BACK, ["02:30+0200"])],
    ids=["spring-forward", "fall-back"],
)
def test_a_daily_0230_job_runs_once_on_a_daylight_saving_day(
    clock: list[datetime], day: date, runs_that_day: list[str]
) -> None:
    """On the day without 02:30 it runs when the clocks jump, at 03:00, as cron does (Celery
    ran it at 03:30); on the day with two, at the first."""
    daily = CrontabSchedule(minute="30", hour="2", timezone=BERLIN)
    made = runs_on(day, daily, clock)
    day_before, day_after = day - timedelta(days=1), day + timedelta(days=1)
    assert made == {
        day_before: [f"02:30{datetime.combine(day_before, datetime.min.time(), BERLIN):%z}"],
        day: runs_that_day,
        day_after: [f"02:30{datetime.combine(day_after, datetime.min.time(), BERLIN):%z}"],
    }


@pytest.mark.parametrize(
    "schedule",
    [CrontabSchedule(minute="0", timezone=BERLIN), IntervalSchedule(every=1, period="hours")],
    ids=["crontab", "interval"],
)
def test_an_hourly_job_runs_once_per_real_hour_across_daylight_saving_days(
    clock: list[datetime], schedule: CrontabSchedule | IntervalSchedule
) -> None:
    """23 runs on the day the clocks go forward (02:00 never happens), 25 on the day they go back
    (02:00 happens twice; Celery's crontab skipped the second and ran 24)."""
    spring = runs_on(SPRING_FORWARD, schedule, clock)[SPRING_FORWARD]
    assert spring == [f"{h}+0100" for h in HOURS[:2]] + [f"{h}+0200" for h in HOURS[3:]]
    autumn = runs_on(FALL_BACK, schedule, clock)[FALL_BACK]
    assert autumn == [f"{h}+0200" for h in HOURS[:3]] + [f"{h}+0100" for h in HOURS[2:]]


@pytest.mark.parametrize(
    ("fields", "last_run", "now", "next_run"),
    [
        ({"minute": "0"}, "2025-10-26 02:00+02:00", "2025-10-26 02:10+02:00", "02:00+0100"),
        (
            {"minute": "30", "hour": "2"},
            "2025-03-29 02:30+01:00",
            "2025-03-30 01:00+01:00",
            "03:00+0200",
        ),
    ],
    ids=["hourly-fall-back", "daily-spring-forward"],
)
def test_the_admin_shows_the_next_run_beat_will_make_across_daylight_saving(
    fields: dict[str, str], last_run: str, now: str, next_run: str
) -> None:
    """The periodic tasks list's "next run" (app.periodic) reads the wall clock as beat does."""
    crontab = CrontabSchedule(timezone=BERLIN, **fields)
    task = PeriodicTask(
        name="dst",
        task="tests.jobs.noop",
        crontab=crontab,
        last_run_at=datetime.fromisoformat(last_run),
    )
    due = schedule_next_run(task, now=datetime.fromisoformat(now))
    assert due is not None and due.astimezone(BERLIN).strftime("%H:%M%z") == next_run


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runs_due_while_the_broker_is_down_are_kept_and_run_once_it_is_back(
    beats: Callable[..., Beat], broker: Broker, worker: Worker, events: Path
) -> None:
    """Beat recorded each run, then Celery logged the failed send ("Message Error") and the run
    was gone: every run due during a broker restart. Now it waits in the outbox, and the relay
    (a beat job itself, or ``manage.py relay_outbox``) publishes it once the broker is back."""
    task = every(1, events)
    proxy = TcpProxy()  # beat reaches RabbitMQ through it; the worker and this test do not
    proxy.up()
    try:
        beat = beats("beat", env={"CELERY_BROKER_URL": proxy.url(celery_app.conf.broker_url)})
        wait_for(lambda: runs(events), timeout=30, what="a run sent before the outage")
        proxy.down()
        kept = OutboxMessage.objects.filter(task_name="tests.jobs.record", sent_at=None)
        wait_for(lambda: kept.count() >= 3, timeout=60, what="three runs kept in the outbox")
        beat.stop()
    finally:
        proxy.down()
    assert "kept in the outbox for the relay" in beat.output()
    assert "Message Error" not in beat.output()
    assert outbox_relay() >= 3
    task.refresh_from_db()
    wait_for(lambda: len(runs(events)) == task.total_run_count, what="every recorded run")
    time.sleep(1)
    assert len(runs(events)) == task.total_run_count  # each once
