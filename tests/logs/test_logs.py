"""What a real web process and a real worker write about a job, in production mode: every line
one JSON object; the X-Request-ID of the request that caused a job on every line of the job, of
its retries, of the jobs it enqueued (through job_enqueue or plain delay()), and of its replay."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from app.deadletters import dead_letters_replay
from app.enqueue import job_enqueue
from app.models import JobRecord, JobStatus
from tests import jobs
from tests.support import (
    ROOT,
    Broker,
    Web,
    json_lines,
    read_events,
    running_beat,
    running_web,
    running_worker,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True)]

#: Production: DEBUG off, so JSON lines by default. Plain HTTP, as the tests speak it.
WEB_ENV = {
    "DJANGO_SETTINGS_MODULE": "tests.logs.settings",
    "DJANGO_DEBUG": "0",
    "DJANGO_SECURE_SSL_REDIRECT": "0",
}
WORKER_ENV = {"DJANGO_DEBUG": "0"}


def enqueue(web: Web, task: str, args: list[Any], *, request_id: str) -> str:
    response = httpx.post(
        f"{web.url}/tests/enqueue/",
        json={"task": task, "args": args},
        headers={"X-Request-ID": request_id},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-ID"] == request_id
    return str(response.json()["id"])


def of_task(lines: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("task_id") == task_id]


def inside(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines logged while the job ran (not the worker's "received" line about it)."""
    return [line for line in lines if "attempt" in line]


def messages(lines: list[dict[str, Any]], start: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["message"].startswith(start)]


@pytest.mark.slow
def test_a_request_id_follows_its_job_through_retries_and_the_jobs_it_enqueues(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    with (
        running_worker(log_dir=tmp_path, env=WORKER_ENV) as worker,
        running_web(log_dir=tmp_path, env=WEB_ENV) as web,
    ):
        job_id = enqueue(web, jobs.chatty.name, [str(events), 1], request_id="req-logs-7f3a")
        missing = httpx.get(f"{web.url}/no-such-page/", headers={"X-Request-ID": "req-404"})
        assert missing.status_code == 404

        def children_ran() -> list[dict[str, Any]]:
            return [e for e in read_events(events) if e["event"] == "child"]

        wait_for(
            lambda: len(children_ran()) == 4,
            timeout=30,
            what="the job to fail once, succeed, and its four children to run",
        )
        children = children_ran()
        wait_for(lambda: worker.output().count("succeeded in") == 5, what="the five jobs to end")
    web_lines = json_lines(web.output(), what="web")
    worker_lines = json_lines(worker.output(), what="worker")

    # The web process: the request's lines carry its id.
    (enqueued,) = messages(web_lines, "enqueued tests.jobs.chatty")
    assert (enqueued["correlation_id"], enqueued["job_id"]) == ("req-logs-7f3a", job_id)
    (not_found,) = messages(web_lines, "Not Found: /no-such-page/")
    assert not_found["correlation_id"] == "req-404"

    # The job: every line logged while it ran, both attempts, its retry included.
    lines = inside(of_task(worker_lines, job_id))
    assert {(line["task"], line["queue"], line["correlation_id"]) for line in lines} == {
        ("tests.jobs.chatty", "default", "req-logs-7f3a")
    }
    assert [line["attempt"] for line in messages(lines, "chatty attempt")] == [1, 2]
    retries = messages(lines, "transient failure, will retry") + [
        line for line in lines if " retry: Retry in 1s" in line["message"]
    ]
    assert [line["attempt"] for line in retries] == [1, 1]
    assert [line["attempt"] for line in lines if "succeeded in" in line["message"]] == [2]
    # Celery's "received" lines, logged outside the job, still name it (both deliveries).
    received = messages(of_task(worker_lines, job_id), "Task tests.jobs.chatty[")
    assert sum(line["message"].endswith("received") for line in received) == 2

    # The jobs it enqueued, however: their own ids, the request's correlation id; a print() of
    # theirs is a log line like any other.
    for child in children:
        lines = inside(of_task(worker_lines, child["task_id"]))
        assert child["task_id"] != job_id
        assert {(line["task"], line["correlation_id"]) for line in lines} == {
            ("tests.jobs.chatty_child", "req-logs-7f3a")
        }
        assert messages(lines, f"child enqueued by {child['via']}")
        (printed,) = messages(lines, f"a print() from the child enqueued by {child['via']}")
        assert printed["logger"] == "celery.redirected"
    assert sorted(child["via"] for child in children) == [
        "chain",
        "chain, second",
        "delay",
        "job_enqueue",
    ]


@pytest.mark.slow
def test_a_replayed_job_keeps_the_correlation_id_of_the_request_that_caused_it(
    broker: Broker, events: Path, tmp_path: Path
) -> None:
    """The replay does the work the request asked for, so it goes on carrying that request's
    id: searching for it finds the request, the job that died, and its replay. The operator's
    action is on record otherwise (``replay_of``; the command's own output)."""
    exists = tmp_path / "exists"
    with (
        running_worker(log_dir=tmp_path, env=WORKER_ENV) as worker,
        running_web(log_dir=tmp_path, env=WEB_ENV) as web,
    ):
        tracked = enqueue(
            web, jobs.fails_until_file_exists.name, [str(exists)], request_id="req-tracked"
        )
        untracked = enqueue(web, jobs.permanent.name, [str(events)], request_id="req-untracked")
        wait_for(lambda: broker.depth("default.dead") == 2, what="both jobs to die")
        wait_for(
            lambda: JobRecord.objects.filter(id=tracked, status=JobStatus.DEAD).exists(),
            what="the tracked job's record to say dead",
        )
        exists.touch()
        replays = dict(dead_letters_replay(job_ids=[tracked, untracked]))
        wait_for(
            lambda: JobRecord.objects.filter(
                id=replays[tracked], status=JobStatus.SUCCEEDED
            ).exists(),
            what="the tracked job's replay to succeed",
        )
        wait_for(lambda: broker.depth("default.dead") == 1, what="the untracked one to die again")
    worker_lines = json_lines(worker.output(), what="worker")

    replay = JobRecord.objects.get(id=replays[tracked])
    assert (str(replay.replay_of_id), replay.correlation_id) == (tracked, "req-tracked")
    (succeeded,) = [
        line
        for line in inside(of_task(worker_lines, str(replay.id)))
        if "succeeded in" in line["message"]
    ]
    assert succeeded["correlation_id"] == "req-tracked"
    # An untracked job is republished as it was, under its own id: it died twice.
    assert replays[untracked] == untracked
    deaths = [
        line
        for line in of_task(worker_lines, untracked)
        if line["message"].endswith("dead-lettered to default.dead")
    ]
    assert [line["correlation_id"] for line in deaths] == ["req-untracked", "req-untracked"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DJANGO_DEBUG": "0"}, "json"),
        ({"DJANGO_DEBUG": "1"}, "console"),
        ({"DJANGO_DEBUG": "0", "LOG_FORMAT": "console"}, "console"),
        ({"DJANGO_DEBUG": "1", "LOG_FORMAT": "json"}, "json"),
    ],
)
def test_json_lines_in_production_readable_lines_in_development_unless_log_format_says(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings_read(env, monkeypatch)["LOG_FORMAT"] == expected


def test_an_unknown_log_format_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT='xml': use one of json, console"):
        settings_read({"LOG_FORMAT": "xml"}, monkeypatch)


def settings_read(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """config/settings.py evaluated afresh under ``env`` (the running settings stay as they are)."""
    for name in ("DJANGO_DEBUG", "LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "config" / "settings.py"))


@pytest.mark.slow
def test_beat_in_production_writes_only_json_lines_from_its_start_to_its_stop(
    tmp_path: Path,
) -> None:
    """Beat printed its start banner (versions, broker, scheduler) as a dozen raw lines ahead of
    its JSON lines; now the banner is one log line, as the worker's is."""
    with running_beat(log_dir=tmp_path, env=WORKER_ENV) as beat:
        log = tmp_path / "beat.log"
        wait_for(lambda: "beat: active" in log.read_text(), timeout=60, what="beat to start")
        beat.terminate()
        beat.wait(30)
    lines = json_lines(log.read_text(), what="beat's log")
    (banner,) = [line for line in lines if line["message"].startswith("celery beat v")]
    assert "scheduler -> app.beat.BeatScheduler" in banner["message"]
    assert banner["logger"] == "config.celery"


@pytest.mark.slow
@pytest.mark.parametrize("sent_by", ["delay", "job_enqueue"])
def test_a_job_sent_outside_a_request_is_the_correlation_id_of_the_jobs_it_enqueues(
    broker: Broker, events: Path, tmp_path: Path, sent_by: str
) -> None:
    """A job sent by beat, a management command or a shell has no request: it is the root of its
    own story, so its id is the correlation id of its lines and of every job it enqueues. Sent
    with job_enqueue, it once carried none (and the children it enqueued with job_enqueue none)."""
    with running_worker(log_dir=tmp_path, env=WORKER_ENV) as worker:
        if sent_by == "delay":
            root = jobs.chatty.delay(str(events), 0).id
        else:
            with transaction.atomic():
                root = job_enqueue(jobs.chatty, args=[str(events), 0])
        wait_for(lambda: worker.output().count("succeeded in") == 5, what="the five jobs to end")
    worker_lines = json_lines(worker.output(), what="worker")
    ran = [line for line in worker_lines if "attempt" in line]
    assert {line["task_id"] for line in ran} >= {root}
    assert len({line["task_id"] for line in ran}) == 5
    assert {line["correlation_id"] for line in ran} == {root}
