"""Jobs reach the queue config/queues.py routes them to, and a worker of that queue runs them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from config import queues
from config.celery import app as celery_app
from tests.support import Broker, rabbitmqctl, read_events, running_worker, wait_for


@pytest.mark.parametrize(("pattern", "queue"), sorted(queues.ROUTES.items()))
def test_each_route_lands_in_its_queue(broker: Broker, pattern: str, queue: str) -> None:
    celery_app.send_task(pattern.replace("*", "anything"), kwargs={})
    assert broker.depth(queue) == 1
    others = [name for name in queues.QUEUES if name != queue]
    assert all(broker.depth(name) == 0 for name in others)


def test_unrouted_tasks_go_to_default(broker: Broker) -> None:
    celery_app.send_task("tasks.anything_unrouted.job", kwargs={"name": "x"})
    assert broker.depth("default") == 1


def test_queues_are_durable_with_their_dead_letter_route(broker: Broker) -> None:
    for queue in queues.TASK_QUEUES:
        assert queue.durable
        assert queue.queue_arguments == {  # type: ignore[attr-defined]
            "x-dead-letter-exchange": "dead",
            "x-dead-letter-routing-key": queue.name,
        }


def test_a_dead_letter_queue_exists_as_soon_as_its_queue_does() -> None:
    """On a brand-new vhost, the first publish declares <queue>.dead with <queue>."""
    vhost = f"test-fresh-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        with Connection(f"amqp://guest:guest@127.0.0.1:5672/{vhost}") as conn:
            celery_app.send_task("tasks.images.anything", connection=conn)
            channel: Any = conn.default_channel
            # A passive declare raises NotFound for a queue that does not exist.
            assert channel.queue_declare("images.dead", passive=True).queue == "images.dead"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.mark.slow
def test_a_worker_of_the_routed_queue_runs_the_job(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    result = celery_app.send_task("tasks.images.probe_for_tests", kwargs={"path": str(events)})
    assert broker.depth("images") == 1
    # With a worker of the other queues running too, only the images worker may take it.
    with (
        running_worker(queues_="default,email,api", pool="threads", log_dir=tmp_path) as io,
        running_worker(queues_="images,exports", log_dir=tmp_path) as cpu,
    ):
        done = wait_for(lambda: read_events(events), what="the images job to run")
        io_log, cpu_log = io.output(), cpu.output()
    assert result.id in cpu_log and result.id not in io_log
    assert [e["task_id"] for e in done] == [result.id]
    assert broker.depth("images") == 0
