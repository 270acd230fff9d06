"""GET /metrics: what Prometheus reads, from the real RabbitMQ and PostgreSQL, behind its token;
and the Grafana dashboard and alert rules that use it, checked against what it exposes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.db import transaction
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pytest_django.fixtures import Settings

from app.enqueue import job_enqueue
from app.metrics import SETTLE
from app.models import JobRecord, JobStatus, JobTally, JobTallyMark
from app.records import records_prune
from app.views.metrics import bearer_token_matches
from config.celery import app as celery_app
from tests import jobs
from tests.support import ROOT, Broker, free_port, job_ended, running_worker, wait_for
from tests.test_settings import manage

pytestmark = [pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-token-for-the-tests-" + "a1B2" * 8
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
RULES = ROOT / "monitoring" / "alerts.yml"
RULES_TESTS = ROOT / "monitoring" / "alerts.test.yml"


@pytest.fixture
def token(settings: Settings) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


Page = dict[str, list[Sample]]


def scrape(client: Client) -> Page:
    """The page, read by Prometheus' own parser: samples by name (``_total``, ``_bucket``...)."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    page: Page = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            page.setdefault(sample.name, []).append(sample)
    return page


def value(page: Page, metric: str, /, **labels: str) -> float:
    """The value of the one sample of ``name`` with these labels; 0 when there is none (a
    counter of a task that has not run yet)."""
    found = [
        s.value
        for s in page.get(metric, [])
        if all(s.labels.get(key) == wanted for key, wanted in labels.items())
    ]
    assert len(found) <= 1, (metric, labels, found)
    return found[0] if found else 0.0


def delta(before: Page, after: Page, metric: str, /, **labels: str) -> float:
    return value(after, metric, **labels) - value(before, metric, **labels)


# --- The token -----------------------------------------------------------------------------------


def test_without_a_token_configured_metrics_does_not_exist(
    client: Client, settings: Settings
) -> None:
    settings.METRICS_TOKEN = ""
    for headers in (
        {},
        {"HTTP_AUTHORIZATION": "Bearer "},
        {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"},
    ):
        response = client.get("/metrics", **headers)  # type: ignore[arg-type]
        assert response.status_code == 404
        assert b"celery_" not in response.content


def test_a_request_without_the_token_is_refused(client: Client, token: str) -> None:
    for authorization in (
        None,
        "",
        "Bearer",
        f"Bearer {token[:-1]}",
        f"Bearer {token}x",
        f"Basic {token}",
        token,
        f"Bearer {token.upper()}",
    ):
        headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
        response = client.get("/metrics", **headers)  # type: ignore[arg-type]
        assert response.status_code == 401, authorization
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert b"celery_" not in response.content


def test_the_token_is_accepted_as_a_bearer_token_in_any_case_and_spacing() -> None:
    for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"  BEARER   {TOKEN}  "):
        assert bearer_token_matches(authorization, TOKEN)


@hypothesis_settings(max_examples=500)
@given(st.text())
def test_no_header_is_an_error_and_only_the_token_opens(authorization: str) -> None:
    """Any text a client may send is an answer, never an exception; it opens only if it holds
    the token after a Bearer scheme."""
    opened = bearer_token_matches(authorization, TOKEN)
    if opened:
        scheme, _, rest = authorization.strip().partition(" ")
        assert scheme.lower() == "bearer"
        assert rest.strip() == TOKEN


@hypothesis_settings(max_examples=300)
@given(st.text(min_size=1), st.integers(min_value=0, max_value=len(TOKEN) - 1))
def test_a_token_changed_anywhere_is_refused(insert: str, at: int) -> None:
    lengthened = TOKEN[:at] + insert + TOKEN[at:]
    if lengthened.strip() != TOKEN:  # not merely padded with spaces
        assert not bearer_token_matches(f"Bearer {lengthened}", TOKEN)
    assert not bearer_token_matches(f"Bearer {TOKEN[:at]}", TOKEN)
    replaced = TOKEN[:at] + insert[0] + TOKEN[at + 1 :]
    assert bearer_token_matches(f"Bearer {replaced}", TOKEN) == (replaced == TOKEN)


def test_an_empty_token_matches_nothing() -> None:
    assert not bearer_token_matches("Bearer ", "")
    assert not bearer_token_matches("Bearer", "")


@hypothesis_settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(max_codepoint=255), max_size=80))
def test_through_the_view_any_authorization_header_is_refused_cleanly(
    client: Client, token: str, authorization: str
) -> None:
    """As a WSGI server hands it over (a latin-1 string): a 401, never a server error."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 401


def test_a_metrics_token_that_is_short_or_unsendable_stops_the_start() -> None:
    for bad in ("short", "x" * 40 + " y", "é" * 40):
        result = manage("check", env={"METRICS_TOKEN": bad})
        assert result.returncode != 0
        assert "METRICS_TOKEN must be 32 or more" in result.stderr
        assert bad not in result.stderr  # a secret is never printed
    assert manage("check", env={"METRICS_TOKEN": TOKEN}).returncode == 0


# --- Queues --------------------------------------------------------------------------------------


def test_depth_and_oldest_age_of_a_queue_the_test_filled(
    client: Client, token: str, broker: Broker, events: Path
) -> None:
    with transaction.atomic():
        for _ in range(3):
            job_enqueue(jobs.tracked_record, args=[str(events)])
    wait_for(lambda: broker.depth("default") == 3, what="3 messages in default")
    time.sleep(1.5)
    page = scrape(client)
    assert value(page, "celery_queue_length", queue_name="default") == 3
    assert value(page, "celery_active_consumer_count", queue_name="default") == 0
    assert 1.5 <= value(page, "jobs_queue_oldest_age_seconds", queue_name="default") < 60
    # The other queues and the dead-letter queues are there, empty.
    assert value(page, "celery_queue_length", queue_name="email") == 0
    assert value(page, "jobs_queue_oldest_age_seconds", queue_name="email") == 0
    assert value(page, "celery_queue_length", queue_name="default.dead") == 0
    assert value(page, "jobs_metrics_source_up", source="broker") == 1
    assert value(page, "jobs_metrics_source_up", source="database") == 1


def test_a_job_enqueued_for_later_waits_from_its_eta(
    client: Client, token: str, broker: Broker, events: Path
) -> None:
    with transaction.atomic():
        job_enqueue(
            jobs.tracked_record, args=[str(events)], eta=timezone.now() + timedelta(minutes=5)
        )
    wait_for(lambda: broker.depth("default") == 1, what="the message in default")
    time.sleep(1)
    page = scrape(client)
    assert value(page, "jobs_queue_oldest_age_seconds", queue_name="default") == 0


def test_dead_letter_queue_depth_and_age_after_a_job_died(
    client: Client, token: str, broker: Broker, events: Path, tmp_path: Path
) -> None:
    with running_worker(log_dir=tmp_path):
        job = jobs.permanent.delay(str(events))
        wait_for(lambda: broker.depth("default.dead") == 1, what="a message in default.dead")
    time.sleep(1.5)
    page = scrape(client)
    assert value(page, "celery_queue_length", queue_name="default.dead") == 1
    assert 1.5 <= value(page, "jobs_queue_oldest_age_seconds", queue_name="default.dead") < 60
    # Reading its age gave the message back, as it was.
    assert broker.depth("default.dead") == 1
    message = broker.get("default.dead")
    assert message is not None
    assert message.headers["id"] == job.id
    assert message.headers["x-death"][0]["count"] == 1


def test_consumers_and_job_outcomes_after_jobs_ran(
    client: Client, token: str, broker: Broker, events: Path, tmp_path: Path
) -> None:
    before = scrape(client)  # the first scrape sets the tally's mark: counting starts here
    with running_worker(queues_="default,email", log_dir=tmp_path):
        page = scrape(client)
        assert value(page, "celery_active_consumer_count", queue_name="default") == 1
        assert value(page, "celery_active_consumer_count", queue_name="email") == 1
        assert value(page, "celery_active_consumer_count", queue_name="api") == 0
        with transaction.atomic():
            ids = [
                job_enqueue(jobs.tracked_record, args=[str(events)]),
                job_enqueue(jobs.tracked_record, args=[str(events)], kwargs={"sleep": 1.0}),
                job_enqueue(jobs.tracked_flaky, args=[str(events)], kwargs={"failures": 2}),
                job_enqueue(jobs.count_slowly, args=[0]),  # a PermanentError: dead
            ]
        for job_id in ids:
            job_ended(job_id)
    after = scrape(client)
    task = {"name": jobs.tracked_record.name, "queue_name": "default"}
    assert delta(before, after, "celery_task_succeeded_total", **task) == 2
    assert delta(before, after, "celery_task_failed_total", **task) == 0
    assert delta(before, after, "celery_task_runtime_count", **task) == 2
    assert delta(before, after, "celery_task_runtime_bucket", le="0.75", **task) == 1
    assert delta(before, after, "celery_task_runtime_bucket", le="+Inf", **task) == 2
    assert 1.0 <= delta(before, after, "celery_task_runtime_sum", **task) < 10
    flaky = {"name": jobs.tracked_flaky.name, "queue_name": "default"}
    assert delta(before, after, "celery_task_succeeded_total", **flaky) == 1
    assert delta(before, after, "celery_task_retried_total", **flaky) == 2
    dead = {"name": jobs.count_slowly.name, "queue_name": "default"}
    assert delta(before, after, "celery_task_failed_total", **dead) == 1
    assert delta(before, after, "celery_task_succeeded_total", **dead) == 0
    assert value(after, "celery_queue_length", queue_name="default.dead") == 1


# --- Counters that outlive the records -----------------------------------------------------------


def ended_record(*, finished_ago: timedelta, status: str = JobStatus.SUCCEEDED) -> JobRecord:
    """A record that ended ``finished_ago``, after two attempts of which the last took 3 s; a
    cancelled one never started."""
    finished = timezone.now() - finished_ago
    started = status != JobStatus.CANCELLED
    return JobRecord.objects.create(
        task_name="tasks.example.pruned",
        queue="default",
        status=status,
        attempts=2 if started else 0,
        started_at=finished - timedelta(seconds=3) if started else None,
        finished_at=finished,
    )


def test_pruning_records_never_makes_a_counter_go_down(
    client: Client, token: str, broker: Broker
) -> None:
    JobTallyMark.objects.create(id=1, folded_before=timezone.now() - timedelta(hours=3))
    for _ in range(3):
        ended_record(finished_ago=timedelta(hours=2))
    ended_record(finished_ago=timedelta(hours=2), status=JobStatus.DEAD)
    ended_record(finished_ago=timedelta(hours=2), status=JobStatus.CANCELLED)
    task = {"name": "tasks.example.pruned", "queue_name": "default"}

    first = scrape(client)
    assert value(first, "celery_task_succeeded_total", **task) == 3
    assert value(first, "celery_task_failed_total", **task) == 1
    assert value(first, "celery_task_revoked_total", **task) == 1
    assert value(first, "celery_task_retried_total", **task) == 4
    assert value(first, "celery_task_runtime_count", **task) == 3
    assert value(first, "celery_task_runtime_sum", **task) == pytest.approx(9)
    assert value(first, "celery_task_runtime_bucket", le="5.0", **task) == 3
    assert value(first, "celery_task_runtime_bucket", le="2.5", **task) == 0
    # Folded into the tally, up to SETTLE ago.
    assert JobTally.objects.get(task_name="tasks.example.pruned").succeeded == 3
    mark = JobTallyMark.objects.get(id=1).folded_before
    assert timezone.now() - SETTLE - timedelta(seconds=30) < mark <= timezone.now() - SETTLE

    assert records_prune(before=timezone.now() - timedelta(hours=1)) == 5
    ended_record(finished_ago=timedelta(seconds=1))  # counted live, not folded yet
    second = scrape(client)
    assert value(second, "celery_task_succeeded_total", **task) == 4
    assert value(second, "celery_task_failed_total", **task) == 1
    assert value(second, "celery_task_revoked_total", **task) == 1
    assert value(second, "celery_task_runtime_count", **task) == 4
    third = scrape(client)  # scraping again counts nothing twice
    assert value(third, "celery_task_succeeded_total", **task) == 4


def test_records_that_ended_before_the_first_scrape_are_not_counted(
    client: Client, token: str, broker: Broker
) -> None:
    """Counting starts at the first scrape: a deployment with millions of old records does
    not read them all at once."""
    ended_record(finished_ago=timedelta(minutes=5))
    page = scrape(client)
    assert value(page, "celery_task_succeeded_total", name="tasks.example.pruned") == 0
    ended_record(finished_ago=timedelta(seconds=0))
    page = scrape(client)
    assert value(page, "celery_task_succeeded_total", name="tasks.example.pruned") == 1


# --- When a source is down -----------------------------------------------------------------------


def test_with_rabbitmq_unreachable_the_page_says_so_and_keeps_the_rest(
    client: Client, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        celery_app.conf, "broker_read_url", f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    )
    page = scrape(client)
    assert value(page, "jobs_metrics_source_up", source="broker") == 0
    assert value(page, "jobs_metrics_source_up", source="database") == 1
    assert "celery_queue_length" not in page
    assert "jobs_outbox_backlog" in page


# --- The dashboard and the alert rules -----------------------------------------------------------

#: PromQL words that are not metric names.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "offset", "bool", "inf", "nan"}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    keywords, label names (in braces, or after by/on...), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w$:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        if match.group(2) is None and match.group(1) not in PROMQL_KEYWORDS:
            names.add(match.group(1))
    return names


def test_promql_metric_names_finds_metrics_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, name) (rate(a_bucket{name=~"$task", x!="b c"}[5m])))'
        " > 0.5 and on (queue_name) b_total offset 5m unless c == bool 1e3"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c"}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = list(dashboard["panels"])
    queries: list[str] = []
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        queries += [target["expr"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            # label_values(METRIC{...}, label): the metric only.
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            queries.append(match.group(1) if match else query)
    return queries


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def exposed_names(client: Client) -> set[str]:
    """Every sample name the page can have, from its families' types (a counter of a task that
    never ran has no sample yet, but its family is there)."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(response.content.decode())
        for suffix in suffixes.get(family.type, [""])
    }


def test_every_metric_the_dashboard_and_alert_rules_read_is_exposed(
    client: Client, token: str, broker: Broker
) -> None:
    exposed = exposed_names(client)
    assert {"celery_queue_length", "celery_task_failed_total", "celery_task_runtime_bucket"} <= (
        exposed
    )
    rule_tests = yaml.safe_load(RULES_TESTS.read_text())["tests"]
    for source, queries in (
        ("dashboard", dashboard_queries()),
        ("rules", [rule["expr"] for rule in rules()]),
        ("rules' tests", [s["series"] for test in rule_tests for s in test["input_series"]]),
    ):
        used = set().union(*(promql_metric_names(query) for query in queries))
        assert len(used) >= 5, (source, used)
        assert used <= exposed, f"{source} reads what /metrics lacks: {sorted(used - exposed)}"


def test_the_alert_rules_file_is_well_formed() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    names = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"], group
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            names.append(rule["alert"])
            assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
            expr = rule["expr"]
            for opening, closing in ("()", "[]", "{}"):
                assert expr.count(opening) == expr.count(closing), (rule["alert"], opening)
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert {"summary", "description"} <= set(rule["annotations"])
    assert len(names) == len(set(names))


def test_promtool_accepts_the_alert_rules_and_they_fire_as_their_tests_say() -> None:
    """``promtool test rules``: each rule against made-up series (monitoring/alerts.test.yml),
    firing or not, with its labels and annotations as written. Skipped on a laptop without
    promtool; CI unpacks it and sets REQUIRE_PROMTOOL=1, which makes its absence a failure."""
    if shutil.which("promtool") is None:
        if os.environ.get("REQUIRE_PROMTOOL", "") not in {"", "0"}:
            pytest.fail("promtool is not on PATH and REQUIRE_PROMTOOL is set (.ci/run unpacks it)")
        pytest.skip("promtool is not installed")
    for command in (["check", "rules", str(RULES)], ["test", "rules", str(RULES_TESTS)]):
        result = subprocess.run(
            ["promtool", *command], capture_output=True, text=True, timeout=60, cwd=RULES.parent
        )
        assert result.returncode == 0, result.stdout + result.stderr
