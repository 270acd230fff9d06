"""Any message a producer can put on a work queue either runs or ends in ``<queue>.dead``.

A real worker of each pool takes messages published straight to ``default``: the specific ones
that used to stop a worker, drop a message or leave it unacknowledged, then whatever hypothesis
generates (wrong types, missing keys, wrong shapes, huge values, bad encodings). After each one
the worker must still run, and the message must have run once or be dead-lettered once.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kombu import Connection

from app.protocol import HEADERS
from config import queues
from config.celery import app as celery_app
from tests.support import Broker, Worker, running_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TASK = "tests.jobs.accept_anything"
TRACKED_TASK = "tests.jobs.accept_anything_tracked"


class ProbeWorker:
    """A worker on ``default`` and one open broker connection to publish and read outcomes."""

    def __init__(self, worker: Worker, log: Path, connection: Connection) -> None:
        self.worker = worker
        self.log = log
        self.connection = connection
        self.producer = connection.Producer()
        self.dead: Counter[str] = Counter()
        self.dead_reasons: dict[str, str] = {}

    def publish(
        self,
        body: bytes,
        headers: dict[str, Any],
        *,
        content_type: str = "application/json",
        content_encoding: str = "utf-8",
    ) -> str:
        """Publish bytes as they are, with a ``probe_id`` header to find the message by."""
        probe = uuid.uuid4().hex
        self.producer.publish(
            body,
            exchange=queues.TASK_EXCHANGE.name,
            routing_key="default",
            content_type=content_type,
            content_encoding=content_encoding,
            headers={**headers, "probe_id": probe},
            delivery_mode=2,
        )
        return probe

    def ran(self) -> Counter[str]:
        if not self.log.exists():
            return Counter()
        return Counter(json.loads(line) for line in self.log.read_text().splitlines())

    def _drain_dead(self) -> None:
        channel: Any = self.connection.default_channel
        while message := channel.basic_get("default.dead", no_ack=True):
            probe = str(message.headers.get("probe_id"))
            self.dead[probe] += 1
            self.dead_reasons[probe] = message.headers["x-death"][0]["reason"]

    def outcome(self, probe: str) -> str:
        """'ran' or 'dead', once the message settled; fails if the worker exits meanwhile."""

        def settled() -> str | None:
            if self.worker.process.poll() is not None:
                raise AssertionError(f"the worker exited:\n{self.worker.output()[-5000:]}")
            self._drain_dead()
            if self.dead[probe]:
                return "dead"
            return "ran" if self.ran()[probe] else None

        result = wait_for(settled, timeout=20, what=f"message {probe} to run or be dead")
        return result

    def assert_settled_once(self, probe: str) -> str:
        result = self.outcome(probe)
        assert self.dead[probe] <= 1, f"{probe} dead-lettered {self.dead[probe]} times"
        assert self.ran()[probe] <= 1, f"{probe} ran {self.ran()[probe]} times"
        if result == "dead":
            assert self.dead_reasons[probe] == "rejected"
        return result

    def assert_healthy(self) -> None:
        """Answers a ping, runs a good job, and holds no message unacknowledged."""
        assert self.worker.ping(), "the worker does not answer a ping"
        probe = self.publish(json.dumps([[], {}, {}]).encode(), good_headers())
        assert self.assert_settled_once(probe) == "ran"
        ready, unacked = queue_counts("default")
        assert (ready, unacked) == (0, 0), f"default: {ready} ready, {unacked} unacknowledged"


def good_headers(task: str = TASK) -> dict[str, Any]:
    return {"lang": "py", "task": task, "id": str(uuid.uuid4()), "retries": 0}


def queue_counts(queue: str) -> tuple[int, int]:
    """Messages ready and unacknowledged in ``queue`` of the test vhost, as RabbitMQ counts them."""
    vhost = celery_app.conf.broker_url.rsplit("/", 1)[1] or "/"
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers",
         "name", "messages_ready", "messages_unacknowledged"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        name, ready, unacked = line.split()
        if name == queue:
            return int(ready), int(unacked)
    raise AssertionError(f"no queue {queue} in {out!r}")


@pytest.fixture(scope="module", params=["prefork", "threads"])
def probe_worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[ProbeWorker]:
    log_dir = tmp_path_factory.mktemp(f"probe-{request.param}")
    log = log_dir / "ran.jsonl"
    Broker(celery_app.conf.broker_url).reset()
    with (
        running_worker(
            pool=request.param,
            concurrency=2 if request.param == "prefork" else 4,
            log_dir=log_dir,
            env={"PROBE_LOG": str(log)},
        ) as worker,
        Connection(celery_app.conf.broker_url) as connection,
    ):
        yield ProbeWorker(worker, log, connection)


# Each used to stop the worker (and every restart), lose the message, or leave it unacked.
@pytest.mark.parametrize(
    ("case", "body", "headers", "reason"),
    [
        ("string body", b'"hello"', {}, "body is not [args, kwargs, embed]"),
        ("null body", b"null", {}, "body is not [args, kwargs, embed]"),
        ("two-item body", b"[[], {}]", {}, "body is not [args, kwargs, embed]"),
        ("string timelimit", b"[[], {}, {}]", {"timelimit": "soon"}, "header 'timelimit'"),
        ("list kwargs", b"[[], [], {}]", {}, "kwargs are not an object"),
        ("string embed", b'[[], {}, "x"]', {}, "embed is str"),
        # Found by review: dateutil raises OverflowError, which the check did not catch.
        ("eta past 9999", b"[[], {}, {}]", {"eta": "9999-12-31T24:00:00"}, "header 'eta'"),
        ("callback naming no task", b'[[], {}, {"callbacks": [{}]}]', {}, "embed 'callbacks'"),
        ("bad compression", b"[[], {}, {}]", {"compression": "nope"}, "cannot decode message"),
    ],
)  # fmt: skip
def test_a_malformed_message_is_dead_lettered_and_the_worker_carries_on(
    probe_worker: ProbeWorker, case: str, body: bytes, headers: dict[str, Any], reason: str
) -> None:
    probe = probe_worker.publish(body, {**good_headers(), **headers})
    assert probe_worker.assert_settled_once(probe) == "dead", case
    assert reason in probe_worker.worker.output()
    probe_worker.assert_healthy()


def test_jobs_dead_says_what_is_wrong_with_a_malformed_message(
    probe_worker: ProbeWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = Broker(celery_app.conf.broker_url)
    probe = probe_worker.publish(b"[[], [], {}]", good_headers())
    wait_for(lambda: broker.depth("default.dead") == 1, what="the message in default.dead")
    call_command("jobs", "dead")
    out = capsys.readouterr().out
    assert "default.dead: 1" in out and "kwargs are not an object" in out, out
    assert probe_worker.assert_settled_once(probe) == "dead"  # listing took nothing away


# --- generated messages ---------------------------------------------------------------------

# Values an AMQP header table can carry (RabbitMQ refuses what does not encode; that is the
# producer's error, not the worker's): 64-bit integers, text without lone surrogates.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
huge_text = st.integers(10_000, 1_000_000).map(lambda n: "x" * n)

# RabbitMQ 3.10 closes the publisher's channel on a float inside a header array (its parser has
# no clause for it): no worker ever sees such a message, so header containers hold no floats.
header_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), text)
header_values = st.one_of(
    st.recursive(
        header_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    ),
    st.floats(),
    st.integers(-5, 5),
    # No fixed job id: two tracked messages sharing one, the second is skipped as a redelivery.
    st.sampled_from(["", "2026-01-01T00:00:00", "9999-12-31T24:00:00", "not a date", TASK]),
    st.lists(st.one_of(st.none(), st.integers(-1, 10**12), text), max_size=3),
    st.integers(10, 30_000).map(lambda n: "y" * n),
)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    """Good headers, then some replaced, removed or added with values of any type."""
    result: dict[str, Any] = good_headers(draw(st.sampled_from([TASK, TRACKED_TASK])))
    result["expires"] = None  # a past `expires` is Celery's documented way to drop a message
    names = st.sampled_from([*HEADERS, "compression", "eta"]) | text
    for _ in range(draw(st.integers(0, 3))):
        name = draw(names)
        if name == "expires":
            continue
        if draw(st.booleans()):
            result.pop(name, None)
        else:
            value = draw(header_values)
            # An ETA that parses is a real delay: only past ones, so the test does not wait.
            if name == "eta" and isinstance(value, str) and value.startswith("2"):
                value = "2000-01-01T00:00:00+00:00"
            result[name] = value
    return result


def body_parts() -> st.SearchStrategy[Any]:
    """``[args, kwargs, embed]`` with any part, or the whole, of any JSON type."""
    embed = st.fixed_dictionaries(
        {},
        optional={
            "callbacks": st.none() | st.lists(json_values, max_size=2),
            "errbacks": st.none() | st.lists(json_values, max_size=2),
            "chain": st.none() | st.just([]),
            "chord": st.none() | json_values,
        },
    )
    good = st.tuples(
        st.lists(json_values | huge_text, max_size=3),
        st.dictionaries(text, json_values, max_size=3),
        embed,
    ).map(list)
    return st.one_of(
        good,
        json_values,
        st.tuples(json_values, json_values, json_values).map(list),
        st.lists(json_values, min_size=0, max_size=5),
    )


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """(body, content type, content encoding): JSON of any shape, or bytes of any kind."""
    if draw(st.integers(0, 9)) < 7:
        body = json.dumps(draw(body_parts())).encode()
    else:
        body = draw(st.binary(max_size=200) | st.just(b"\xff\xfe[[], {}, {}]"))
    content_type = draw(
        st.sampled_from(["application/json"] * 6 + ["application/x-python-serialize",
                                                     "text/plain", "application/x-yaml", ""])
    )  # fmt: skip
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-16", "latin-1", "binary", "nonsense"]))
    return body, content_type, encoding


@settings(
    max_examples=int(os.environ.get("MALFORMED_MESSAGE_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(headers=headers(), body=bodies())
def test_any_message_runs_once_or_is_dead_lettered_once(
    probe_worker: ProbeWorker, headers: dict[str, Any], body: tuple[bytes, str, str]
) -> None:
    data, content_type, encoding = body
    probe = probe_worker.publish(
        data, headers, content_type=content_type, content_encoding=encoding
    )
    event(probe_worker.assert_settled_once(probe))  # --hypothesis-show-statistics counts them


def test_after_the_generated_messages_the_worker_is_healthy(probe_worker: ProbeWorker) -> None:
    """Runs after the property test on the same worker (pytest keeps the order of a module)."""
    probe_worker.assert_healthy()
    assert "Unrecoverable error" not in probe_worker.worker.output()
