"""Beat's scheduler: one active beat per database, crontabs that follow the wall clock.

``bin/beat`` and CELERY_BEAT_SCHEDULER run :class:`BeatScheduler`, django-celery-beat's
DatabaseScheduler with three changes:

- **One beat sends.** Each beat must hold a lock in the database before it sends anything; a
  second beat, started by mistake or by a scaled deployment, stands by and polls for the lock
  every :data:`STANDBY_POLL` seconds. On PostgreSQL the lock is an advisory lock held by a
  session of its own (:class:`AdvisoryLock`); PostgreSQL drops it when that session ends, so the
  standby takes over as soon as the active beat's process dies. Elsewhere (SQLite) it is a lease
  row renewed on every tick (:class:`LeaseLock`); the standby takes over once the lease expires.
- **A run is recorded before it is sent**, on the lock's own session and after checking that the
  lock is still held (:meth:`BeatLock.record_run`). A beat that takes over reads the schedule
  from the database, so it knows every run the old one sent: it neither sends a run again nor
  skips one that fell due during the handover. django-celery-beat writes ``last_run_at`` only
  every few minutes, which made a restarted or second beat send runs again.
- **Crontabs follow the wall clock across daylight-saving changes** (:class:`WallClockCrontab`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Protocol

import psycopg
from celery import schedules
from celery.beat import ScheduleEntry, SchedulingError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Q
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry
from django_celery_beat.tzcrontab import TzAwareCrontab

from app.models import BeatLease, OutboxMessage
from app.outbox import BROKER_DOWN

logger = logging.getLogger(__name__)

#: How often a standby beat tries to take the lock, in seconds.
STANDBY_POLL = 1.0
#: How long a lease (SQLite) stays valid without renewal; the active beat renews it every tick,
#: at least three times per lease. A standby takes over at most this long after the active beat
#: stopped renewing, plus one poll.
LEASE = timedelta(seconds=10)
#: The advisory lock's key: one active beat per database.
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"app.beat").digest()[:8], "big", signed=True)
#: TCP keepalives on the lock's session, both ends (seconds idle, seconds between probes, probes):
#: PostgreSQL ends the session of a beat whose host vanished (power cut, network partition) after
#: DEAD_PEER_AFTER seconds, instead of the operating system's default of over two hours, and the
#: beat's own waits on that session fail as soon.
KEEPALIVE = {"idle": 5, "interval": 2, "count": 3}
DEAD_PEER_AFTER = KEEPALIVE["idle"] + KEEPALIVE["interval"] * KEEPALIVE["count"]
#: Errors that mean "the database did not answer": the lock's state is then unknown.
DATABASE_ERRORS = (DatabaseError, psycopg.Error)


def clock_now() -> datetime:
    """Beat's clock: due checks, recorded runs and leases read it (tests move it)."""
    return datetime.now(UTC)


class LockLost(Exception):
    """The lock is no longer held: another beat may be active."""


# --- Recording a run ------------------------------------------------------------------------------


def run_record_sql(ops: BaseDatabaseOperations) -> str:
    """One statement records a run, and only for a schedule that is still enabled: a schedule
    switched off or deleted in the admin since the last reload is not sent. Written as SQL, not
    with the ORM, because on PostgreSQL it runs on the lock's own session."""
    table = ops.quote_name(PeriodicTask._meta.db_table)
    count = ops.quote_name("total_run_count")
    return (
        f"UPDATE {table} SET {ops.quote_name('last_run_at')} = %s, {count} = {count} + 1"  # noqa: S608 (names, not input)
        f" WHERE {ops.quote_name('id')} = %s AND {ops.quote_name('enabled')}"
    )


def run_record(cursor: Any, ops: BaseDatabaseOperations, *, task_id: int, at: datetime) -> bool:
    """Record a run of PeriodicTask ``task_id`` at ``at``; False when it is disabled or gone."""
    cursor.execute(run_record_sql(ops), [ops.adapt_datetimefield_value(at), task_id])
    return bool(cursor.rowcount == 1)


# --- The locks ------------------------------------------------------------------------------------


class BeatLock(Protocol):
    #: The longest an active beat may go without confirming its lock, in seconds.
    renew_every: float

    def acquire(self) -> bool:
        """Take the lock if it is free (or already ours): True when held. Raises one of
        DATABASE_ERRORS when the database cannot be reached."""

    def confirm(self) -> bool:
        """Whether the lock is still held (renewing it where that is needed)."""

    def record_run(self, *, task_id: int, at: datetime) -> bool:
        """Record a run in the same transaction that checks the lock is held: raises LockLost
        when it is not, and nothing is recorded. False when the schedule is disabled or gone."""

    def release(self) -> None:
        """Let a standby take over at once (a clean stop)."""


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock, on a connection of its own.

    Not Django's connection: the scheduler closes that one between ticks (close_old_connections,
    CONN_MAX_AGE), and the lock would go with it. The lock lives exactly as long as this session:
    if the session drops (beat killed, network cut, server restart), PostgreSQL releases it. Runs
    are therefore recorded on this session, in a transaction: a commit that succeeds proves the
    session, and so the lock, was still there, and a beat that takes over afterwards reads that
    commit. A commit that fails means the lock may be gone, and nothing is sent.
    """

    renew_every = 5.0

    def __init__(self) -> None:
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        params = connections[DEFAULT_DB_ALIAS].get_connection_params()
        conn = psycopg.connect(
            **params,
            autocommit=True,
            keepalives=1,
            keepalives_idle=KEEPALIVE["idle"],
            keepalives_interval=KEEPALIVE["interval"],
            keepalives_count=KEEPALIVE["count"],
            tcp_user_timeout=1000 * DEAD_PEER_AFTER,  # ms: unacknowledged writes, likewise
        )
        for name, value in KEEPALIVE.items():  # the server's side (ignored on a Unix socket)
            conn.execute(f"SET tcp_keepalives_{name} = {int(value)}")
        return conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def acquire(self) -> bool:
        try:
            if self._conn is None:
                self._conn = self._connect()
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_KEY]).fetchone()
        except psycopg.Error:
            self._close()
            raise
        return bool(row and row[0])

    def confirm(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self._close()
            return False
        return True

    def record_run(self, *, task_id: int, at: datetime) -> bool:
        if self._conn is None:
            raise LockLost("no lock session")
        ops = connections[DEFAULT_DB_ALIAS].ops
        try:
            with self._conn.transaction(), self._conn.cursor() as cursor:
                return run_record(cursor, ops, task_id=task_id, at=at)
        except psycopg.Error as exc:
            self._close()
            raise LockLost(f"the lock's session failed: {exc}") from exc

    def release(self) -> None:
        self._close()


class LeaseLock:
    """A lease row (app.BeatLease): a holder and an expiry, renewed by the active beat.

    For databases without advisory locks (SQLite). The active beat renews the lease on every tick
    and in the transaction that records each run; a renewal finds its row only while it is still
    the holder. A standby takes the row once the lease has expired, which changes the holder, so
    the old beat's next renewal, and so its next send, fails.
    """

    NAME = "beat"

    def __init__(self, *, holder: str | None = None, lease: timedelta = LEASE) -> None:
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.renew_every = lease.total_seconds() / 3

    def acquire(self) -> bool:
        now = clock_now()
        BeatLease.objects.get_or_create(name=self.NAME, defaults={"expires_at": now})
        # Released ("") is free whatever the expiry says: the releasing host's clock may be ahead.
        free = Q(holder__in=[self.holder, ""]) | Q(expires_at__lte=now)
        taken = BeatLease.objects.filter(free, name=self.NAME)
        return bool(taken.update(holder=self.holder, expires_at=now + self.lease))

    def confirm(self) -> bool:
        # Expired but still ours is still held: no other beat took the row, so none sent.
        ours = BeatLease.objects.filter(name=self.NAME, holder=self.holder)
        return bool(ours.update(expires_at=clock_now() + self.lease))

    def record_run(self, *, task_id: int, at: datetime) -> bool:
        with transaction.atomic():
            if not self.confirm():
                raise LockLost("another beat holds the lease")
            db = connections[DEFAULT_DB_ALIAS]
            with db.cursor() as cursor:
                return run_record(cursor, db.ops, task_id=task_id, at=at)

    def release(self) -> None:
        ours = BeatLease.objects.filter(name=self.NAME, holder=self.holder)
        ours.update(holder="", expires_at=clock_now())


def beat_lock() -> BeatLock:
    """The lock for the configured database; nothing is opened until it is first taken."""
    if connections[DEFAULT_DB_ALIAS].vendor == "postgresql":
        return AdvisoryLock()
    return LeaseLock()


# --- Crontabs across daylight-saving changes ------------------------------------------------------

#: The largest daylight-saving shift (Antarctica/Troll's): a wall time further than this from a
#: run cannot map to an instant on the other side of it.
_SHIFT = timedelta(hours=2)
#: How far ahead a crontab is searched for its next run: "29 February, a Monday" recurs in 28
#: years at most.
_HORIZON = 366 * 28


class WallClockCrontab(TzAwareCrontab):  # type: ignore[misc]
    """A crontab read on the wall clock of its time zone, as cron(8) reads it.

    Celery computes the next run by adding to the last run's wall time, which goes wrong where
    the wall clock jumps: on the day the clocks go back, a job at minute 0 of every hour skipped
    the repeated hour, so the day had 24 runs for 25 real hours; on the day they go forward, a
    daily job set inside the skipped hour ran an hour after the jump, not at it.

    Here the next run is the earliest instant after the last run whose wall time matches:
    - a wall time that happens twice (clocks go back) runs twice if the job runs every hour
      (each is a real hour), else once, the first time;
    - a wall time that does not exist (clocks go forward) is skipped if the job runs every hour
      (that hour did not happen), else runs at the jump: a daily 02:30 runs at 03:00 that day.
    """

    def next_run(self, after: datetime) -> datetime:
        """The first run strictly after ``after`` (an aware datetime), in UTC."""
        after = after.astimezone(UTC)
        start = after.astimezone(self.tz).replace(tzinfo=None) - _SHIFT
        best: datetime | None = None
        limit = datetime.max
        for wall in self._wall_times(start):
            if wall > limit:
                break  # later wall times can only be later instants
            for instant in self._instants(wall):
                if instant > after and (best is None or instant < best):
                    if best is None:
                        limit = wall + 2 * _SHIFT
                    best = instant
        if best is None:
            raise ValueError(f"{self!r} matches no time in the next {_HORIZON} days")
        return best

    def _wall_times(self, start: datetime) -> Iterator[datetime]:
        """Every wall time that matches, from ``start`` on, in order."""
        hours, minutes = sorted(self.hour), sorted(self.minute)
        day: date = start.date()
        for _ in range(_HORIZON):
            if (
                day.month in self.month_of_year
                and day.day in self.day_of_month
                and day.isoweekday() % 7 in self.day_of_week  # Sunday is 0
            ):
                for hour in hours:
                    for minute in minutes:
                        wall = datetime.combine(day, time(hour, minute))
                        if wall >= start:
                            yield wall
            day += timedelta(days=1)

    def _instants(self, wall: datetime) -> list[datetime]:
        """The instants (UTC) at which ``wall`` is a run."""
        tz = self.tz
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        every_hour = len(self.hour) == 24
        if first < second:  # happens twice
            return [first, second] if every_hour else [first]
        # Does not happen: fold=1 reads it with the offset after the jump (an instant before the
        # jump) and fold=0 with the offset before (after the jump); the jump lies between.
        return [] if every_hour else [_jump(second, first, tz)]

    def remaining_estimate(self, last_run_at: datetime, ffwd: Any = None) -> timedelta:
        return self.next_run(last_run_at) - self.now()

    def is_due(self, last_run_at: datetime) -> schedules.schedstate:
        now = self.now()
        next_run = self.next_run(last_run_at)
        if next_run > now:
            return schedules.schedstate(False, (next_run - now).total_seconds())
        # Celery's beat_cron_starting_deadline: a run missed by more than this is skipped.
        deadline = self.app.conf.beat_cron_starting_deadline
        due = deadline is None or self.next_run(now - timedelta(seconds=deadline)) <= now
        return schedules.schedstate(due, (self.next_run(now) - now).total_seconds())

    def nowfunc(self) -> datetime:
        return clock_now().astimezone(self.tz)


def _jump(before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The instant between ``before`` and ``after`` at which the UTC offset of ``tz`` changes."""
    offset = after.astimezone(tz).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(tz).utcoffset() == offset:
            after = middle
        else:
            before = middle
    return after.replace(microsecond=0)


def wall_clock(schedule: Any) -> Any:
    """``schedule``, a crontab made a WallClockCrontab; any other schedule as it is."""
    if not isinstance(schedule, schedules.crontab) or isinstance(schedule, WallClockCrontab):
        return schedule
    return WallClockCrontab(
        minute=schedule._orig_minute,
        hour=schedule._orig_hour,
        day_of_week=schedule._orig_day_of_week,
        day_of_month=schedule._orig_day_of_month,
        month_of_year=schedule._orig_month_of_year,
        tz=schedule.tz,
        app=schedule.app,
    )


# --- The scheduler --------------------------------------------------------------------------------


class BeatEntry(ModelEntry):  # type: ignore[misc]
    """A PeriodicTask row as beat sees it: wall-clock crontabs, and one clock for the due check
    and the recorded run (django-celery-beat reads the system clock for the latter)."""

    schedule: Any

    def __init__(self, model: PeriodicTask, app: Any = None) -> None:
        super().__init__(model, app=app)
        self.schedule = wall_clock(self.schedule)
        if self.schedule is not None and not isinstance(self.schedule, WallClockCrontab):
            self.schedule.nowfun = self._default_now

    def _default_now(self) -> datetime:
        return clock_now().astimezone(self.app.timezone)


class BeatScheduler(DatabaseScheduler):  # type: ignore[misc]
    """django-celery-beat's DatabaseScheduler that sends only while it holds the beat lock."""

    Entry = BeatEntry

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock = beat_lock()
        self.active = False
        self._standby_said: str | None = None  # said once, until it changes
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Beat's loop calls this and sleeps for what it returns: a standby polls for the lock,
        the active beat confirms it before looking at the schedule."""
        if not self._lock_hold():
            return STANDBY_POLL
        return float(min(super().tick(*args, **kwargs), self.lock.renew_every))

    def _lock_hold(self) -> bool:
        if self.active:
            try:
                if self.lock.confirm():
                    return True
                reason = "not held any more"
            except DATABASE_ERRORS as exc:
                reason = str(exc)
            self._stand_by(reason)
        try:
            taken = self.lock.acquire()
        except DATABASE_ERRORS as exc:
            self._standby_say(logging.WARNING, f"beat: standby, the database did not answer: {exc}")
            return False
        if not taken:
            self._standby_say(logging.INFO, "beat: standby, another beat holds the lock")
            return False
        logger.info("beat: active (lock held)")
        self.active, self._standby_said = True, None
        # What a standby read at its start, or this beat before it lost the lock, is stale: read
        # the schedule, last runs included, again, and rebuild the heap from it.
        self._initial_read = True
        self._heap = None
        return True

    def _standby_say(self, level: int, message: str) -> None:
        if message != self._standby_said:
            logger.log(level, message)
            self._standby_said = message

    def _stand_by(self, reason: str) -> None:
        logger.warning("beat: lost the lock (%s); standing by", reason)
        self.active, self._standby_said = False, None

    def all_as_schedule(self) -> dict[str, BeatEntry]:
        """django-celery-beat's, saying which enabled schedules it leaves out: one whose crontab
        Celery refuses (30 February, saved in the admin's crontab form) was skipped silently."""
        entries: dict[str, BeatEntry] = {}
        for model in self.enabled_models():
            try:
                entries[model.name] = self.Entry(model, app=self.app)
            except ValueError as exc:
                logger.error("periodic task %r never runs: %s", model.name, exc)
        return entries

    def reserve(self, entry: BeatEntry) -> BeatEntry:
        """The next entry, not marked for a later save (apply_entry records each run itself), but
        kept in the schedule: django-celery-beat may rebuild the heap from it on the next tick
        (a schedule edited while a tick read it), and an entry that does not know the run just
        made would send it again."""
        new_entry: BeatEntry = next(entry)
        self._schedule[entry.name] = new_entry
        return new_entry

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        """Record the run, under the lock, then send it (through Celery's apply_entry, which is
        what sentry-sdk's Crons integration wraps). ``reserve`` advanced ``entry.model``."""
        try:
            recorded = self.lock.record_run(task_id=entry.model.pk, at=entry.model.last_run_at)
        except (LockLost, *DATABASE_ERRORS) as exc:
            self._stand_by(f"{exc}; {entry.name} not sent")
            return
        if not recorded:
            logger.info("beat: %s was disabled or deleted; not sent", entry.name)
            return
        super().apply_entry(entry, producer=producer)

    def apply_async(
        self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        """Celery's send; when the broker is down, the run goes to the outbox instead, for the
        relay to publish once the broker is back (its expiry, if it has one, still drops it if
        the next run is due by then). Celery logged the failed send and the run was lost: every
        run due during a broker restart."""
        try:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        except SchedulingError as exc:
            if not isinstance(exc.__context__, BROKER_DOWN):
                raise
            options = {
                key: value.isoformat() if isinstance(value, datetime) else value
                for key, value in entry.options.items()
                if key in ("queue", "priority", "headers", "expires")
            }
            OutboxMessage.objects.create(
                task_id=uuid.uuid4(),
                task_name=entry.task,
                args=list(entry.args or []),
                kwargs=dict(entry.kwargs or {}),
                options=options,
            )
            logger.warning(
                "beat: broker unavailable, %s kept in the outbox for the relay: %s",
                entry.name,
                exc.__context__,
            )
            return None

    def close(self) -> None:
        """Beat stops: save as Celery does, then let a standby take over at once."""
        try:
            super().close()
        finally:
            if self.active:
                self.active = False
                try:
                    self.lock.release()
                except DATABASE_ERRORS as exc:
                    logger.warning("beat: could not release the lock: %s", exc)
