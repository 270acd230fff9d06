"""Worker command lines and processes.

The template's workers run with exactly the arguments of ``bin/worker-io`` and ``bin/worker-cpu``:
the script itself is run by ``sh`` with a stand-in ``celery`` on PATH that prints what it was
given, so flags and ``${VAR:-default}`` values follow the scripts as people edit them. Only
``--queues`` is replaced (by the one queue the bench fills) and the bench's own flags appended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Added to every bench worker, bare or template, to shorten startup.
COMMON_FLAGS = ("--without-mingle", "--without-gossip")
_ECHO = '#!/bin/sh\nfor arg in "$@"; do printf "%s\\0" "$arg"; done\n'


def script_args(script: str, env: Mapping[str, str]) -> list[str]:
    """The arguments ``bin/<script>`` passes to ``celery``, under ``env``."""
    with tempfile.TemporaryDirectory() as fake_bin:
        fake = Path(fake_bin, "celery")
        fake.write_text(_ECHO)
        fake.chmod(0o755)
        out = subprocess.run(
            ["sh", str(ROOT / "bin" / script)],
            env={**env, "PATH": f"{fake_bin}:{env.get('PATH', '')}"},
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    return [arg.decode() for arg in out.split(b"\0")[:-1]]


def replace_option(args: Sequence[str], option: str, value: str) -> list[str]:
    """``args`` with the value of ``option`` (given as ``--opt value``) replaced."""
    if option not in args:
        raise ValueError(f"{option} not in {list(args)}")
    result = list(args)
    result[result.index(option) + 1] = value
    return result


def template_worker_argv(script: str, *, queue: str, env: Mapping[str, str]) -> list[str]:
    args = replace_option(script_args(script, env), "--queues", queue)
    return [*args, "--include", "tests.bench.noop", *COMMON_FLAGS]


def bare_worker_argv(
    *, pool: str, concurrency: int, loglevel: str, extra: Sequence[str] = ()
) -> list[str]:
    return [
        "-A", "tests.bench.bare_app", "worker", "--hostname", "bare@%h",
        "--pool", pool, "--concurrency", str(concurrency), "--loglevel", loglevel,
        *extra, *COMMON_FLAGS,
    ]  # fmt: skip


@contextmanager
def running(
    argv: Sequence[str], *, env: Mapping[str, str], log: Path, grace: float = 1.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m celery ARGV`` in its own session; stopped on exit, however the block ends:
    SIGTERM to the main process (warm shutdown), then after ``grace`` seconds SIGKILL to whatever
    is left of the group. The bench has nothing to lose by then (every message was acked), and an
    idle prefork worker's warm shutdown takes ~3 s, so ``grace`` is short."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", *argv],
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process, grace)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and every process below it, including
    the children they already reaped (from /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state, ppid, ...
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(value) for value in fields[11:15]) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(member, 0.0) for member in tree)


def stop(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
