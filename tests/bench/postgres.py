"""PostgreSQL for the benchmark: a fresh, migrated database per scenario run, dropped afterwards.

The first database a run asks for makes a template: ``createdb`` then ``manage.py migrate`` (a few
seconds, once). Each scenario run then gets a copy of it (``CREATE DATABASE ... TEMPLATE``, well
under a second), so rows left by one run never slow down the next. ``session()``, around the whole
bench, drops the template at the end, however the bench ends. The server is the local one
(127.0.0.1:5432, user postgres, trust authentication), with its own settings: the bench measures
the template on PostgreSQL as it is configured, commits flushed to disk included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from tests.bench.workers import ROOT, tree_cpu_seconds

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
_template: list[str] = []  # the template database's name, once made


def url(name: str) -> str:
    return f"postgres://{USER}@{HOST}:{PORT}/{name}"


def psql(sql: str, *, database: str = "postgres") -> str:
    """Run ``sql`` with psql; unaligned, tuples only. Its own session, so that a Ctrl-C meant for
    the bench cannot cut a ``DROP DATABASE`` short."""
    result = subprocess.run(
        ["psql", "-h", HOST, "-p", str(PORT), "-U", USER, "-d", database, "-v", "ON_ERROR_STOP=1",
         "-X", "-q", "-A", "-t", "-c", sql],
        check=True, capture_output=True, text=True, timeout=120, start_new_session=True,
    )  # fmt: skip
    return result.stdout


def _drop(name: str) -> None:
    try:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except subprocess.CalledProcessError as exc:
        print(f"could not drop database {name}: {exc.stderr.strip()}", file=sys.stderr)


def _make_template() -> str:
    name = f"bench_template_{uuid.uuid4().hex[:8]}"
    _template.append(name)  # before creating it: session() drops it even if migrate fails
    psql(f'CREATE DATABASE "{name}"')
    out = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url(name), "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode:
        raise RuntimeError(f"migrate failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return name


@contextmanager
def session() -> Iterator[None]:
    """Around the whole bench: drops the template database at the end, if one was made."""
    try:
        yield
    finally:
        while _template:
            _drop(_template.pop())


@contextmanager
def fresh_database(label: str) -> Iterator[str]:
    """A new database with every migration applied; yields its URL, drops it afterwards (with
    FORCE: connections a killed worker left behind do not keep it)."""
    template = _template[0] if _template else _make_template()
    name = f"bench_{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    try:
        psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        yield url(name)
    finally:
        _drop(name)


def count_by_status(database_url: str) -> dict[str, int]:
    """Job records per status."""
    out = psql("SELECT status, count(*) FROM app_jobrecord GROUP BY status", database=database_url)
    return {status: int(n) for status, _, n in (line.partition("|") for line in out.split())}


@cache
def _postmaster_pid() -> int:
    data_directory = psql("SHOW data_directory").strip()
    return int(Path(data_directory, "postmaster.pid").read_text().split()[0])


def server_cpu_seconds() -> float:
    """CPU time used so far by the server: the postmaster and its processes, the ended
    connections' included (reaped children). Other clients of the server count too."""
    return tree_cpu_seconds(_postmaster_pid())


def sessions(database_url: str) -> int:
    """Connections opened to the database so far (pg_stat_database.sessions, PostgreSQL 14+;
    this query's own included)."""
    sql = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    return int(psql(sql, database=database_url))
