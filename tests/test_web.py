"""GET /healthz reports the database and the broker, 503 when one is down."""

from __future__ import annotations

import pytest
from django.test import Client

from config.celery import app as celery_app


@pytest.fixture
def broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this process's Celery app at a port nothing listens on.

    Celery reads CELERY_BROKER_URL from the environment before its configuration.
    """
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:1//")
    assert celery_app.conf.broker_url.endswith(":1//")


@pytest.mark.django_db
def test_healthz_is_ok_when_database_and_broker_answer(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_down(client: Client, broker_down: None) -> None:
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert "refused" in body["checks"]["broker"].lower()


def test_healthz_is_503_when_the_database_is_down(client: Client) -> None:
    # Without the django_db mark, pytest-django blocks database access: the check must fail.
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "ok"
    assert response.json()["checks"]["database"] != "ok"


def test_healthz_only_answers_get(client: Client) -> None:
    assert client.post("/healthz").status_code == 405
