"""Helpers for tests that use the real RabbitMQ and real worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from django.db import connection
from kombu import Connection
from kombu.message import Message

from app.models import FINAL_STATUSES, JobRecord
from config import queues
from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], *, timeout: float = 20.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def job_ended(job_id: str, timeout: float = 60) -> JobRecord:
    """The job's record once it has a final status (app.models.FINAL_STATUSES)."""
    return wait_for(
        lambda: JobRecord.objects.filter(id=job_id, status__in=FINAL_STATUSES).first(),
        timeout=timeout,
        what=f"job {job_id} to end",
    )


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


class Broker:
    """The test vhost: publish raw messages, count and read queues."""

    def __init__(self, url: str) -> None:
        self.url = url

    def connection(self) -> Connection:
        return Connection(self.url)

    def reset(self) -> None:
        """Declare every queue of config/queues.py, empty."""
        with self.connection() as conn:
            channel = conn.default_channel
            for queue in (*queues.TASK_QUEUES, *queues.DEAD_QUEUES):
                bound = queue(channel)
                bound.declare()
                bound.purge()

    def depth(self, queue: str) -> int:
        with self.connection() as conn:
            channel: Any = conn.default_channel
            return int(channel.queue_declare(queue, passive=True).message_count)

    def get(self, queue: str) -> Message | None:
        """Take one message off ``queue`` (acknowledged), or None when it is empty."""
        with self.connection() as conn:
            channel: Any = conn.default_channel
            message: Message | None = channel.basic_get(queue, no_ack=True)
            return message

    def publish_raw(
        self, body: bytes, *, queue: str, content_type: str, headers: dict[str, Any]
    ) -> None:
        """Publish bytes as they are, the way a buggy or hostile producer could."""
        with self.connection() as conn:
            conn.Producer().publish(
                body,
                exchange=queues.TASK_EXCHANGE.name,
                routing_key=queue,
                content_type=content_type,
                content_encoding="utf-8" if "json" in content_type else "binary",
                headers=headers,
                delivery_mode=2,
            )


def database_url() -> str:
    """The URL of the database the tests run on, for worker processes."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """A real ``celery worker`` process, as the Procfile runs it, plus the test jobs module."""

    def __init__(self, process: subprocess.Popen[bytes], hostname: str, log: Path) -> None:
        self.process = process
        self.hostname = hostname
        self.log = log

    def ping(self) -> bool:
        replies = celery_app.control.ping(destination=[self.hostname], timeout=0.5) or []
        return any(self.hostname in reply for reply in replies)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool), like an OOM killer or a power cut."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Warm shutdown, as Docker and systemd (KillMode=mixed) do it: SIGTERM to the main
        process only, which lets running jobs finish and ack. Then clear any leftovers."""
        process_stop(self.process)


def process_stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the main process (started in a session of its own), up to 30 s for it to
    finish, then SIGKILL to whatever is left of its process group."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@contextmanager
def running_worker(
    *,
    queues_: str = "default",
    pool: str = "prefork",
    concurrency: int = 2,
    log_dir: Path,
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    cwd: Path = ROOT,
) -> Iterator[Worker]:
    hostname = f"test-{uuid.uuid4().hex[:8]}@%h"
    log = log_dir / f"worker-{hostname.split('@')[0]}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "config", "worker",
        "--hostname", hostname, "--queues", queues_,
        "--pool", pool, "--concurrency", str(concurrency),
        "--include", "tests.jobs", "--without-mingle", "--without-gossip",
        "--loglevel", "INFO", *extra_args,
    ]  # fmt: skip
    process_env = {
        **os.environ,
        "CELERY_BROKER_URL": celery_app.conf.broker_url,
        "DATABASE_URL": database_url(),
        # Not settings.SETTINGS_MODULE: pytest-django's `settings` fixture leaves that None.
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings"),
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=process_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    worker = Worker(process, hostname.replace("%h", os.uname().nodename), log)
    try:
        wait_for(
            lambda: worker.process.poll() is not None or worker.ping(),
            timeout=30,
            what=f"worker {worker.hostname} to answer a ping",
        )
        if worker.process.poll() is not None:
            raise AssertionError(f"worker exited at start:\n{worker.output()}")
        yield worker
    except BaseException:
        print(f"--- worker log {log} ---\n{worker.output()[-20000:]}")
        raise
    finally:
        worker.stop()


@contextmanager
def running_beat(
    *, log_dir: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``celery beat`` on django-celery-beat's tables with CELERY_BEAT_SCHEDULER, as bin/beat
    runs it (alone, it takes the beat lock at its first tick)."""
    log = log_dir / "beat.log"
    process_env = {
        **os.environ,
        "CELERY_BROKER_URL": celery_app.conf.broker_url,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        **(env or {}),
    }
    with log.open("wb") as out:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "beat", "--pidfile=",
             "--schedule", str(log_dir / "beat-schedule"), "--loglevel", "INFO"],
            cwd=ROOT, env=process_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield beat
    except BaseException:
        print(f"--- beat log ---\n{log.read_text(errors='replace')[-20000:]}")
        raise
    finally:
        beat.terminate()
        try:
            beat.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(beat.pid, signal.SIGKILL)
            beat.wait(10)


def pool_pids(worker: Worker) -> list[str]:
    """The worker's pool processes (the children of its main process)."""
    pid = worker.process.pid
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def peak_rss_mb(worker: Worker) -> float:
    """The largest peak resident memory (VmHWM) of the worker's pool processes."""
    peaks = []
    for child in pool_pids(worker):
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


def peak_rss_reset(worker: Worker) -> None:
    """Start the pool processes' peaks over from their present size (Linux: ``5`` into
    clear_refs), so that the next ``peak_rss_mb`` is the peak of what they do next."""
    for child in pool_pids(worker):
        Path(f"/proc/{child}/clear_refs").write_text("5")


def read_events(path: Path) -> list[dict[str, Any]]:
    """The lines test jobs appended to ``path`` (see tests/jobs.py)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def json_lines(output: str, *, what: str = "log") -> list[dict[str, Any]]:
    """Every line of a process's output in production mode (JSON logs), each one JSON object;
    fails naming the first line that is not."""
    lines = output.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the end of the last line
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise AssertionError(f"{what} line {number} is not a JSON object: {line!r}")
        parsed.append(value)
    return parsed


class TcpProxy:
    """A TCP proxy in front of RabbitMQ or PostgreSQL that a test can take down and bring back.

    Down, it refuses connections and cuts the open ones, as a stopped server would, for the
    clients that use it, while other processes and tests keep the real server.
    """

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def url(self, url: str) -> str:
        """``url`` (the test vhost, or the test database) through this proxy."""
        return url.replace(f":{self.target[1]}/", f":{self.port}/")

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Web:
    """A real ``bin/web`` process, as the Procfile runs it, on the test database and vhost."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_web(*, log_dir: Path, env: dict[str, str] | None = None) -> Iterator[Web]:
    """Start ``bin/web`` with DEBUG on (the demo endpoint) and wait for /healthz to answer."""
    port = free_port()
    log = log_dir / f"web-{port}.log"
    process_env = {
        **os.environ,
        "CELERY_BROKER_URL": celery_app.conf.broker_url,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "1",
        "WEB_PORT": str(port),
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ROOT / "bin" / "web")], cwd=ROOT, env=process_env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    web = Web(process, port, log)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"bin/web exited at start:\n{web.output()}")
        try:
            return httpx.get(f"{web.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, timeout=60, what="bin/web to answer /healthz")
        yield web
    except BaseException:
        print(f"--- web log {log} ---\n{web.output()[-20000:]}")
        raise
    finally:
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class Flower:
    """A real ``bin/flower`` process, as the Procfile runs it, with a login of its own."""

    def __init__(
        self, process: subprocess.Popen[bytes], url: str, login: tuple[str, str], log: Path
    ) -> None:
        self.process = process
        self.url = url  # with the URL prefix, when there is one
        self.login = login
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(
        self,
        path: str,
        *,
        login: bool = True,
        auth: tuple[str, str] | None = None,
        base: str | None = None,
    ) -> httpx.Response:
        """GET ``path`` under Flower's URL (or ``base``) with its login, or ``auth``, or none."""
        credentials = auth or (self.login if login else None)
        return httpx.get((base or self.url) + path, auth=credentials, timeout=10)

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Flower's tasks (its ``/api/tasks``), by task id."""
        response = self.get("/api/tasks")
        response.raise_for_status()
        tasks: dict[str, dict[str, Any]] = response.json()
        return tasks

    def sees_worker(self, hostname: str) -> bool:
        """Whether Flower has had events from ``hostname``: its heartbeats set
        ``flower_worker_online``. Proves Flower's event receiver is listening."""
        line = f'flower_worker_online{{worker="{hostname}"}} 1.0'
        return line in self.get("/metrics").text

    def stop(self) -> None:
        """SIGTERM, as honcho, Docker and systemd stop it: Flower saves its state on the way out."""
        process_stop(self.process)


@contextmanager
def running_flower(*, log_dir: Path, env: dict[str, str] | None = None) -> Iterator[Flower]:
    """Start ``bin/flower`` on the test vhost, its state file in ``log_dir/flower/`` (unless
    ``env`` sets FLOWER_DB), and wait for it to answer. FLOWER_* variables of the calling shell
    are left out: a developer's URL prefix or login must not change what the test sees."""
    port = free_port()
    login = ("admin", uuid.uuid4().hex)
    process_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")},
        # bin/flower runs `celery`: this interpreter's, also when the venv is not activated.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CELERY_BROKER_URL": celery_app.conf.broker_url,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "FLOWER_PORT": str(port),
        "FLOWER_BASIC_AUTH": ":".join(login),
        "FLOWER_DB": str(log_dir / "flower" / "flower.db"),
        **(env or {}),
    }
    prefix = process_env.get("FLOWER_URL_PREFIX", "").strip("/")
    url = f"http://127.0.0.1:{port}" + (f"/{prefix}" if prefix else "")
    log = log_dir / f"flower-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ROOT / "bin" / "flower")], cwd=ROOT, env=process_env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    flower = Flower(process, url, login, log)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"bin/flower exited at start:\n{flower.output()}")
        response = get(f"{url}/healthcheck")
        return response is not None and response.status_code == 200

    try:
        wait_for(answers, timeout=90, what="bin/flower to answer /healthcheck")
        yield flower
    except BaseException:
        print(f"--- flower log {log} ---\n{flower.output()[-20000:]}")
        raise
    finally:
        flower.stop()


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
