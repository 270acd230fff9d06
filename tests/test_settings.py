"""Security defaults: production settings pass `check --deploy`; the wire is JSON only; Sentry
starts only with a DSN and then receives a failed job with its task context."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.celery import app as celery_app
from tests import jobs
from tests.sentry import SentryStandIn
from tests.support import ROOT, Broker, running_worker, wait_for

PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-9f8e7d6c",
    "DJANGO_ALLOWED_HOSTS": "jobs.example.com",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SENTRY_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_production_settings_pass_check_deploy() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr + result.stdout


def test_check_deploy_flags_the_development_secret_key() -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout


def test_a_malformed_boolean_setting_is_a_clear_error() -> None:
    result = manage("check", env={"DJANGO_DEBUG": "maybe"})
    assert result.returncode != 0
    assert "DJANGO_DEBUG='maybe' is not a boolean" in result.stderr


def test_a_site_url_with_a_path_or_no_scheme_is_a_clear_error() -> None:
    for value in ("example.com", "https://example.com/app"):
        result = manage("check", env={"SITE_URL": value})
        assert result.returncode != 0
        assert f"SITE_URL={value!r} is not a scheme and host" in result.stderr


def test_the_wire_is_json_only() -> None:
    assert celery_app.conf.accept_content == ["json"]
    assert celery_app.conf.task_serializer == "json"
    assert celery_app.conf.result_serializer == "json"


def test_sentry_stays_off_without_a_dsn() -> None:
    code = "import django; django.setup(); import sentry_sdk; print(sentry_sdk.is_initialized())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SENTRY_DSN": ""},
    )  # fmt: skip
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.slow
def test_a_failed_job_reaches_sentry_with_its_task_context(
    broker: Broker, events: Path, tmp_path: Path, sentry: SentryStandIn
) -> None:
    with running_worker(log_dir=tmp_path, env={"SENTRY_DSN": sentry.dsn}):
        result = jobs.permanent.delay(str(events))
        envelope: str = wait_for(
            lambda: next((e for e in sentry.envelopes if "PermanentError" in e), None),
            what="the failure to reach the Sentry stand-in",
        )
    assert "this input can never work" in envelope
    assert result.id in envelope
    assert "tests.jobs.permanent" in envelope
