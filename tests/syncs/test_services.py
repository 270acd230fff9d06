"""The sync's logic in this process, against a real local HTTP server: paging, checkpoints,
resuming after a bad page, what is retried and what is not, the URL guard, the lease."""

from __future__ import annotations

import email.utils
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.errors import PermanentError, TransientError
from app.urlguard import UnsafeUrl
from tasks.syncs import services
from tasks.syncs.models import Contact, SyncState
from tasks.syncs.registry import SYNCS, Cursors, Offsets
from tasks.syncs.services import (
    PageInvalid,
    RetryLater,
    SyncError,
    SyncUnknown,
    lease_take,
    page_fetch,
    page_parse,
    rows_upsert,
    sync_get,
    sync_run,
)
from tests.support import Broker
from tests.syncs.remote import RemoteApi, remote_api

pytestmark = pytest.mark.django_db

CONTACTS = SYNCS["contacts"]


@pytest.fixture
def api() -> Iterator[RemoteApi]:
    with (
        remote_api(RemoteApi(pages=30, per_page=10)) as api,
        override_settings(
            OUTGOING_ALLOWED_NETWORKS=["127.0.0.1/32"],
            SYNCS_REMOTES={"contacts": api.url},
            SYNCS_RATES={"contacts": 0},
        ),
    ):
        yield api


def test_a_sync_stores_every_record_once_and_a_second_run_changes_nothing(api: RemoteApi) -> None:
    first = sync_run(name="contacts", job_id="job-1")
    assert first == {"pages": 30, "created": 300, "updated": 0, "unchanged": 0, "failed": 0}
    assert Contact.objects.count() == 300
    assert api.pages_served() == list(range(1, 31))
    second = sync_run(name="contacts", job_id="job-2")
    assert second == {"pages": 30, "created": 0, "updated": 0, "unchanged": 300, "failed": 0}
    api.version = 2
    third = sync_run(name="contacts", job_id="job-3")
    assert (third["updated"], third["unchanged"]) == (300, 0)
    assert Contact.objects.get(external_id="7").name == "Contact 7 v2"


def test_the_same_job_again_after_it_completed_fetches_nothing(api: RemoteApi) -> None:
    sync_run(name="contacts", job_id="job-1")
    served = len(api.hits)
    assert sync_run(name="contacts", job_id="job-1")["created"] == 300
    assert len(api.hits) == served


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"data": [', "not JSON"),
        (b'[{"id": 1}]', "a JSON object was expected, not list"),
        (b'{"items": []}', "no list of records at 'data'"),
        (
            b'{"data": [{"id": 1, "name": "Ann"}], "total_pages": 30}',
            "record 0: missing field 'email'",
        ),
        (b'{"data": [{"id": true, "name": "A", "email": "a@x"}]}', "record 0: TypeError"),
        (b'{"data": [], "total_pages": "many"}', "'total_pages' is not a count"),
    ],
)
def test_a_malformed_page_fails_the_run_naming_it_and_the_next_run_resumes_there(
    api: RemoteApi, body: bytes, named: str
) -> None:
    api.script[13] = [(200, {"Content-Type": "application/json"}, body)]
    with pytest.raises(PageInvalid) as failure:
        sync_run(name="contacts", job_id="job-1")
    assert str(failure.value).startswith("sync contacts, page 13: ")
    assert named in str(failure.value)
    assert Contact.objects.count() == 120  # pages 1 to 12, whole
    state = SyncState.objects.get(name="contacts")
    assert (state.cursor, state.lease_until, state.pages) == (13, None, 12)
    assert named in state.error
    resumed = sync_run(name="contacts", job_id="job-2")
    assert [hit.page for hit in api.hits][12:] == [13, *range(13, 31)]  # the bad one, then on
    assert resumed["created"] == 180 and Contact.objects.count() == 300


def test_a_record_the_mapper_rejects_is_counted_failed_and_the_page_goes_on(
    api: RemoteApi,
) -> None:
    page = json.loads(api.body(2))
    page["data"][3]["email"] = "not an address"
    api.script[2] = [(200, {}, json.dumps(page).encode())]
    result = sync_run(name="contacts", job_id="job-1")
    assert (result["created"], result["failed"]) == (299, 1)


def test_what_is_retried_and_what_is_not(api: RemoteApi) -> None:
    date = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    api.script[1] = [
        (503, {}, b"down"),
        (429, {"Retry-After": "7"}, b""),
        (429, {"Retry-After": date}, b""),
        (429, {}, b""),
        (404, {}, b"gone"),
    ]
    with pytest.raises(TransientError) as failure:
        page_fetch(sync=CONTACTS, cursor=1)
    assert not isinstance(failure.value, RetryLater)
    assert str(failure.value) == "sync contacts, page 1: HTTP 503"
    with pytest.raises(RetryLater) as later:
        page_fetch(sync=CONTACTS, cursor=1)
    assert later.value.delay == 7
    with pytest.raises(RetryLater) as later:
        page_fetch(sync=CONTACTS, cursor=1)
    assert later.value.delay is not None and 27 <= later.value.delay <= 30
    with pytest.raises(RetryLater) as later:
        page_fetch(sync=CONTACTS, cursor=1)
    assert later.value.delay is None  # the job's own backoff
    with pytest.raises(SyncError, match=r"HTTP 404 .* not retried"):
        page_fetch(sync=CONTACTS, cursor=1)


def test_a_timeout_is_transient(api: RemoteApi) -> None:
    api.latency = 1.0
    with override_settings(SYNCS_TIMEOUT=0.2), pytest.raises(TransientError, match="ReadTimeout"):
        from tasks.syncs.services import client_forget

        client_forget()
        try:
            page_fetch(sync=CONTACTS, cursor=1)
        finally:
            client_forget()


def test_a_remote_on_a_loopback_or_private_address_is_refused_without_a_request(
    api: RemoteApi,
) -> None:
    with override_settings(OUTGOING_ALLOWED_NETWORKS=[]):
        with pytest.raises(UnsafeUrl, match=re.escape("127.0.0.1 is a loopback address")):
            sync_run(name="contacts", job_id="job-1")
        with (
            override_settings(SYNCS_REMOTES={"contacts": "http://10.1.2.3/contacts"}),
            pytest.raises(UnsafeUrl, match=re.escape("10.1.2.3 is a private address")),
        ):
            sync_run(name="contacts", job_id="job-2")
    assert api.hits == []
    assert isinstance(UnsafeUrl("x"), PermanentError)  # dead-lettered, never retried
    assert SyncState.objects.get(name="contacts").lease_until is None


def test_a_second_run_is_refused_while_the_first_holds_the_sync(api: RemoteApi) -> None:
    assert lease_take(name="contacts", job_id="job-1").outcome == "taken"
    assert sync_run(name="contacts", job_id="job-2") == {
        "refused": "sync contacts is running as job job-1: this run is refused"
    }
    assert api.hits == []
    assert lease_take(name="contacts", job_id="job-1").outcome == "resumed"
    SyncState.objects.update(lease_until=timezone.now() - timedelta(seconds=1))  # it went quiet
    assert sync_run(name="contacts", job_id="job-2")["created"] == 300


def test_an_unknown_sync_is_named() -> None:
    with pytest.raises(SyncUnknown, match="no sync named 'nope' \\(declared: contacts\\)"):
        sync_get(name="nope")


def test_offset_and_cursor_pagination() -> None:
    offsets = Offsets(size=2)
    assert offsets.params(0) == {"offset": "0", "limit": "2"}
    assert offsets.next(cursor=4, body={}, count=2) == 6
    assert offsets.next(cursor=6, body={}, count=1) is None
    cursors = Cursors()
    assert "cursor" not in cursors.params(cursors.first)
    assert cursors.next(cursor="", body={"next_cursor": "abc"}, count=5) == "abc"
    assert cursors.next(cursor="abc", body={"next_cursor": None}, count=5) is None


# --- generated remote pages: the family's clear error, or a correct upsert -----------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
texts = st.text(max_size=30) | st.sampled_from(["", "a\x00b", "x" * 300])
records = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(-5, 10**20) | st.text(max_size=110) | st.booleans() | st.none(),
        "name": texts | json_values,
        "email": st.emails() | texts | json_values,
        "updated_at": st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01", "2024-13-40T00:00"])
        | st.datetimes().map(datetime.isoformat)
        | json_values,
    },
)
pages = st.fixed_dictionaries(
    {"data": st.lists(records | json_values, max_size=6)},
    optional={"total_pages": st.integers(-1, 5) | json_values},
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(page=pages | json_values, raw=st.none() | st.binary(max_size=20))
@example(page={"data": [{"id": 1, "name": "A", "email": "a@x", "updated_at": None}]}, raw=None)
@example(
    page={
        "data": [{"id": "1", "name": "A", "email": "a@x"}, {"id": 1, "name": "B", "email": "b@x"}]
    },
    raw=None,
)
def test_generated_pages_are_upserted_correctly_or_refused_naming_the_page(
    page: Any, raw: bytes | None
) -> None:
    body = raw if raw is not None else json.dumps(page).encode()
    Contact.objects.all().delete()
    try:
        parsed = page_parse(sync=CONTACTS, cursor=3, body=body)
    except PageInvalid as exc:
        assert str(exc).startswith("sync contacts, page 3: ")
        return
    counts = rows_upsert(sync=CONTACTS, rows=parsed.rows)
    assert counts.created == len(parsed.rows) == Contact.objects.count()
    for key, fields in parsed.rows.items():
        row = Contact.objects.get(external_id=key)
        assert {name: getattr(row, name) for name in fields} == fields
    again = rows_upsert(sync=CONTACTS, rows=parsed.rows)
    assert (again.created, again.updated, again.unchanged) == (0, 0, len(parsed.rows))


def test_a_copy_of_the_same_job_running_meanwhile_stops_at_its_next_page_and_writes_nothing(
    api: RemoteApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync's message redelivered while its first copy still runs (a lost broker connection,
    RabbitMQ's consumer timeout on a long sync): the redelivered copy resumes (same job id)
    while the first goes on. The first copy used to write every page after that a second time,
    counting them twice."""
    real_fetch = services.page_fetch
    copy_ran: list[dict[str, Any]] = []

    def fetch(*, sync: Any, cursor: Any, client: Any) -> bytes:
        body = real_fetch(sync=sync, cursor=cursor, client=client)
        if cursor == 10 and not copy_ran:
            copy_ran.append({})  # the copy runs to the end while this one holds page 10
            copy_ran[0] = sync_run(name="contacts", job_id="job-1")
        return body

    monkeypatch.setattr(services, "page_fetch", fetch)
    with pytest.raises(services.CopyAhead, match="page 10: another copy of this job wrote it"):
        sync_run(name="contacts", job_id="job-1")
    assert copy_ran[0] == {"pages": 30, "created": 300, "updated": 0, "unchanged": 0, "failed": 0}
    state = SyncState.objects.get(name="contacts")
    assert (state.pages, state.created, state.job_id) == (30, 300, "job-1")
    assert state.finished_at is not None and Contact.objects.count() == 300


def test_syncs_of_one_host_share_its_lowest_budget(
    api: RemoteApi, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Each sync spaced its requests by its own budget on the host's one slot, so a host called
    by a sync at 5 per second and one at 20 saw up to 20."""
    from dataclasses import replace

    from app.models import RateSlot

    fast = replace(CONTACTS, name="contacts_fast", per_second=20.0)
    monkeypatch.setitem(SYNCS, "contacts_fast", fast)
    settings.SYNCS_REMOTES = {"contacts": api.url, "contacts_fast": api.url}
    settings.SYNCS_RATES = {"contacts": 5, "contacts_fast": 20}
    settings.SYNCS_RATE_JITTER = 0
    page_fetch(sync=fast, cursor=1)
    first = RateSlot.objects.get(key="syncs:127.0.0.1").next_at
    page_fetch(sync=fast, cursor=2)
    spacing = RateSlot.objects.get(key="syncs:127.0.0.1").next_at - first
    assert spacing == pytest.approx(1 / 5, abs=0.05)  # was 1/20
    assert services.host_rate(host="127.0.0.1") == 5


@pytest.mark.django_db(transaction=True)
def test_a_backoff_retry_holds_the_runs_lease_for_its_wait(
    broker: Broker, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a 429's retry held the lease for its wait; a 5xx's backoff (up to 600 s, as long as
    the lease) let it lapse, and another run could take the sync beside this one."""
    from celery.exceptions import Retry

    from tasks.syncs import tasks as sync_tasks

    settings.SYNCS_LEASE_SECONDS = 60
    job_id = str(uuid.uuid4())
    lease_take(name="contacts", job_id=job_id)
    held = SyncState.objects.get(name="contacts").lease_until
    assert held is not None
    task = sync_tasks.run
    monkeypatch.setattr(task, "retry_jitter", False)  # the backoff of retry 7: 64 s exactly
    task.push_request(  # as the worker sets it
        id=job_id, retries=6, args=[], kwargs={"name": "contacts"}, called_directly=False
    )
    try:
        with pytest.raises(Retry) as retry:
            sync_tasks._retry(task, TransientError("502 from the remote"), name="contacts")
    finally:
        task.pop_request()
    assert retry.value.when == 64
    extended = SyncState.objects.get(name="contacts").lease_until
    assert extended is not None
    assert (extended - held).total_seconds() >= 63
    assert broker.depth("api") == 1  # the retry's message, due in 64 s
