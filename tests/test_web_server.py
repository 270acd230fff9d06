"""The real web server (bin/web, as the Procfile runs it) against slow clients. Under a load of
enqueues: tests/example/test_load.py."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from django.db import connection

from tests.support import running_web

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SLOW_CLIENTS = 12  # more than bin/web has threads
#: What slow clients send before they stall: less of a body than announced, or half the headers.
STALLED_REQUESTS = (
    b"POST /api/jobs/0f1c0000-0000-4000-8000-000000000000/cancel/ HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 1000\r\n\r\n{"upto": ',
    b"GET /healthz HTTP/1.1\r\nHost: 127.0",
)


def closed_by_server(conn: socket.socket, *, within: float) -> bool:
    """Whether the server closes ``conn`` (an answer first is fine) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            if conn.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def test_slow_clients_neither_starve_the_web_app_nor_hold_a_connection_for_ever(
    tmp_path: Path,
) -> None:
    """Clients that stop halfway through a request: /healthz still answers at once, and the
    server closes their connections after WEB_TIMEOUT seconds without data."""
    with running_web(log_dir=tmp_path, env={"WEB_TIMEOUT": "3"}) as web:
        slow = [socket.create_connection(("127.0.0.1", web.port)) for _ in range(SLOW_CLIENTS)]
        try:
            for i, conn in enumerate(slow):
                conn.sendall(STALLED_REQUESTS[i % len(STALLED_REQUESTS)])
            time.sleep(1)  # the server has taken them all by now
            took = []
            with httpx.Client(base_url=web.url, timeout=30) as http:
                for _ in range(5):
                    started = time.monotonic()
                    assert http.get("/healthz").status_code == 200
                    took.append(time.monotonic() - started)
            assert max(took) < 3, (
                f"/healthz took {max(took):.1f} s behind {SLOW_CLIENTS} slow clients"
            )
            stalled = time.monotonic()
            for conn in slow:
                assert closed_by_server(conn, within=30), "a stalled connection was kept open"
            closed = time.monotonic() - stalled + 1  # + the second they were given above
            print(f"/healthz behind {SLOW_CLIENTS} stalled requests: slowest {max(took):.3f} s;")
            print(f"the stalled connections closed {closed:.1f} s after they stalled")
        finally:
            for conn in slow:
                conn.close()


def web_backends() -> set[int]:
    """PostgreSQL backends on the test database other than this process's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="counts PostgreSQL backends; CI runs the suite on PostgreSQL",
)
def test_the_web_app_keeps_its_database_connections_across_requests(tmp_path: Path) -> None:
    with running_web(log_dir=tmp_path) as web, httpx.Client(base_url=web.url) as http:
        for _ in range(20):
            assert http.get("/healthz").status_code == 200
        first = web_backends()
        for _ in range(40):
            assert http.get("/healthz").status_code == 200
        assert first and web_backends() == first


def test_a_body_over_the_limit_is_refused_from_its_length_before_it_is_read(
    tmp_path: Path,
) -> None:
    """waitress buffered a body up to 1 GB before Django saw the request: an image upload's 413
    came after the whole body was read, and Django wrote it to a temporary file again."""
    with running_web(log_dir=tmp_path, env={"WEB_MAX_REQUEST_BYTES": "1000000"}) as web:
        conn = socket.create_connection(("127.0.0.1", web.port))
        try:
            conn.sendall(
                b"POST /api/images/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 50000000\r\n\r\n"
                + b"x"
                * 1000
            )
            conn.settimeout(10)
            assert conn.recv(65536).startswith(b"HTTP/1.1 413 ")
        finally:
            conn.close()
        with httpx.Client(base_url=web.url, timeout=30) as http:
            small = http.post("/api/images/", content=b"x" * 1000)
        assert small.status_code != 413  # under the limit: Django answers, for its own reasons
