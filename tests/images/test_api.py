"""``POST /api/images/``: what it enqueues and what it refuses at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from app.models import JobRecord, JobStatus
from tests.images.pictures import BAD_MESSAGES, bad_file, encode, photo

URL = "/api/images/"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("development_http", "media")]


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops", is_staff=True))
    return client


def upload(data: bytes, name: str = "photo.jpg") -> dict[str, SimpleUploadedFile]:
    return {"file": SimpleUploadedFile(name, data, content_type="image/jpeg")}


def test_an_upload_is_stored_and_enqueued(media: Path) -> None:
    response = Client().post(URL, upload(encode(photo())))
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status_url"] == f"/api/jobs/{body['id']}/"
    record = JobRecord.objects.get(id=body["id"])
    assert (record.task_name, record.queue, record.status) == (
        "tasks.images.process",
        "images",
        JobStatus.QUEUED,
    )
    source = record.payload["kwargs"]["source"]
    assert source.startswith("images/uploads/") and source.endswith(".jpg")
    assert (media / source).read_bytes() == encode(photo())


def test_a_path_in_storage_is_enqueued_as_json_or_form(media: Path, staff: Client) -> None:
    (media / "in").mkdir()
    (media / "in" / "a.png").write_bytes(encode(photo(), "PNG"))
    as_json = staff.post(URL, {"path": "in/a.png"}, content_type="application/json")
    as_form = staff.post(URL, {"path": "in/a.png"})
    for response in (as_json, as_form):
        assert response.status_code == 202, response.content
        record = JobRecord.objects.get(id=response.json()["id"])
        assert record.payload["kwargs"] == {"source": "in/a.png"}


@pytest.mark.parametrize("name", sorted(set(BAD_MESSAGES) - {"truncated JPEG"}))
def test_a_bad_upload_is_refused_at_once(name: str) -> None:
    response = Client().post(URL, upload(bad_file(name)))
    assert response.status_code == (413 if name == "over the limit" else 400)
    assert BAD_MESSAGES[name] in response.json()["error"]
    assert not JobRecord.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"path": "../etc/passwd"}, 400, "must name a file inside the storage"),
        ({"path": "/etc/passwd"}, 400, "must name a file inside the storage"),
        ({"path": "nowhere.jpg"}, 400, "no file 'nowhere.jpg' in the storage"),
        ({"path": "big.jpg"}, 413, "more than IMAGES_MAX_SOURCE_BYTES"),
        ({"pth": "a.jpg"}, 400, "path: Field required"),
        ({}, 400, "path: Field required"),
    ],
)
def test_a_bad_path_is_refused_at_once(
    media: Path, staff: Client, body: dict[str, str], status: int, message: str
) -> None:
    with (media / "big.jpg").open("wb") as big:
        big.truncate(20 * 1024 * 1024)
    response = staff.post(URL, json.dumps(body), content_type="application/json")
    assert response.status_code == status
    assert message in response.json()["error"]
    assert not JobRecord.objects.exists()


@pytest.mark.parametrize("who", ["anonymous", "a user who is not staff"])
@pytest.mark.parametrize("path", ["in/a.png", "nowhere.jpg", "../etc/passwd"])
def test_only_staff_may_name_a_file_in_the_storage(media: Path, who: str, path: str) -> None:
    """The storage holds other users' uploads and exports: anyone could once have any image in
    it resized and read the variants' links, and learn which files exist from the 400s."""
    (media / "in").mkdir()
    (media / "in" / "a.png").write_bytes(encode(photo(), "PNG"))
    client = Client()
    if who != "anonymous":
        client.force_login(User.objects.create_user("someone"))
    for response in (
        client.post(URL, {"path": path}, content_type="application/json"),
        client.post(URL, {"path": path}),
    ):
        assert response.status_code == 403, response.content
        assert response.json()["error"] == (
            'only staff users may name a file in the storage; upload "file"'
        )
    assert not JobRecord.objects.exists()


def test_a_truncated_jpeg_passes_the_door_its_job_fails() -> None:
    """The endpoint reads headers only (no decoding in a web process): a JPEG cut short is
    found by the job, which fails for good (tests/images/test_worker.py)."""
    assert Client().post(URL, upload(bad_file("truncated JPEG"))).status_code == 202


def test_a_multipart_post_without_file_says_so() -> None:
    response = Client().post(URL, {"other": upload(b"x")["file"]})
    assert response.status_code == 400
    assert '"file"' in response.json()["error"]
