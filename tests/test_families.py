"""Task families plug in and come out as folders: a scaffolded family runs under `make run` with
nothing else edited; without the example family the project still starts and passes its tests;
the import contracts hold and catch a break; the API describes itself, and schemathesis finds no
500 and no answer that breaks the schema."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from tests.support import ROOT, Broker, MakeRun, running_web, running_worker, wait_for

BIN = Path(sys.executable).parent  # the test run's own lint-imports and schemathesis


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A command in a copy of the project, with this test run's Python and packages."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    return subprocess.run(
        command, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
@pytest.mark.heavy
def test_a_family_scaffolded_with_newtask_runs_under_make_run(
    make_run: MakeRun, fresh_copy: Path
) -> None:
    created = run([sys.executable, "manage.py", "newtask", "invoices", "--package"], fresh_copy)
    assert created.returncode == 0, created.stdout + created.stderr
    # Its own tests pass, whole path included, on their own vhost and database.
    tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "tests/invoices"], fresh_copy)  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    assert "4 passed" in tests.stdout, tests.stdout[-2000:]

    make_run.start()
    make_run.wait_up()
    schema = httpx.get(f"{make_run.web}/api/openapi.json", timeout=10).json()
    assert "/api/invoices/" in schema["paths"]
    response = httpx.post(f"{make_run.web}/api/invoices/", json={"name": "March"}, timeout=10)
    assert response.status_code == 202, response.text
    status_url = make_run.web + response.json()["status_url"]
    job = wait_for(
        lambda: (body := httpx.get(status_url, timeout=10).json())["final"] and body,
        timeout=60,
        what="the invoices job to end",
    )
    assert (job["task"], job["status"]) == ("tasks.invoices.process", "succeeded"), job
    assert job["result"] == {"entry_id": 1, "processed": True}


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.django_db(transaction=True)
def test_without_the_example_family_the_project_starts_and_passes_its_tests(
    fresh_copy: Path, broker: Broker, tmp_path: Path
) -> None:
    shutil.rmtree(fresh_copy / "tasks" / "example")
    shutil.rmtree(fresh_copy / "tests" / "example")
    database = f"sqlite:///{tmp_path / 'without-example.sqlite3'}"
    for command in (["check"], ["migrate", "--noinput"], ["sync_schedule"], ["tasks"]):
        done = run([sys.executable, "manage.py", *command], fresh_copy, DATABASE_URL=database)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        assert "tasks.example" not in done.stdout
    lint = run([str(BIN / "lint-imports")], fresh_copy)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    with running_worker(log_dir=tmp_path, cwd=fresh_copy, env={"DATABASE_URL": database}) as w:
        assert w.ping()
    # The engine's own tests, less the slow ones (they start stacks and workers: run above).
    tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                 "not slow", "-x"], fresh_copy)  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout


def test_lint_imports_fails_when_the_engine_imports_a_family(tmp_path: Path) -> None:
    for name in ("app", "tasks", "config"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert run([str(BIN / "lint-imports")], tmp_path).returncode == 0
    health = tmp_path / "app" / "health.py"
    health.write_text(health.read_text() + "\nimport tasks.maintenance  # noqa\n")
    broken = run([str(BIN / "lint-imports")], tmp_path)
    assert broken.returncode != 0
    assert "The engine (app/) knows no task family BROKEN" in broken.stdout
    assert "app.health -> tasks.maintenance" in broken.stdout


@pytest.mark.django_db
def test_the_api_docs_come_from_our_own_static_files(settings: Settings) -> None:
    settings.SECURE_SSL_REDIRECT = False
    settings.DEBUG = True  # static files through the finders, without collectstatic
    page = Client().get("/api/docs").content.decode()
    assert '<script src="/static/ninja/swagger-ui-bundle.js">' in page
    assert "cdn" not in page.lower()
    script = Client().get("/static/ninja/swagger-ui-bundle.js")
    assert script.status_code == 200
    schema: Any = Client().get("/api/openapi.json").json()
    assert {"/api/jobs/", "/api/jobs/{job_id}/", "/api/jobs/{job_id}/cancel/"} <= set(
        schema["paths"]
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(
    broker: Broker, tmp_path: Path
) -> None:
    examples = os.environ.get("SCHEMATHESIS_EXAMPLES", "100")
    with running_web(log_dir=tmp_path) as web:
        result = subprocess.run(
            [str(BIN / "schemathesis"), "--config-file", str(ROOT / "tests/schemathesis.toml"),
             "run", f"{web.url}/api/openapi.json",
             "--checks", "all", "--max-examples", examples, "--generation-deterministic",
             # A NUL character is refused on purpose (app/input.py: PostgreSQL cannot store it).
             "--generation-allow-x00", "false",
             "--request-timeout", "10"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache goes there
        )  # fmt: skip
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
