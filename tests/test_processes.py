"""The Procfile and docker-compose.yml run the same processes with the same commands, and
`make run` from a fresh copy of the repository brings the whole stack up."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from config.celery import app as celery_app
from tests.support import ROOT, Broker, free_port, running_worker, wait_for


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
        read |= set(re.findall(r'env(?:_bool|_int|_list)?\("([A-Z_]+)"', text))
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


@pytest.fixture
def fresh_copy(tmp_path: Path) -> Path:
    """The repository as a fresh clone would have it: tracked and new files, nothing ignored."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    copy = tmp_path / "clone"
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return copy


def get(url: str, **kwargs: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError:
        return None


def workers() -> set[str]:
    """The names (before the @) of the workers answering a ping on the test vhost."""
    replies = celery_app.control.ping(timeout=1) or []
    return {name.split("@")[0] for reply in replies for name in reply}


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class MakeRun:
    """`make run` in a copy of the repository, on its own SQLite database and ports, started and
    stopped as a developer does: Ctrl-C (SIGTERM to the terminal's process group here)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("VIRTUAL_ENV", "DJANGO_", "DATABASE_URL", "UV_"))
        }  # fmt: skip
        self.env.update(WEB_PORT=str(free_port()), FLOWER_PORT=str(free_port()))
        self.web = f"http://127.0.0.1:{self.env['WEB_PORT']}"
        self.flower = f"http://127.0.0.1:{self.env['FLOWER_PORT']}"
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        self.logs.append(self.root / f"make-run-{len(self.logs) + 1}.log")
        with self.logs[-1].open("wb") as out:
            self.process = subprocess.Popen(
                ["make", "run"], cwd=self.root, env=self.env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.logs[-1].read_text(errors="replace")

    def healthz(self) -> httpx.Response | None:
        assert self.process and self.process.poll() is None, f"make run exited:\n{self.output()}"
        return get(f"{self.web}/healthz")

    def wait_up(self) -> None:
        """Until /healthz answers 200, both workers answer a ping and beat has started."""
        health = wait_for(self.healthz, timeout=240, what="/healthz to answer")
        assert health.status_code == 200, health.text
        wait_for(lambda: workers() >= {"io", "cpu"}, timeout=60, what="both workers to answer")
        wait_for(lambda: "beat: Starting..." in self.output(), timeout=30, what="beat to start")

    def stop(self) -> None:
        """Stop the stack and wait until it is gone: ports free, no worker answering."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None
        # honcho's processes run in sessions of their own; honcho stops them after make exits.
        ports = (int(self.env["WEB_PORT"]), int(self.env["FLOWER_PORT"]))
        wait_for(lambda: not any(map(port_open, ports)), timeout=60, what="web and Flower to stop")
        wait_for(lambda: not workers() & {"io", "cpu"}, timeout=60, what="the workers to stop")


@pytest.fixture
def make_run(fresh_copy: Path) -> Iterator[MakeRun]:
    stack = MakeRun(fresh_copy)
    try:
        yield stack
    finally:
        stack.stop()
        for log in stack.logs:
            print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-10000:]}")


@pytest.mark.slow
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
    assert "example: say hello every hour: kept" in make_run.output()
