"""The jobs API, the jobs page and the admin actions: who sees what, bad input, and the whole path
(request, record, worker, progress, result) on the real broker with a real worker."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from app.enqueue import job_enqueue
from app.models import JobRecord, JobStatus, OutboxMessage
from tests import jobs
from tests.support import Broker, running_worker, wait_for

CHANGELIST = "/admin/app/jobrecord/"

pytestmark = pytest.mark.usefixtures("development_http")


def user(name: str, *, staff: bool = False) -> User:
    return User.objects.create_user(name, password="pw-" + name, is_staff=staff)


def logged_in(who: User | None) -> Client:
    client = Client()
    if who is not None:
        client.force_login(who)
    return client


def job(*, owner: User | None = None, **fields: Any) -> JobRecord:
    defaults: dict[str, Any] = {
        "task_name": "tests.jobs.count_slowly",
        "queue": "default",
        "summary": "upto=10",
        "payload": {"args": [], "kwargs": {"upto": 10}},
    }
    return JobRecord.objects.create(owner=owner, **{**defaults, **fields})


def get_json(client: Client, url: str, status: int) -> Any:
    response = client.get(url)
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    return response.json()


# --- GET /api/jobs/<id>/ ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_job_reads_as_json_with_its_status_progress_and_result() -> None:
    alice = user("alice")
    record = job(
        owner=alice,
        status=JobStatus.FAILED,
        progress=40,
        progress_message="4 of 10",
        attempts=2,
        result={"partial": 4},
        error="ValueError: boom",
        traceback="Traceback (most recent call last): ...",
        correlation_id="req-1",
    )
    body = get_json(logged_in(alice), f"/api/jobs/{record.id}/", 200)
    assert body["id"] == str(record.id)
    assert body["task"] == "tests.jobs.count_slowly"
    assert (body["queue"], body["summary"]) == ("default", "upto=10")
    assert (body["status"], body["progress"], body["progress_message"]) == ("failed", 40, "4 of 10")
    assert (body["attempts"], body["result"]) == (2, {"partial": 4})
    assert body["error"] == "ValueError: boom"
    assert body["enqueued_at"].startswith(str(record.enqueued_at.date()))
    assert body["started_at"] is None and body["finished_at"] is None
    assert (body["correlation_id"], body["replay_of"], body["cancel_requested"]) == (
        "req-1",
        None,
        False,
    )
    assert "traceback" not in body  # only staff see tracebacks
    staff_view = get_json(logged_in(user("sam", staff=True)), f"/api/jobs/{record.id}/", 200)
    assert staff_view["traceback"].startswith("Traceback")


@pytest.mark.django_db
def test_each_user_sees_their_own_jobs_staff_all_and_anyone_an_ownerless_one_by_id() -> None:
    alice, bob, sam = user("alice"), user("bob"), user("sam", staff=True)
    alices, bobs, ownerless = job(owner=alice), job(owner=bob), job()

    def status(who: User | None, record: JobRecord) -> int:
        return logged_in(who).get(f"/api/jobs/{record.id}/").status_code

    assert (status(alice, alices), status(alice, bobs), status(alice, ownerless)) == (200, 404, 200)
    assert (status(bob, alices), status(bob, bobs)) == (404, 200)
    assert (status(sam, alices), status(sam, bobs), status(sam, ownerless)) == (200, 200, 200)
    assert (status(None, alices), status(None, ownerless)) == (404, 200)
    # Someone else's job answers exactly like a job that does not exist: nothing leaks.
    hidden = get_json(logged_in(alice), f"/api/jobs/{bobs.id}/", 404)
    assert hidden == {"error": f"no job {bobs.id}"}


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["nope", "123", "0" * 33, "%20"])
def test_a_malformed_id_is_a_clear_json_404(bad: str) -> None:
    body = get_json(logged_in(None), f"/api/jobs/{bad}/", 404)
    assert "is not a job id (a UUID)" in body["error"]


@pytest.mark.django_db
def test_an_unknown_id_is_a_clear_json_404() -> None:
    unknown = uuid.uuid4()
    assert get_json(logged_in(None), f"/api/jobs/{unknown}/", 404) == {"error": f"no job {unknown}"}


@pytest.mark.django_db
def test_the_job_api_only_answers_get() -> None:
    response = logged_in(None).delete(f"/api/jobs/{uuid.uuid4()}/")
    assert response.status_code == 405
    assert response.json()["error"] == "use GET"


# --- GET /api/jobs/ -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_list_shows_own_jobs_to_users_and_every_job_to_staff() -> None:
    alice, sam = user("alice"), user("sam", staff=True)
    alices, others = job(owner=alice), [job(owner=user("bob")), job()]

    def ids(who: User, query: str = "") -> list[str]:
        return [j["id"] for j in get_json(logged_in(who), f"/api/jobs/{query}", 200)["jobs"]]

    assert ids(alice) == [str(alices.id)]
    assert set(ids(sam)) == {str(alices.id)} | {str(j.id) for j in others}
    assert "traceback" not in get_json(logged_in(sam), "/api/jobs/", 200)["jobs"][0]


@pytest.mark.django_db
def test_the_list_filters_by_status_and_task_newest_first_up_to_the_limit() -> None:
    sam = user("sam", staff=True)
    dead = job(status=JobStatus.DEAD, task_name="tasks.email.send")
    old, new = job(), job()
    client = logged_in(sam)

    def ids(query: str) -> list[str]:
        return [j["id"] for j in get_json(client, f"/api/jobs/{query}", 200)["jobs"]]

    assert ids("?status=dead") == [str(dead.id)]
    assert ids("?task=EMAIL") == [str(dead.id)]
    assert ids("?status=queued") == [str(new.id), str(old.id)]
    assert ids("?limit=1") == [str(new.id)]
    assert ids("?status=succeeded") == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?status=done", "unknown status 'done'; the statuses are queued, started, retrying"),
        ("?limit=0", "limit must be a whole number from 1 to 200"),
        ("?limit=201", "limit must be a whole number from 1 to 200"),
        ("?limit=ten", "limit: Input should be a valid integer"),
    ],
)
def test_a_bad_list_filter_is_a_400_that_says_what_is_allowed(query: str, message: str) -> None:
    body = get_json(logged_in(user("alice")), f"/api/jobs/{query}", 400)
    assert body["error"].startswith(message)


@pytest.mark.django_db
def test_the_list_needs_a_login() -> None:
    body = get_json(logged_in(None), "/api/jobs/", 403)
    assert body == {"error": "log in to list jobs", "login_url": "/admin/login/"}


# --- POST /api/jobs/<id>/cancel/ ---------------------------------------------------------------


@pytest.mark.django_db
def test_the_owner_cancels_a_queued_job_at_once() -> None:
    alice = user("alice")
    record = job(owner=alice)
    response = logged_in(alice).post(f"/api/jobs/{record.id}/cancel/")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("cancelled", True)
    record.refresh_from_db()
    assert record.status == JobStatus.CANCELLED and record.finished_at is not None


@pytest.mark.django_db
def test_a_running_job_is_asked_to_stop() -> None:
    alice = user("alice")
    record = job(owner=alice, status=JobStatus.STARTED)
    body = logged_in(user("sam", staff=True)).post(f"/api/jobs/{record.id}/cancel/").json()
    assert (body["status"], body["cancel_requested"]) == ("started", True)


@pytest.mark.django_db
def test_cancelling_an_ended_job_is_a_409_and_changes_nothing() -> None:
    alice = user("alice")
    record = job(owner=alice, status=JobStatus.SUCCEEDED, progress=100)
    response = logged_in(alice).post(f"/api/jobs/{record.id}/cancel/")
    assert response.status_code == 409
    assert (
        response.json()["error"] == f"job {record.id} already ended (succeeded): nothing to cancel"
    )
    record.refresh_from_db()
    assert (record.status, record.cancel_requested) == (JobStatus.SUCCEEDED, False)


@pytest.mark.django_db
def test_only_the_owner_or_staff_can_cancel() -> None:
    alice, bob = user("alice"), user("bob")
    alices, ownerless = job(owner=alice), job()
    assert logged_in(bob).post(f"/api/jobs/{alices.id}/cancel/").status_code == 404  # not seen
    response = logged_in(bob).post(f"/api/jobs/{ownerless.id}/cancel/")  # seen, not bob's
    assert response.status_code == 403
    assert response.json() == {"error": "only the job's owner or staff can cancel it"}
    assert logged_in(None).post(f"/api/jobs/{ownerless.id}/cancel/").status_code == 403
    assert logged_in(bob).post("/api/jobs/nope/cancel/").status_code == 404
    assert not JobRecord.objects.filter(cancel_requested=True).exists()


@pytest.mark.django_db
def test_cancel_needs_a_csrf_token() -> None:
    alice = user("alice")
    record = job(owner=alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"/api/jobs/{record.id}/cancel/").status_code == 403
    page = client.get("/jobs/")
    token = page.context["csrf_token"]
    response = client.post(f"/api/jobs/{record.id}/cancel/", headers={"X-CSRFToken": str(token)})
    assert response.status_code == 200


@pytest.mark.django_db
def test_the_page_form_without_javascript_cancels_and_comes_back() -> None:
    alice = user("alice")
    record = job(owner=alice)
    client = logged_in(alice)
    response = client.post(
        f"/api/jobs/{record.id}/cancel/", {"next": "/jobs/?status=queued"}, follow=True
    )
    assert response.redirect_chain == [("/jobs/?status=queued", 302)]
    assert f"Job {record.id} cancelled." in response.content.decode()
    # An off-site "next" is ignored: the answer stays JSON.
    other = job(owner=alice)
    response = client.post(f"/api/jobs/{other.id}/cancel/", {"next": "https://evil.example/"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


# --- GET /jobs/ ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_jobs_page_sends_anonymous_visitors_to_the_admin_login() -> None:
    response = logged_in(None).get("/jobs/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/jobs/"


@pytest.mark.django_db
def test_the_jobs_page_lists_own_jobs_with_a_filter() -> None:
    alice = user("alice")
    mine = job(owner=alice, status=JobStatus.STARTED, progress=42)
    ended = job(owner=alice, status=JobStatus.SUCCEEDED, task_name="tasks.other.thing")
    theirs = job(owner=user("bob"))
    page = logged_in(alice).get("/jobs/").content.decode()
    assert f'id="job-{mine.id}"' in page and f'id="job-{ended.id}"' in page
    assert f'id="job-{theirs.id}"' not in page
    assert '<progress max="100" value="42"' in page
    assert '<label for="filter-status">' in page
    filtered = logged_in(alice).get("/jobs/?status=succeeded&task=other").content.decode()
    assert f'id="job-{ended.id}"' in filtered and f'id="job-{mine.id}"' not in filtered
    # The script polls the API with the same filter (json_script escapes the "&").
    assert '"api": "/api/jobs/?status=succeeded\\u0026task=other\\u0026limit=50"' in filtered


@pytest.mark.django_db
def test_the_jobs_page_says_what_is_wrong_with_a_bad_filter() -> None:
    response = logged_in(user("alice")).get("/jobs/?status=bogus")
    assert response.status_code == 400
    assert "unknown status &#x27;bogus&#x27;" in response.content.decode()


# --- admin --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_job_records_are_read_only_in_the_admin(admin_client: Client) -> None:
    record = job(status=JobStatus.DEAD, error="PermanentError: no")
    listing = admin_client.get(CHANGELIST)
    assert listing.status_code == 200 and str(record.id) in listing.content.decode()
    assert admin_client.get(CHANGELIST + "?status__exact=dead&q=count_to").status_code == 200
    page = admin_client.get(f"{CHANGELIST}{record.id}/change/").content.decode()
    assert "PermanentError: no" in page and 'name="_save"' not in page
    admin_client.post(f"{CHANGELIST}{record.id}/change/", {"status": "queued"})
    record.refresh_from_db()
    assert record.status == JobStatus.DEAD
    assert admin_client.get(CHANGELIST + "add/").status_code == 403
    assert admin_client.get("/admin/app/outboxmessage/?state=pending").status_code == 200


@pytest.mark.django_db
def test_replaying_a_job_that_is_not_dead_from_the_admin_says_so_and_changes_nothing(
    admin_client: Client,
) -> None:
    ended = job(status=JobStatus.SUCCEEDED)
    response = admin_client.post(
        CHANGELIST, {"action": "replay_dead", "_selected_action": [str(ended.id)]}, follow=True
    )
    text = response.content.decode()
    assert f"Nothing replayed: job {ended.id} is succeeded, not dead: not replayed" in text
    assert JobRecord.objects.count() == 1 and not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_replaying_a_dead_job_whose_task_is_gone_says_so(
    admin_client: Client, broker: Broker
) -> None:
    gone = job(status=JobStatus.DEAD, task_name="tasks.removed.job")
    response = admin_client.post(
        CHANGELIST, {"action": "replay_dead", "_selected_action": [str(gone.id)]}, follow=True
    )
    assert "Replay stopped: unknown task &#x27;tasks.removed.job&#x27;" in response.content.decode()
    assert JobRecord.objects.count() == 1 and not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_cancelling_from_the_admin(admin_client: Client) -> None:
    queued, running, ended = (
        job(),
        job(status=JobStatus.STARTED),
        job(status=JobStatus.SUCCEEDED),
    )
    ids = [str(r.id) for r in (queued, running, ended)]
    response = admin_client.post(
        CHANGELIST, {"action": "cancel", "_selected_action": ids}, follow=True
    )
    assert (
        "Jobs: 1 cancelled; 1 running, will stop at their next progress report; "
        "1 had already ended, left as they were."
    ) in response.content.decode()
    statuses = {str(r.id): (r.status, r.cancel_requested) for r in JobRecord.objects.all()}
    assert statuses == {
        ids[0]: (JobStatus.CANCELLED, True),
        ids[1]: (JobStatus.STARTED, True),
        ids[2]: (JobStatus.SUCCEEDED, False),
    }


# --- the whole path, with a real worker ---------------------------------------------------------


def worker(log_dir: Path) -> Any:
    """A real worker. The settings fixture hides SETTINGS_MODULE (None under override_settings),
    which running_worker passes on: name the module here."""
    return running_worker(log_dir=log_dir, env={"DJANGO_SETTINGS_MODULE": "config.settings"})


def api_job(client: Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}/")
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_job_through_the_api_stops_it(broker: Broker, tmp_path: Path) -> None:
    alice = user("alice")
    client = logged_in(alice)
    with worker(tmp_path):
        with transaction.atomic():
            job_id = job_enqueue(
                jobs.count_slowly, kwargs={"upto": 50_000, "pause": 0.001}, owner=alice
            )
        wait_for(lambda: api_job(client, job_id)["progress"] > 0, timeout=30, what="the job to run")
        response = client.post(f"/api/jobs/{job_id}/cancel/")
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["cancel_requested"]) == (
            "started",
            True,
        )
        started = time.monotonic()
        wait_for(
            lambda: api_job(client, job_id)["status"] == "cancelled",
            timeout=10,
            what="the job to end cancelled",
        )
        assert time.monotonic() - started < 3  # the next progress report, 0.5 s apart
    final = api_job(client, job_id)
    assert final["progress"] < 100 and final["finished_at"] and final["result"] is None
    assert broker.depth("default") == 0 and broker.depth("default.dead") == 0
    assert client.post(f"/api/jobs/{job_id}/cancel/").status_code == 409


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_replaying_a_dead_job_from_the_admin_links_the_new_job_to_it(
    broker: Broker, tmp_path: Path, admin_client: Client
) -> None:
    with worker(tmp_path):
        with transaction.atomic():
            dead_id = job_enqueue(jobs.count_slowly, kwargs={"upto": 0})  # PermanentError: dead
        wait_for(
            lambda: JobRecord.objects.get(id=dead_id).status == JobStatus.DEAD,
            what="the job to die",
        )
        wait_for(lambda: broker.depth("default.dead") == 1, what="its dead letter")
        response = admin_client.post(
            CHANGELIST, {"action": "replay_dead", "_selected_action": [dead_id]}, follow=True
        )
        replay = JobRecord.objects.get(replay_of_id=uuid.UUID(dead_id))
        assert f"Replayed 1 dead job(s): {dead_id} as" in response.content.decode()
        assert str(replay.id) in response.content.decode()
        assert replay.payload == {"args": [], "kwargs": {"upto": 0}}
        # The replay runs, and dies the same way: its own dead letter replaces the first one.
        wait_for(
            lambda: JobRecord.objects.get(id=replay.id).status == JobStatus.DEAD,
            what="the replay to run",
        )
        wait_for(lambda: broker.depth("default.dead") == 1, what="one dead letter")
    assert api_job(logged_in(None), str(replay.id))["replay_of"] == dead_id
    page = admin_client.get(f"{CHANGELIST}{dead_id}/change/").content.decode()
    assert f"/admin/app/jobrecord/{replay.id}/change/" in page  # "replayed as", a link
