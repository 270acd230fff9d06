"""The message checks of app/protocol.py pass every message Celery itself sends.

A check too strict would dead-letter good jobs, so each message here is one that Celery's own
``apply_async`` published (captured by the ``before_task_publish`` signal) through the JSON
round trip a worker sees. The checks' refusals are proven on a real worker in
tests/test_malformed_messages.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import chain, group, signals
from kombu.serialization import dumps, loads

from app.protocol import body_problem, headers_problem
from tests import jobs
from tests.support import Broker


@pytest.fixture
def sent(broker: Broker) -> Iterator[list[tuple[Any, dict[str, Any]]]]:
    """(body, headers) of each message Celery publishes while the test runs."""
    messages: list[tuple[Any, dict[str, Any]]] = []

    def capture(body: Any, headers: dict[str, Any], **kwargs: Any) -> None:
        messages.append((body, headers))

    signals.before_task_publish.connect(capture, weak=False)
    yield messages
    signals.before_task_publish.disconnect(capture)


def _stamped() -> None:
    signature = jobs.record.s("/dev/null")
    signature.stamp(tenant="acme")
    signature.apply_async()


SENDS: dict[str, Callable[[], Any]] = {
    "delay": lambda: jobs.record.delay("/dev/null", sleep=0.5),
    "options": lambda: jobs.record.apply_async(
        ("/dev/null",),
        countdown=5,
        expires=600,
        time_limit=10,
        soft_time_limit=5,
        retries=3,
        shadow="shown as",
        headers={"tenant": "acme"},
        ignore_result=False,
    ),
    "callbacks": lambda: jobs.record.apply_async(
        ("/dev/null",), link=jobs.record.si("/dev/null"), link_error=jobs.record.si("/dev/null")
    ),
    "chain": lambda: chain(jobs.record.si("a"), jobs.record.si("b"), jobs.record.si("c"))(),
    "group": lambda: group(jobs.record.si("a"), jobs.record.si("b")).apply_async(),
    "stamped": _stamped,
    "tracked": lambda: jobs.tracked_record.delay("/dev/null"),
}


@pytest.mark.parametrize("send", SENDS.values(), ids=SENDS.keys())
def test_every_message_celery_sends_passes_the_checks(
    sent: list[tuple[Any, dict[str, Any]]], send: Callable[[], Any]
) -> None:
    send()
    assert sent, "nothing was published"
    for body, headers in sent:
        content_type, encoding, data = dumps(body, serializer="json")
        decoded = loads(data, content_type, encoding)
        assert headers_problem(headers) is None, headers
        assert body_problem(decoded) is None, decoded


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"id": "x"}, "no 'task' header"),
        ({"task": "t", "id": 7}, "header 'id'"),
        ({"task": "t", "id": "x", "retries": -1}, "header 'retries'"),
        ({"task": "t", "id": "x", "retries": True}, "header 'retries'"),
        ({"task": "t", "id": "x", "timelimit": [1]}, "header 'timelimit'"),
        ({"task": "t", "id": "x", "timelimit": [None, "5"]}, "header 'timelimit'"),
        ({"task": "t", "id": "x", "eta": "tomorrow"}, "header 'eta'"),
        ({"task": "t", "id": "x", "stamps": []}, "header 'stamps'"),
    ],
)
def test_headers_problem_names_the_header(headers: dict[str, Any], problem: str) -> None:
    found = headers_problem(headers)
    assert found is not None and problem in found, found


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([[], {}], "body is not [args, kwargs, embed]"),
        ({"args": []}, "body is not [args, kwargs, embed]"),
        (["a", {}, {}], "args are str"),
        ([[], {}, {"callbacks": [1]}], "embed 'callbacks'"),
        ([[], {}, {"chord": []}], "embed 'chord'"),
    ],
)
def test_body_problem_names_the_part(body: Any, problem: str) -> None:
    found = body_problem(body)
    assert found is not None and problem in found, found
