"""Task options: a misspelt one fails at import; ``manage.py tasks`` shows what each task does;
every queue of config/queues.py has a worker, and no worker names a queue the table lacks."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from config import queues
from tests import jobs
from tests.support import ROOT


@pytest.mark.parametrize(
    ("option", "suggestion"),
    [("trackd=True", "'tracked'"), ("max_retry=3", "'max_retries'"), ("qeue='email'", "'queue'")],
)
def test_a_misspelt_task_option_fails_when_its_module_is_imported(
    tmp_path: Path, option: str, suggestion: str
) -> None:
    (tmp_path / "typo_tasks.py").write_text(
        f"from celery import shared_task\n\n@shared_task({option})\ndef job():\n    pass\n"
    )
    code = (
        "import os, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
        "django.setup(); import typo_tasks"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode != 0
    name = option.split("=")[0]
    assert f"UnknownTaskOption: task 'typo_tasks.job': unknown option '{name}'" in result.stderr
    assert f"did you mean {suggestion}?" in result.stderr


def test_every_option_celery_reads_is_accepted() -> None:
    from celery import shared_task

    @shared_task(
        name="tests.options.all_of_them", bind=True, tracked=True, routing_key="email",
        autoretry_for=(ValueError,), dont_autoretry_for=(KeyError,), retry_kwargs={},
        retry_backoff=2, retry_backoff_max=60, retry_jitter=False, max_retries=2,
        default_retry_delay=1, rate_limit="10/m", time_limit=20, soft_time_limit=10,
        acks_late=True, reject_on_worker_lost=True, ignore_result=True, serializer="json",
        expires=60, typing=True, track_started=False, throws=(KeyError,),
        store_eager_result=False, exchange_type="direct",  # found missing by review
    )  # fmt: skip
    def all_of_them(self: object) -> None:
        pass

    assert all_of_them.tracked and all_of_them.rate_limit == "10/m"


def test_manage_tasks_lists_queue_tracking_retries_and_limits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert jobs.flaky.max_retries == 3  # the test jobs are registered
    call_command("tasks")
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["tasks.images.probe_for_tests"].split()[1] == "images"
    assert re.search(
        r"^tests\.jobs\.tracked_record\s+default\s+yes\s", rows["tests.jobs.tracked_record"]
    )
    assert "2s" in rows["tests.jobs.ignores_soft_time_limit"].split()[3]
    assert rows["tests.jobs.flaky"].endswith("3 on TRANSIENT_ERRORS, backoff up to 600s")
    assert not rows["tests.jobs.always_transient"].endswith("with jitter")
    default_policy = "10 on TRANSIENT_ERRORS, backoff up to 600s with jitter"
    assert rows["tests.jobs.record"].endswith(default_policy)
    assert rows["tests.jobs.misrouted"].split()[1] == "no-such-queue(MISSING)"
    assert "celery.chord_unlock" not in rows


def worker_queues() -> dict[str, set[str]]:
    """Procfile process -> the queues its command consumes (read from bin/ scripts)."""
    consumed: dict[str, set[str]] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        process, command = line.split(":", 1)
        lines = (ROOT / shlex.split(command)[0]).read_text().splitlines()
        script = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        if " worker" not in script:  # the command, not a comment that mentions workers
            continue
        found = re.search(r"--queues[ =]+\"?([\w.,-]+)", script)
        assert found, f"{process}: a worker without --queues consumes only the default queue"
        consumed[process] = set(found.group(1).split(","))
    return consumed


def test_every_queue_has_a_worker_and_every_worker_a_queue() -> None:
    consumed = worker_queues()
    assert consumed, "the Procfile starts no worker"
    everything = set().union(*consumed.values())
    assert not set(queues.QUEUES) - everything, "queues no Procfile worker consumes"
    for process, names in consumed.items():
        assert not names - set(queues.QUEUES), f"{process} names queues config/queues.py lacks"
