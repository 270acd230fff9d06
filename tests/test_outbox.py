"""An outbox row is set aside only for a fault of its own; a database error while it is
published or marked is an outage, and leaves the row pending for the relay.

The faults are real database errors, on SQLite and PostgreSQL: a write lock held by another
connection, and a trigger that refuses to mark the row sent.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection, transaction

from app.models import OutboxMessage
from app.outbox import outbox_publish_one, outbox_relay
from tests import jobs
from tests.support import Broker, database_url

pytestmark = [pytest.mark.django_db(transaction=True)]


def pending_row() -> OutboxMessage:
    with transaction.atomic():  # as job_enqueue writes it, without its after-commit publish
        return OutboxMessage.objects.create(task_id=uuid.uuid4(), task_name=jobs.record.name)


@contextmanager
def database_locked() -> Iterator[None]:
    """Another connection holds the write lock; this one gives up waiting after 0.1 s."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            cursor.execute("PRAGMA busy_timeout = 100")
        else:
            other = psycopg.connect(database_url())  # type: ignore[assignment]
            other.execute("LOCK TABLE app_outboxmessage IN EXCLUSIVE MODE")
            cursor.execute("SET lock_timeout = '100ms'")
        try:
            yield
        finally:
            other.rollback()
            other.close()
            connection.close()  # the next query reconnects with the configured timeouts


@contextmanager
def marking_sent_fails() -> Iterator[None]:
    """A trigger that refuses to set ``sent_at``, as a serialization failure would."""
    if connection.vendor == "sqlite":
        create = [
            "CREATE TRIGGER test_mark_fails BEFORE UPDATE OF sent_at ON app_outboxmessage "
            "BEGIN SELECT RAISE(ABORT, 'could not serialize access'); END"
        ]
        drop = ["DROP TRIGGER test_mark_fails"]
    else:
        create = [
            "CREATE FUNCTION test_mark_fails() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure';"
            " END $$",
            "CREATE TRIGGER test_mark_fails BEFORE UPDATE OF sent_at ON app_outboxmessage "
            "FOR EACH ROW EXECUTE FUNCTION test_mark_fails()",
        ]
        drop = [
            "DROP TRIGGER test_mark_fails ON app_outboxmessage",
            "DROP FUNCTION test_mark_fails",
        ]
    with connection.cursor() as cursor:
        for sql in create:
            cursor.execute(sql)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for sql in drop:
                cursor.execute(sql)


def test_a_locked_database_leaves_the_row_for_the_relay(broker: Broker) -> None:
    row = pending_row()
    with database_locked():
        assert outbox_publish_one(message_id=row.id) is False
    row.refresh_from_db()
    assert (row.sent_at, row.error) == (None, "")
    assert outbox_relay() == 1
    assert broker.depth("default") >= 1  # twice if the lock came after the publish


def test_a_database_error_marking_a_published_row_leaves_it_for_the_relay(
    broker: Broker,
) -> None:
    row = pending_row()
    with marking_sent_fails():
        assert outbox_publish_one(message_id=row.id) is False
        assert broker.depth("default") == 1  # published, but not marked sent
        row.refresh_from_db()
        assert (row.sent_at, row.error) == (None, "")
    assert outbox_relay() == 1  # published again: at least once, never set aside
    row.refresh_from_db()
    assert row.sent_at is not None and row.error == ""
    assert broker.depth("default") == 2


def test_a_database_error_in_a_relay_batch_sets_no_row_aside(broker: Broker) -> None:
    rows = [pending_row() for _ in range(3)]
    with marking_sent_fails(), pytest.raises(Exception, match="could not serialize"):
        outbox_relay()
    assert OutboxMessage.objects.filter(sent_at=None, error="").count() == len(rows)
    assert outbox_relay() == len(rows)
