"""Flower as the Procfile runs it (bin/flower): a login on every page and on /metrics, the URL
prefix a reverse proxy needs, a cap on the tasks it keeps, its state kept across a restart and
an unreadable state file survived; and, in Debian's Chromium, a stranger refused and a job that
just ran shown after the login."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from django.db import transaction
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from app.enqueue import job_enqueue
from config.celery import app as celery_app
from tests import jobs
from tests.browser import Screenshots, document_status
from tests.support import ROOT, Broker, Flower, running_flower, running_worker, wait_for

# Every page and API of Flower's own routes, one of each kind.
PAGES = ("/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks", "/metrics")


def bin_flower(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    return subprocess.run(
        [str(ROOT / "bin" / "flower")], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_bin_flower_will_not_start_without_a_login() -> None:
    """No login configured, or the example's password left in: Flower would be open, or open to
    anyone who read .env.example. It refuses before starting anything."""
    for env in ({}, {"FLOWER_BASIC_AUTH": "admin:generate-me"}):
        done = bin_flower(env)
        assert done.returncode == 1, (env, done.stdout, done.stderr)
        assert "FLOWER_BASIC_AUTH" in done.stderr
    # OAuth without a provider: Flower would start, and answer its login page with a 404.
    done = bin_flower({"FLOWER_AUTH": ".*@example.com"})
    assert done.returncode == 1 and "FLOWER_AUTH_PROVIDER" in done.stderr, done.stderr


@pytest.mark.slow
def test_flower_wants_the_login_everywhere_but_its_health_check(tmp_path: Path) -> None:
    """/metrics too (Flower leaves it open: config/flowerconfig.py), with the same login;
    Prometheus's own parser reads what it serves then."""
    with running_flower(log_dir=tmp_path) as flower:
        user, password = flower.login
        for path in PAGES:
            assert flower.get(path, login=False).status_code == 401, path
            wrong = flower.get(path, login=False, auth=(user, password + "x"))
            assert wrong.status_code == 401, path
            assert flower.get(path).status_code == 200, path
        refused = flower.get("/metrics", login=False)
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
        assert "flower_" not in refused.text
        families = {f.name for f in text_string_to_metric_families(flower.get("/metrics").text)}
        assert {"flower_events", "flower_worker_online", "flower_task_runtime_seconds"} <= families
        health = flower.get("/healthcheck", login=False)
        assert (health.status_code, health.text) == (200, "OK")


@pytest.mark.slow
def test_flower_behind_a_proxy_prefix_keeps_its_login(tmp_path: Path) -> None:
    """FLOWER_URL_PREFIX, as the README's reverse-proxy setup uses it: every route moves under
    the prefix, the login and the /metrics guard with it, and the page's links follow."""
    with running_flower(log_dir=tmp_path, env={"FLOWER_URL_PREFIX": "flower"}) as flower:
        assert flower.url.endswith("/flower")
        for path in ("/", "/tasks", "/metrics"):
            assert flower.get(path, login=False).status_code == 401, path
            assert flower.get(path).status_code == 200, path
        assert 'href="/flower/static/' in flower.get("/").text
        unprefixed = flower.get("/metrics", login=False, base=flower.url.removesuffix("/flower"))
        assert unprefixed.status_code == 404


@pytest.mark.slow
def test_flower_with_oauth_sends_strangers_to_its_login(tmp_path: Path) -> None:
    """OAuth instead of basic auth, set up as the README says (FLOWER_BASIC_AUTH left empty):
    pages and /metrics send an anonymous visitor to Flower's login, which goes to the provider."""
    env = {
        "FLOWER_BASIC_AUTH": "",
        "FLOWER_AUTH": ".*@example.com",
        "FLOWER_AUTH_PROVIDER": "flower.views.auth.GithubLoginHandler",
        "FLOWER_OAUTH2_KEY": "flower-client-id",
        "FLOWER_OAUTH2_SECRET": "not-used-here",
        "FLOWER_OAUTH2_REDIRECT_URI": "https://flower.example.com/login",
    }
    with running_flower(log_dir=tmp_path, env=env) as flower:
        for path in ("/", "/tasks", "/api/tasks", "/metrics"):
            response = flower.get(path, login=False)
            assert response.status_code == 302, path
            assert response.headers["Location"].startswith("/login?next="), path
        login = flower.get("/login", login=False)
        assert login.status_code == 302
        assert login.headers["Location"].startswith("https://github.com/login/oauth/authorize?")
        assert "client_id=flower-client-id" in login.headers["Location"]


def task_states(flower: Flower) -> dict[str, str]:
    return {task_id: task["state"] for task_id, task in flower.tasks().items()}


@pytest.mark.slow
def test_flower_keeps_its_last_tasks_across_a_restart_and_survives_a_broken_state_file(
    broker: Broker, tmp_path: Path
) -> None:
    """FLOWER_MAX_TASKS caps what Flower holds (the oldest go first); a clean stop saves them and
    the next start shows them before any new event; a torn state file (a crash mid-write on a
    filesystem without atomic rename, a disk full) is moved aside and Flower starts empty, instead
    of crashing at every start as flower#1398 and #1403 report of earlier versions."""
    env = {"FLOWER_MAX_TASKS": "3"}
    state_dir = tmp_path / "flower"
    with running_worker(log_dir=tmp_path) as worker:
        with running_flower(log_dir=tmp_path, env=env) as flower:
            wait_for(lambda: flower.sees_worker(worker.hostname), what="Flower to see the worker")
            sent = [celery_app.send_task("tests.jobs.noop").id for _ in range(5)]

            def settled() -> dict[str, str] | None:
                """Flower's tasks once the last job succeeded and it holds no unfinished one."""
                states = task_states(flower)
                done = states.get(sent[-1]) == "SUCCESS" and set(states.values()) == {"SUCCESS"}
                return states if done else None

            kept = wait_for(settled, what="Flower to see the last job succeed")
            assert len(kept) == 3, kept  # the other two were dropped: the cap holds
            assert set(kept) <= set(sent), kept
        assert list(state_dir.iterdir()), "no state file written at the stop"

        with running_flower(log_dir=tmp_path, env=env) as flower:
            assert task_states(flower) == kept  # read back from the file, before any event

    for path in state_dir.iterdir():
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] + b"\x00garbage{")
    with running_flower(log_dir=tmp_path, env=env) as flower:
        assert task_states(flower) == {}
        assert "moving it aside and starting fresh" in flower.output()
    assert any(path.name.endswith(".corrupt") for path in state_dir.iterdir())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_flower_in_chromium_refuses_a_stranger_and_shows_a_job_after_login(
    broker: Broker, browser: WebDriver, screenshots: Screenshots, tmp_path: Path
) -> None:
    """The worker is started as the Procfile's are, with task events on from its first job
    (CELERY_WORKER_SEND_TASK_EVENTS, no -E needed); Flower learns of the job from those events."""
    with running_worker(log_dir=tmp_path) as worker, running_flower(log_dir=tmp_path) as flower:
        wait_for(lambda: flower.sees_worker(worker.hostname), what="Flower to see the worker")
        with transaction.atomic():
            job_id = job_enqueue(jobs.tracked_record, kwargs={"path": str(tmp_path / "events")})
        wait_for(lambda: task_states(flower).get(job_id) == "SUCCESS", what="the job to succeed")

        browser.get(flower.url + "/")
        assert document_status(browser) == 401
        assert browser.find_element(By.TAG_NAME, "body").text == ""  # nothing of Flower shown
        screenshots("flower-anonymous")

        # The login in the URL: what the browser sends once a user typed it into its prompt
        # (headless Chromium has no prompt), for the page and for the page's own requests.
        user, password = flower.login
        logged_in = flower.url.replace("http://", f"http://{user}:{password}@", 1)
        browser.get(logged_in + "/tasks")
        assert document_status(browser) == 200
        row = wait_for(
            lambda: next(
                (r for r in browser.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr")
                 if job_id in r.text), None,
            ),
            what="the job in Flower's task list",
        )  # fmt: skip
        assert "SUCCESS" in row.text and jobs.tracked_record.name in row.text, row.text
        screenshots("flower-tasks")

        browser.get(f"{logged_in}/task/{job_id}")
        page = browser.find_element(By.TAG_NAME, "body").text
        assert job_id in page and jobs.tracked_record.name in page and "SUCCESS" in page, page
        screenshots("flower-task")
