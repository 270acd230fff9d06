"""The Procfile and docker-compose.yml run the same processes with the same commands, and
`make run` from a fresh copy of the repository brings the whole stack up."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, Broker, MakeRun, get, running_worker, wait_for


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_compose_runs_the_procfile_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {name: services[name]["command"] for name in procfile()} == procfile()
    for name in procfile():
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("rabbitmq", "postgres", "web"):
        assert "healthcheck" in services[name], name
    assert "mailpit" in services


def test_every_process_script_exists_and_is_executable() -> None:
    for command in procfile().values():
        script = ROOT / command.split()[0]
        assert script.exists() and os.access(script, os.X_OK), script


def test_env_example_lists_every_setting_the_project_reads() -> None:
    read = set()
    for path in [*ROOT.glob("config/*.py"), *ROOT.glob("bin/*")]:
        text = path.read_text()
        read |= set(re.findall(r'env(?:_bool|_int|_float|_list)?\("([A-Z_]+)"', text))
        read |= set(re.findall(r"\$\{([A-Z_]+)", text))
    listed = set(re.findall(r"^#? ?([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read, "found no settings: the pattern above is out of date"
    assert read <= listed, f"missing from .env.example: {sorted(read - listed)}"


@pytest.mark.django_db
def test_a_worker_starts_without_warnings(broker: Broker, tmp_path: Path) -> None:
    """A fresh template starts clean: a warning at every start teaches people to ignore them."""
    with running_worker(queues_="default,email,api", log_dir=tmp_path) as worker:
        wait_for(lambda: " ready." in worker.output(), what="the worker to log that it is ready")
        output = worker.output()
    # Running as root (containers, this CI) makes Celery warn, rightly; that is the machine's doing.
    root = "SecurityWarning: You're running the worker with superuser privileges"
    warnings = [
        line for line in output.splitlines()
        if "warning" in line.lower() and not (os.geteuid() == 0 and root in line)
    ]  # fmt: skip
    assert not warnings, output


@pytest.mark.slow
@pytest.mark.heavy
def test_make_run_from_a_fresh_clone_starts_the_whole_stack(
    make_run: MakeRun, fresh_copy: Path
) -> None:
    make_run.start()
    make_run.wait_up()
    # Flower requires the login that `make run` generated into .env.
    env_file = (fresh_copy / ".env").read_text()
    login = re.search(r"^FLOWER_BASIC_AUTH=(.+):(.+)$", env_file, re.M)
    assert login, env_file
    user, password = login.groups()
    assert "generate-me" not in env_file
    flower = make_run.flower
    unauthenticated = wait_for(lambda: get(flower), timeout=60, what="Flower to answer")
    assert unauthenticated.status_code == 401
    assert getattr(get(flower, auth=(user, password)), "status_code", None) == 200
    assert getattr(get(flower, auth=(user, "wrong")), "status_code", None) == 401


def beat_entries(database: Path) -> set[str]:
    """The periodic tasks in a `make run` database (SQLite), read without Django."""
    if not database.exists():
        return set()
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        try:
            rows = db.execute("SELECT name FROM django_celery_beat_periodictask").fetchall()
        except sqlite3.OperationalError:  # not migrated yet, or locked by a writer
            return set()
    return {name for (name,) in rows}


@pytest.mark.slow
@pytest.mark.heavy
def test_make_run_starts_again_the_next_morning(make_run: MakeRun, fresh_copy: Path) -> None:
    make_run.start()
    make_run.wait_up()
    # Beat adds entries of its own (celery.backend_cleanup, a crontab at minute 0, hour 4),
    # which the next schedule sync must tell apart from the defaults.
    wait_for(
        lambda: "celery.backend_cleanup" in beat_entries(fresh_copy / "db.sqlite3"),
        timeout=60,
        what="beat to write its own entries",
    )
    make_run.stop()
    make_run.start()
    make_run.wait_up()
    assert "example: say hello every hour: up to date" in make_run.output()
