"""Dead-letter queues: list, replay and purge what RabbitMQ moved to ``<queue>.dead``.

The messages are the source of truth for what is dead; job records add the error and traceback
for tracked jobs. Listing peeks (messages are taken unacknowledged and put back when the channel
closes); replay and purge acknowledge only the messages they handled.

A replayed tracked job gets a new id and a new record that links to the original
(``replay_of``); an untracked message is published again as it was, to the queue it died in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from kombu.message import Message
from kombu.serialization import prepare_accept_content

from app.context import correlation_id_set
from app.enqueue import job_enqueue
from app.models import JobRecord, JobStatus
from app.protocol import message_problem
from config import queues
from config.celery import app as celery_app

logger = logging.getLogger(__name__)

#: How many messages one listing or scan reads per queue at most.
SCAN_LIMIT = 10_000


class DeadLetterError(ValueError):
    """A replay or purge that cannot be done as asked; nothing was changed."""


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    job_id: str
    task_name: str
    reason: str
    died_at: datetime | None
    error: str
    message: Message  # still unacknowledged

    def ack(self) -> None:
        """Take the message off its dead-letter queue for good."""
        self.message.channel.basic_ack(self.message.delivery_tag)

    @classmethod
    def from_message(cls, queue: str, message: Message, errors: dict[str, str]) -> DeadLetter:
        """``errors`` are the records' errors by job id; a message without a record that the
        workers refused as malformed (app/protocol.py) says what is wrong with it instead."""
        headers = message.headers
        deaths = headers.get("x-death") or [{}]
        job_id = str(headers.get("id", ""))
        error = errors.get(job_id) or message_problem(message) or ""
        return cls(
            queue=queue,
            job_id=job_id,
            task_name=str(headers.get("task", "?")),
            reason=str(deaths[0].get("reason", "?")),
            died_at=deaths[0].get("time"),
            error=error,
            message=message,
        )


def _queue_names(queue: str | None) -> list[str]:
    if queue is None:
        return list(queues.QUEUES)
    if queue not in queues.QUEUES:
        raise DeadLetterError(f"unknown queue {queue!r}; the queues are {', '.join(queues.QUEUES)}")
    return [queue]


def job_id_parse(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise DeadLetterError(f"{value!r} is not a job id (a UUID)") from None


@contextmanager
def dead_letters_open(queue: str | None = None) -> Iterator[list[DeadLetter]]:
    """Take the dead messages unacknowledged; whatever is not acked returns to its queue."""
    with celery_app.connection_for_write() as conn:
        for dead in queues.DEAD_QUEUES:  # a fresh vhost may not have them yet
            dead(conn.default_channel).declare()
        channel: Any = conn.channel()
        accept = prepare_accept_content(celery_app.conf.accept_content)
        letters: list[DeadLetter] = []
        for name in _queue_names(queue):
            found = []
            for _ in range(SCAN_LIMIT):
                raw = channel.basic_get(name + queues.DEAD_SUFFIX, no_ack=False)
                if raw is None:
                    break
                message = channel.message_to_python(raw)
                message.accept = accept  # never unpickle what someone put on a queue
                found.append(message)
            ids = [str(m.headers.get("id", "")) for m in found]
            known = JobRecord.objects.filter(id__in=[i for i in ids if _is_uuid(i)])
            errors = {str(job_id): error for job_id, error in known.values_list("id", "error")}
            letters += [DeadLetter.from_message(name, m, errors) for m in found]
        try:
            yield letters
        finally:
            channel.close()  # unacknowledged messages go back to their dead-letter queue


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def dead_letters_list(queue: str | None = None) -> list[DeadLetter]:
    with dead_letters_open(queue) as letters:
        return letters


def _republish(letter: DeadLetter) -> None:
    """Publish an untracked dead message again, as it was, to the queue it died in."""
    message = letter.message
    # Without x-death, and with its retries counted from zero again: a job that died of used-up
    # retries gets its retries back. Without "compression" too: kombu decompressed the body.
    dropped = ("retries", "compression")
    headers = {
        k: v for k, v in message.headers.items() if not k.startswith("x-") and k not in dropped
    }
    with celery_app.connection_for_write() as publish_conn:  # confirm_publish: waits for the ack
        publish_conn.Producer().publish(
            message.body,
            exchange=queues.TASK_EXCHANGE.name,
            routing_key=letter.queue,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=2,
        )


def dead_letters_replay(
    *, job_ids: list[str] | None = None, queue: str | None = None, task_name: str | None = None
) -> list[tuple[str, str]]:
    """Replay dead jobs: the given ids, or all in ``queue`` / of ``task_name`` (or all).

    Returns (old id, new id) pairs. Raises DeadLetterError, changing nothing, for an id that is
    malformed, unknown, or not dead.
    """
    wanted = [job_id_parse(i) for i in job_ids] if job_ids else None
    if wanted:
        for job_id in wanted:
            record = JobRecord.objects.filter(id=job_id).first()
            if record is not None and record.status != JobStatus.DEAD:
                raise DeadLetterError(f"job {job_id} is {record.status}, not dead: not replayed")
            replay = JobRecord.objects.filter(replay_of_id=uuid.UUID(job_id)).first()
            if replay is not None:
                raise DeadLetterError(f"job {job_id} was replayed already, as {replay.id}")
    replayed: list[tuple[str, str]] = []
    with dead_letters_open(queue) as letters:
        chosen = [
            letter
            for letter in letters
            if (wanted is None or letter.job_id in wanted)
            and (task_name is None or letter.task_name == task_name)
        ]
        found = {letter.job_id for letter in chosen}
        missing = [i for i in wanted or [] if i not in found]
        # A dead record whose message was purged can still be replayed from its payload.
        records = {str(r.id): r for r in JobRecord.objects.filter(id__in=[*found, *missing])}
        for job_id in missing:
            if job_id not in records:
                raise DeadLetterError(f"no dead job {job_id} in any dead-letter queue")
        for letter in chosen:
            record = records.get(letter.job_id)
            if record is not None:
                replayed.append((letter.job_id, _replay_record(record)))
            else:
                _republish(letter)
                replayed.append((letter.job_id, letter.job_id))
            letter.ack()
        for job_id in missing:
            replayed.append((job_id, _replay_record(records[job_id])))
    return replayed


def _replay_record(record: JobRecord) -> str:
    """A new job with the same task and arguments, linked to the dead one; only ever one.

    The dead record is locked while its replay is created, so two operators replaying at once
    (or a replay --all after a replay by id) get the one replay, not a second run.

    The replay carries the dead job's correlation id, not the operator's: it does the work the
    original request asked for, so a search by that id finds the request, the job that died and
    its replay (an untracked message is republished with its headers, the id among them).
    """
    with transaction.atomic(), correlation_id_set(record.correlation_id):
        JobRecord.objects.select_for_update().filter(id=record.id).first()
        earlier = JobRecord.objects.filter(replay_of=record).first()
        if earlier is not None:
            return str(earlier.id)
        new_id = job_enqueue(
            record.task_name,
            args=record.payload.get("args", []),
            kwargs=record.payload.get("kwargs", {}),
            owner=record.owner,
        )
        JobRecord.objects.filter(id=new_id).update(replay_of=record)
        logger.info(
            "dead job %s replayed as %s", record.id, new_id, extra={"replay_of": str(record.id)}
        )
    return new_id


def dead_letters_purge(*, queue: str | None = None, confirm: Callable[[int], bool]) -> int:
    """Drop every dead message (of ``queue``) once ``confirm(count)`` says yes. Records stay."""
    with dead_letters_open(queue) as letters:
        if not letters or not confirm(len(letters)):
            return 0
        for letter in letters:
            letter.ack()
        return len(letters)
