"""The Procfile and docker-compose.yml run the same processes with the same commands, and
`make run` from a fresh copy of the repository brings the whole stack up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from config.celery import app as celery_app
from tests.support import ROOT, free_port, wait_for


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


@pytest.fixture
def make_run(fresh_copy: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, str]]]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("VIRTUAL_ENV", "DJANGO_", "DATABASE_URL", "UV_"))
    }  # fmt: skip
    env.update(WEB_PORT=str(free_port()), FLOWER_PORT=str(free_port()))
    log = fresh_copy / "make-run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["make", "run"], cwd=fresh_copy, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process, log, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        print(log.read_text(errors="replace")[-10000:])


def get(url: str, **kwargs: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError:
        return None


@pytest.mark.slow
def test_make_run_from_a_fresh_clone_starts_the_whole_stack(
    make_run: tuple[subprocess.Popen[bytes], Path, dict[str, str]], fresh_copy: Path
) -> None:
    process, log, env = make_run
    web = f"http://127.0.0.1:{env['WEB_PORT']}"
    flower = f"http://127.0.0.1:{env['FLOWER_PORT']}"

    def healthz() -> httpx.Response | None:
        assert process.poll() is None, f"make run exited:\n{log.read_text()}"
        return get(f"{web}/healthz")

    health = wait_for(healthz, timeout=240, what="/healthz to answer")
    assert health.status_code == 200, health.text
    # Flower requires the login that `make run` generated into .env.
    env_file = (fresh_copy / ".env").read_text()
    login = re.search(r"^FLOWER_BASIC_AUTH=(.+):(.+)$", env_file, re.M)
    assert login, env_file
    user, password = login.groups()
    assert "generate-me" not in env_file
    unauthenticated = wait_for(lambda: get(flower), timeout=60, what="Flower to answer")
    assert unauthenticated.status_code == 401
    assert getattr(get(flower, auth=(user, password)), "status_code", None) == 200
    assert getattr(get(flower, auth=(user, "wrong")), "status_code", None) == 401
    # Both workers answer, and beat runs.

    def workers() -> set[str]:
        replies = celery_app.control.ping(timeout=1) or []
        return {name.split("@")[0] for reply in replies for name in reply}

    wait_for(lambda: workers() >= {"io", "cpu"}, timeout=60, what="both workers to answer")
    wait_for(lambda: "beat: Starting..." in log.read_text(), timeout=30, what="beat to start")
