"""Alerts from the template itself: a periodic check (``tasks.maintenance.check_alerts``, every
minute) of the job records, the dead-letter queues and the outbox, which tells the admins
(email), Sentry and a webhook when something crosses a threshold, and once more when it recovers.

Each thing watched is a *condition* with a key (README, "What to watch"):

- ``failure_rate`` and ``failure_rate:<task>``: of the jobs enqueued in the last ALERTS_WINDOW
  that have ended (succeeded, failed or dead; a cancelled job is neither), the share that failed
  or died is above ALERTS_FAILURE_RATE percent. A task with fewer than ALERTS_MIN_JOBS such
  jobs is not judged: two failures out of three runs say little.
- ``dead_letters:<queue>``: ``<queue>.dead`` grew by more than ALERTS_DEAD_LETTER_GROWTH messages
  between two checks. It fires until a whole ALERTS_WINDOW goes by without growth: a steady
  trickle of deaths is one alert, not one a minute.
- ``queue_age:<queue>``: the oldest job still queued for it has waited more than
  ALERTS_QUEUE_AGE (from its job record; waiting starts at its eta, if it was given one).
- ``outbox``: the oldest outbox row not yet published has waited more than ALERTS_OUTBOX_AGE.

A condition notifies when it starts firing and once when it resolves, never in between. Its
state lives in ``AlertState`` rows, read and written by each check in one transaction with the
rows locked, so two checks at once (a second beat, a manual ``manage.py alerts --check``) cannot
both announce the same change, and a worker's restart forgets nothing.

The parts, each usable alone: ``alerts_measure`` reads the database and RabbitMQ;
``conditions_evaluate`` turns measurements, thresholds and the previous states into conditions
(no I/O); ``alerts_check`` stores the changes and hands them to ``alerts_notify``, which tries
every channel whatever another one did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sentry_sdk
from amqp.exceptions import NotFound
from django.conf import settings
from django.core.mail import mail_admins
from django.db import transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from app.history import Outcomes, outcomes_by_task
from app.models import AlertState, JobRecord, JobStatus, OutboxMessage
from app.outbox import BROKER_DOWN
from app.urlguard import guarded_client
from config import queues
from config.celery import app as celery_app

logger = logging.getLogger(__name__)

#: How many of a queue's oldest queued jobs are looked at for an eta that explains their age.
ETA_LOOKAHEAD = 100
#: How many of those reads at most, per queue and scrape.
MAX_LOOKAHEADS = 20
#: Seconds to wait for RabbitMQ when reading the queues: a check or a scrape must not hang.
BROKER_TIMEOUT = 3.0
#: A condition not judged for this long and not firing is forgotten (a task that stopped
#: running, or runs too rarely to judge), so that ``manage.py alerts`` lists what matters.
STALE_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class Thresholds:
    window: timedelta
    failure_percent: float
    min_jobs: int
    dead_letter_growth: int
    queue_age: timedelta
    outbox_age: timedelta

    @classmethod
    def from_settings(cls) -> Thresholds:
        return cls(
            window=timedelta(seconds=settings.ALERTS_WINDOW),
            failure_percent=settings.ALERTS_FAILURE_RATE,
            min_jobs=settings.ALERTS_MIN_JOBS,
            dead_letter_growth=settings.ALERTS_DEAD_LETTER_GROWTH,
            queue_age=timedelta(seconds=settings.ALERTS_QUEUE_AGE),
            outbox_age=timedelta(seconds=settings.ALERTS_OUTBOX_AGE),
        )


@dataclass(frozen=True)
class Measurements:
    at: datetime
    #: Per task, the jobs enqueued in the window that have ended.
    outcomes: dict[str, Outcomes]
    #: Per queue, the messages in ``<queue>.dead``; None when RabbitMQ could not be read.
    dead_depths: dict[str, int | None]
    #: Per queue with queued jobs, since when its oldest one waits.
    oldest_waiting: dict[str, datetime]
    outbox_pending: int = 0
    outbox_oldest: datetime | None = None
    #: Rows set aside as unpublishable (app/outbox.py): never sent, reported but not alerted on.
    outbox_set_aside: int = 0


@dataclass(frozen=True)
class Condition:
    key: str
    firing: bool
    #: What was measured, in one line, true whether it fires or not.
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    """A condition that started firing or resolved at this check: what gets notified."""

    key: str
    state: Literal["firing", "resolved"]
    since: datetime  # when it started firing
    at: datetime
    summary: str
    figures: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(since=self.since.isoformat(), at=self.at.isoformat())
        return data


# --- Measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueState:
    depth: int
    consumers: int
    #: When the oldest message of a dead-letter queue was dead-lettered (None for a work queue,
    #: or an empty queue).
    head_since: datetime | None = None


def queues_read() -> dict[str, QueueState]:
    """Every queue of config/queues.py and its dead-letter queue, as RabbitMQ has them now:
    over AMQP, with the workers' own URL and credentials (RabbitMQ's management plugin is not
    enabled on every broker, nor reachable from the workers).

    A queue missing from RabbitMQ (no worker or producer has declared it yet on a fresh broker)
    is left out. Raises one of ``app.outbox.BROKER_DOWN`` when RabbitMQ cannot be reached."""
    names = [*queues.QUEUES, *(name + queues.DEAD_SUFFIX for name in queues.QUEUES)]
    states: dict[str, QueueState] = {}
    with celery_app.connection_for_read(connect_timeout=BROKER_TIMEOUT) as conn:
        conn.ensure_connection(max_retries=0)  # one try: a scrape must not wait
        channel: Any = conn.channel()
        for name in names:
            try:
                declared = channel.queue_declare(name, passive=True)
            except NotFound:  # RabbitMQ closed the channel: open another for the next
                channel = conn.channel()
                continue
            head_since = None
            if name.endswith(queues.DEAD_SUFFIX) and declared.message_count:
                head_since = _dead_since(channel, name)
            states[name] = QueueState(
                depth=int(declared.message_count),
                consumers=int(declared.consumer_count),
                head_since=head_since,
            )
    return states


def _dead_since(channel: Any, name: str) -> datetime | None:
    """When the head message of the dead-letter queue ``name`` was dead-lettered (the first
    time, by its ``x-death`` header). The message is taken unacknowledged and given back at
    once, to where it was; nothing else consumes these queues."""
    raw = channel.basic_get(name, no_ack=False)
    if raw is None:  # listed by manage.py jobs dead at this moment, or just purged
        return None
    try:
        deaths = (raw.headers or {}).get("x-death") or [{}]
        died = deaths[0].get("time")
    finally:
        channel.basic_reject(raw.delivery_tag, requeue=True)
    # py-amqp decodes AMQP timestamps as naive datetimes in UTC.
    return died.replace(tzinfo=UTC) if isinstance(died, datetime) else None


def dead_letter_depths() -> dict[str, int | None]:
    """Messages waiting in each ``<queue>.dead`` (``queues_read``): a dead-letter queue's are all
    ready for delivery, except while ``manage.py jobs dead`` holds them to list them. A queue that
    does not exist yet holds nothing. None for every queue when RabbitMQ cannot be reached."""
    try:
        states = queues_read()
    except BROKER_DOWN as exc:
        logger.warning("alerts: cannot read the dead-letter queues: %s", exc)
        return dict.fromkeys(queues.QUEUES)
    dead = {name: states.get(name + queues.DEAD_SUFFIX) for name in queues.QUEUES}
    return {name: state.depth if state else 0 for name, state in dead.items()}


def oldest_waiting() -> dict[str, datetime]:
    """Per queue, since when its oldest queued job waits: its record's enqueue time, or its eta
    when it was enqueued for later (job_enqueue(eta=...), kept on its outbox row).

    Only tracked jobs have records: a plain ``delay()`` is invisible here (RabbitMQ's queue depth
    shows it, not its age); so is a tracked task's job sent with ``delay()`` until it starts.
    One index lookup per queue of config/queues.py (``jobrecord_queued``), whatever the backlog:
    a GROUP BY over the queued records read every one of them at each scrape. The oldest records
    are read ``ETA_LOOKAHEAD`` at a time until one is due: the first hundred could all be
    reminders for tomorrow, in front of a job stuck for an hour.
    """
    waiting: dict[str, datetime] = {}
    for queue in queues.QUEUES:
        queued = JobRecord.objects.filter(status=JobStatus.QUEUED, queue=queue)
        starts: list[datetime] = []
        after: tuple[datetime, Any] | None = None
        for _ in range(MAX_LOOKAHEADS):
            page = queued.order_by("enqueued_at", "id")
            if after is not None:
                page = page.filter(
                    Q(enqueued_at__gt=after[0]) | Q(enqueued_at=after[0], id__gt=after[1])
                )
            candidates = list(page.values_list("id", "enqueued_at")[:ETA_LOOKAHEAD])
            etas = dict(
                OutboxMessage.objects.filter(
                    task_id__in=[job_id for job_id, _ in candidates]
                ).values_list("task_id", "options__eta")
            )
            plain = False  # one that waits since it was enqueued: no later one waited longer
            for job_id, enqueued_at in candidates:
                eta = parse_datetime(etas[job_id]) if etas.get(job_id) else None
                plain = plain or eta is None or eta <= enqueued_at
                starts.append(max(enqueued_at, eta) if eta else enqueued_at)
            if plain or len(candidates) < ETA_LOOKAHEAD:
                break
            after = (candidates[-1][1], candidates[-1][0])
        if starts:
            waiting[queue] = min(starts)
    return waiting


def alerts_measure(*, now: datetime, window: timedelta) -> Measurements:
    pending = OutboxMessage.objects.filter(sent_at__isnull=True)
    backlog = pending.filter(error="").aggregate(n=Count("id"), oldest=Min("created_at"))
    return Measurements(
        at=now,
        outcomes=outcomes_by_task(since=now - window),
        dead_depths=dead_letter_depths(),
        oldest_waiting=oldest_waiting(),
        outbox_pending=backlog["n"],
        outbox_oldest=backlog["oldest"],
        outbox_set_aside=pending.exclude(error="").count(),
    )


# --- Evaluating ----------------------------------------------------------------------------------


def duration_text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _failure_condition(key: str, label: str, outcomes: Outcomes, t: Thresholds) -> Condition:
    percent = outcomes.percent_failed
    summary = (
        f"{label}: {outcomes.failed} of {outcomes.ended} jobs failed or died ({percent:.3g}%) "
        f"among those enqueued in the last {duration_text(t.window)} "
        f"(alert above {t.failure_percent:g}%)"
    )
    figures = {"ended": outcomes.ended, "failed": outcomes.failed, "percent": round(percent, 2)}
    return Condition(key, percent > t.failure_percent, summary, figures)


def _dead_letter_condition(
    queue: str, depth: int, previous: Mapping[str, Any], now: datetime, t: Thresholds
) -> Condition:
    before = previous.get("depth")
    grown_by = depth - before if before is not None else 0
    grew_at = previous.get("grew_at")
    if grown_by > t.dead_letter_growth:
        grew_at = now.isoformat()
    last_growth = parse_datetime(grew_at) if grew_at else None
    firing = last_growth is not None and now - last_growth < t.window
    summary = f"{queue}{queues.DEAD_SUFFIX} holds {plural(depth, 'message')}"
    if grown_by > 0:
        summary += f", {grown_by} more than at the previous check"
    elif firing and last_growth is not None:
        summary += f"; it last grew {duration_text(now - last_growth)} ago"
    else:
        summary += f", none new for {duration_text(t.window)} or more"
    summary += " (manage.py jobs dead lists them)" if depth else ""
    figures = {"depth": depth, "grown_by": grown_by, "grew_at": grew_at}
    return Condition(f"dead_letters:{queue}", firing, summary, figures)


def conditions_evaluate(
    *, measured: Measurements, thresholds: Thresholds, previous: Mapping[str, AlertState]
) -> list[Condition]:
    """Every condition that can be judged from ``measured``; ``previous`` are the states the
    last check left (a dead-letter queue's depth then, and whether each condition fired).

    A condition that cannot be judged this time is left out, so its state stays as it was: a
    dead-letter queue while RabbitMQ cannot be read. A task that fired but now has too few
    ended jobs to judge resolves: its failures have left the window.
    """
    t, now = thresholds, measured.at
    conditions: list[Condition] = []
    overall = sum(measured.outcomes.values(), Outcomes())
    if overall.ended >= t.min_jobs:
        conditions.append(_failure_condition("failure_rate", "All tasks", overall, t))
    for task_name, outcomes in sorted(measured.outcomes.items()):
        if outcomes.ended >= t.min_jobs:
            key = f"failure_rate:{task_name}"
            conditions.append(_failure_condition(key, task_name, outcomes, t))
    judged = {c.key for c in conditions}
    for key, state in previous.items():
        if key.startswith("failure_rate") and state.firing and key not in judged:
            label = key.partition(":")[2] or "All tasks"
            summary = (
                f"{label}: fewer than {t.min_jobs} jobs enqueued in the last "
                f"{duration_text(t.window)} have ended, too few to judge"
            )
            conditions.append(Condition(key, False, summary, {"ended": "too few"}))

    for queue, depth in measured.dead_depths.items():
        if depth is not None:
            key = f"dead_letters:{queue}"
            figures = previous[key].figures if key in previous else {}
            conditions.append(_dead_letter_condition(queue, depth, figures, now, t))

    for queue in queues.QUEUES:
        since = measured.oldest_waiting.get(queue)
        waited = max(now - since, timedelta(0)) if since else timedelta(0)
        if since:
            summary = f"the oldest job queued for {queue} has waited {duration_text(waited)}"
        else:
            summary = f"no job waits in {queue}"
        summary += f" (alert above {duration_text(t.queue_age)})"
        figures = {
            "oldest": since.isoformat() if since else None,
            "waited": int(waited.total_seconds()),
        }
        conditions.append(Condition(f"queue_age:{queue}", waited > t.queue_age, summary, figures))

    oldest = measured.outbox_oldest
    waited = max(now - oldest, timedelta(0)) if oldest else timedelta(0)
    summary = (
        f"{plural(measured.outbox_pending, 'outbox row')} waiting to be published, the oldest for "
        f"{duration_text(waited)} (alert above {duration_text(t.outbox_age)}): is the relay "
        "running and RabbitMQ reachable?"
        if oldest
        else "the outbox is empty"
    )
    if measured.outbox_set_aside:
        summary += (
            f"; {plural(measured.outbox_set_aside, 'row')} set aside as unpublishable (admin)"
        )
    figures = {
        "pending": measured.outbox_pending,
        "oldest": oldest.isoformat() if oldest else None,
        "set_aside": measured.outbox_set_aside,
    }
    conditions.append(Condition("outbox", waited > t.outbox_age, summary, figures))
    return conditions


# --- Checking ------------------------------------------------------------------------------------


def _states_locked(keys: list[str] | None = None) -> dict[str, AlertState]:
    states = AlertState.objects.select_for_update().order_by("key")
    if keys is not None:
        states = states.filter(key__in=keys)
    return {state.key: state for state in states}


def alerts_check(
    *,
    now: datetime | None = None,
    thresholds: Thresholds | None = None,
    notify: Callable[[list[Transition]], None] | None = None,
) -> list[Transition]:
    """Measure, compare with the stored states, store the changes, notify them. Returns them.

    Notifying happens before the transaction commits: if the commit fails, the next check
    notifies again (twice rather than never). Every channel is tried (alerts_notify never raises).
    """
    now = now or timezone.now()
    thresholds = thresholds or Thresholds.from_settings()
    notify = notify or alerts_notify
    measured = alerts_measure(now=now, window=thresholds.window)  # no lock held during I/O
    with transaction.atomic():
        states = _states_locked()
        conditions = conditions_evaluate(measured=measured, thresholds=thresholds, previous=states)
        new = [c.key for c in conditions if c.key not in states]
        if new:
            # A check running alongside may be inserting the same keys: the insert waits for it,
            # and the rows then read are its result, which the conditions are judged against.
            AlertState.objects.bulk_create(
                [AlertState(key=key, checked_at=now) for key in new], ignore_conflicts=True
            )
            states.update(_states_locked(new))
            conditions = conditions_evaluate(
                measured=measured, thresholds=thresholds, previous=states
            )
        transitions = []
        for condition in conditions:
            state = states[condition.key]
            if condition.firing and not state.firing:
                state.firing, state.since = True, now
                transitions.append(_transition(condition, "firing", now, now))
            elif state.firing and not condition.firing:
                state.firing, state.resolved_at = False, now
                transitions.append(_transition(condition, "resolved", state.since or now, now))
            state.summary = condition.summary[:500]
            state.figures = condition.figures
            state.checked_at = now
        AlertState.objects.bulk_update(
            [states[c.key] for c in conditions],
            ["firing", "since", "resolved_at", "summary", "figures", "checked_at"],
        )
        AlertState.objects.filter(firing=False, checked_at__lt=now - STALE_AFTER).delete()
        for transition in transitions:
            log = logger.warning if transition.state == "firing" else logger.info
            log("alert %s %s: %s", transition.key, transition.state, transition.summary)
        if transitions:
            notify(transitions)
    return transitions


def _transition(
    condition: Condition, state: Literal["firing", "resolved"], since: datetime, at: datetime
) -> Transition:
    return Transition(condition.key, state, since, at, condition.summary, condition.figures)


# --- Notifying -----------------------------------------------------------------------------------


def alerts_text(transitions: list[Transition]) -> tuple[str, str]:
    """A subject line and a plain-text body for ``transitions``."""
    firing = [t for t in transitions if t.state == "firing"]
    resolved = [t for t in transitions if t.state == "resolved"]
    first = (firing or resolved)[0]
    head = "Alert" if firing else "Resolved"
    more = len(transitions) - 1
    subject = f"{head}: {first.summary}"[:150] + (f" (and {more} more)" if more else "")
    lines = []
    for title, group in (("Firing", firing), ("Resolved", resolved)):
        if not group:
            continue
        lines.append(f"{title}:")
        for t in group:
            since = f"since {t.since:%Y-%m-%d %H:%M} UTC"
            if t.state == "resolved":
                since = f"from {t.since:%Y-%m-%d %H:%M} to {t.at:%H:%M} UTC"
            lines += [f"- {t.key} ({since})", f"  {t.summary}"]
        lines.append("")
    lines.append("What each alert means and what to do: README, 'What to watch'.")
    lines.append("Firing now: manage.py alerts.")
    return subject.replace("\n", " "), "\n".join(lines)


def _email(subject: str, body: str, transitions: list[Transition]) -> None:
    if settings.ADMINS:  # mail_admins sends nothing without, silently
        mail_admins(subject, body, fail_silently=False)


def _sentry(subject: str, body: str, transitions: list[Transition]) -> None:
    if not sentry_sdk.is_initialized():
        return
    for t in transitions:
        with sentry_sdk.new_scope() as scope:
            # One Sentry issue per condition and state, however its figures change.
            scope.fingerprint = ["template-alert", t.key, t.state]
            scope.set_tag("alert", t.key)
            scope.set_tag("alert_state", t.state)
            scope.set_context("alert", t.as_json())
            sentry_sdk.capture_message(
                f"{t.state}: {t.summary}", level="warning" if t.state == "firing" else "info"
            )


def _webhook(subject: str, body: str, transitions: list[Transition]) -> None:
    url = settings.ALERTS_WEBHOOK_URL
    if not url:
        return
    # "text" is what Slack-style incoming webhooks display; "alerts" is for programs.
    payload = {"text": f"{subject}\n\n{body}", "alerts": [t.as_json() for t in transitions]}
    with guarded_client(timeout=settings.ALERTS_WEBHOOK_TIMEOUT) as client:
        client.post(url, json=payload).raise_for_status()


#: Every way alerts go out, tried in this order, each whatever the others did.
CHANNELS: dict[str, Callable[[str, str, list[Transition]], None]] = {
    "email": _email,
    "sentry": _sentry,
    "webhook": _webhook,
}


def alerts_notify(transitions: list[Transition]) -> None:
    """Send ``transitions`` through every channel. A channel that fails (an SMTP server down, a
    webhook answering 500) is logged with its error, and the others still go: an alert that
    reaches one place beats one that reaches none. Nothing is retried; the state is stored as
    notified, and the log (and Sentry, when on) says which channel missed it."""
    subject, body = alerts_text(transitions)
    for name, channel in CHANNELS.items():
        try:
            channel(subject, body, transitions)
        except Exception:  # any failure of one channel: logged, the others still tried
            logger.exception("alerts: could not notify through %s", name)
