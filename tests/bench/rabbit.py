"""RabbitMQ for the benchmark: a fresh vhost per scenario, and queue depths."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu import Connection

BROKER = "127.0.0.1:5672"


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q``; its own session, so a Ctrl-C meant for the bench cannot cut a
    vhost deletion short."""
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    return result.stdout


@contextmanager
def fresh_vhost(label: str) -> Iterator[str]:
    """A new vhost that guest may use; yields its broker URL, deletes it afterwards."""
    vhost = f"bench-{label}-{uuid.uuid4().hex[:8]}"
    try:
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{BROKER}/{vhost}"
    finally:
        try:
            rabbitmqctl("delete_vhost", vhost)
        except subprocess.CalledProcessError as exc:  # e.g. interrupted before it was added
            print(f"could not delete vhost {vhost}: {exc.stderr.strip()}", file=sys.stderr)


def vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def ready_count(url: str, queue: str) -> int:
    """Messages waiting in ``queue`` (a passive declare: unacked deliveries are not counted)."""
    with Connection(url) as conn:
        channel: Any = conn.default_channel
        return int(channel.queue_declare(queue, passive=True).message_count)


def total_count(url: str, queue: str) -> int:
    """Messages in ``queue``, ready plus delivered-but-unacked (rabbitmqctl: ~0.5 s a call)."""
    out = rabbitmqctl("--no-table-headers", "list_queues", "-p", vhost_of(url), "name", "messages")
    for line in out.splitlines():
        name, _, messages = line.rpartition("\t")
        if name == queue:
            return int(messages)
    raise LookupError(f"no queue {queue!r} in {vhost_of(url)}: {out!r}")
