"""The syncs family's logic: plain, typed, keyword-only functions, tested without a broker.

A run of a sync:
1. takes the sync's lease (``lease_take``): one row per sync, so that two runs never overlap.
   Another run that holds it makes this one refused (it ends at once, skipped); the same run
   (a retry, or the message redelivered after its worker died) takes it back and resumes;
2. fetches each page (``page_fetch``) with the worker's one pooled HTTP client, through the URL
   guard, after waiting its turn at the remote's rate limit (``app.ratelimit``, shared by every
   worker through the database);
3. parses and maps it (``page_parse``): a malformed page fails the run, naming the page;
4. upserts its records and writes the checkpoint (the next cursor, the counts) in ONE transaction
   (``page_commit``): a page is stored once with its checkpoint, or not at all, so a restarted
   run resumes at the first page not stored and never writes a page twice.
A run that fails keeps its cursor: the next run resumes from the last good page.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from django.contrib.auth.models import User
from django.db import DataError, IntegrityError, transaction
from django.db.models import F, Model, Q
from django.utils import timezone

from app.enqueue import job_enqueue
from app.errors import PermanentError, TransientError
from app.progress import progress
from app.ratelimit import rate_wait
from app.records import record_fail, record_progress, record_succeed
from app.retry_after import retry_after_seconds
from app.urlguard import guarded_client
from tasks.syncs import conf
from tasks.syncs.models import Checkpoint, SyncPart, SyncState
from tasks.syncs.registry import (
    SYNCS,
    Cursor,
    MalformedPage,
    PageNumbers,
    RecordRejected,
    Sync,
)

logger = logging.getLogger(__name__)

RUN_TASK = "tasks.syncs.run"  # by name: tasks.py imports this module
PART_TASK = "tasks.syncs.part"
FINISH_TASK = "tasks.syncs.finish"
#: Answers worth another try: the remote is overloaded or down for now.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class SyncError(PermanentError):
    """A run that cannot go on: retrying would meet the same answer. The job is dead-lettered."""


class SyncUnknown(SyncError, ValueError):
    """No sync of that name is declared."""


class PageInvalid(SyncError):
    """A page that is not what the sync declares (not JSON, no records list, a record without a
    field it needs). The message names the sync and the page."""


class LeaseLost(SyncError):
    """Another run took the sync over (this one went quiet for longer than the lease)."""


class CopyAhead(Exception):
    """Another copy of this same job (its message redelivered while this one still ran: a
    broker connection lost, RabbitMQ's consumer timeout) wrote the page first. This copy stops
    and leaves the job, its record and the lease to that one."""


class RetryLater(TransientError):
    """The remote asked for time (429, or 503 with Retry-After): try again after ``delay``
    seconds, or after the job's backoff when None."""

    def __init__(self, message: str, *, delay: float | None) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class Page:
    """A parsed page: the rows to upsert by key, the records skipped, where the next page is."""

    cursor: Cursor
    rows: dict[str, dict[str, Any]]
    failed: int
    next: Cursor | None
    total: int | None = None


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: list[str] = field(default_factory=list)


def sync_get(*, name: str) -> Sync:
    try:
        return SYNCS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(SYNCS)) or "none"
        raise SyncUnknown(f"no sync named {name!r} (declared: {known})") from None


def sync_start(*, name: str, owner: User | None = None) -> str:
    """Enqueue a run of the sync ``name`` (SyncUnknown, and nothing enqueued, for a name no sync
    has); return its job id. Call it inside the caller's transaction."""
    sync_get(name=name)
    with transaction.atomic():
        return job_enqueue(RUN_TASK, kwargs={"name": name}, owner=owner)


def sync_url(*, sync: Sync) -> str:
    return conf.remotes().get(sync.name, sync.url)


def sync_rate(*, sync: Sync) -> float:
    """The sync's budget in requests per second (0: none), as declared or set in SYNCS_RATES."""
    return conf.rates().get(sync.name, sync.per_second)


def host_rate(*, host: str) -> float:
    """The budget of the remote ``host``, shared by every sync that calls it (one slot key per
    host): the lowest of theirs. Each used its own, so the host saw the sum."""
    rates = [
        rate
        for sync in SYNCS.values()
        if httpx.URL(sync_url(sync=sync)).host == host and (rate := sync_rate(sync=sync)) > 0
    ]
    return min(rates, default=0.0)


# --- the HTTP client: one per worker process ------------------------------------------------------

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def client_get() -> httpx.Client:
    """This process's client: keep-alive connections shared by its threads, every request
    through the URL guard, connect and read timeouts from the settings."""
    global _client
    with _client_lock:
        if _client is None:
            _client = guarded_client(
                timeout=httpx.Timeout(conf.timeout(), connect=conf.connect_timeout()),
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
                headers={"accept": "application/json", "user-agent": "syncs (celery-template)"},
            )
        return _client


def client_forget() -> None:
    """Drop the client without closing it: a forked child must not use its parent's sockets."""
    global _client
    _client = None


os.register_at_fork(after_in_child=client_forget)


# --- one page ------------------------------------------------------------------------------------


def _body_read(response: httpx.Response, *, where: str) -> bytes:
    limit = conf.max_page_bytes()
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise PageInvalid(f"{where}: the answer is longer than {limit} bytes")
    return bytes(body)


def page_fetch(*, sync: Sync, cursor: Cursor, client: httpx.Client | None = None) -> bytes:
    """The page at ``cursor``, as bytes, after waiting for the remote's rate limit.

    Raises TransientError (retried with backoff) for a timeout, a broken connection and 408,
    425 and 5xx; RetryLater for a 429 (or a 503 with Retry-After); SyncError for any other
    answer (not retried); UnsafeUrl for a URL the guard refuses."""
    url = sync_url(sync=sync)
    where = f"sync {sync.name}, {sync.pagination.label(cursor)}"
    client = client or client_get()
    host = httpx.URL(url).host
    rate = host_rate(host=host)
    rate_wait(key=f"syncs:{host}", per_second=rate / (1 + conf.rate_jitter()) if rate > 0 else 0)
    try:
        with client.stream(
            "GET", url, params=sync.pagination.params(cursor), headers=dict(sync.headers)
        ) as response:
            status = response.status_code
            if status == 200:
                return _body_read(response, where=where)
            retry_after = response.headers.get("retry-after")
    except httpx.TransportError as exc:  # timeouts, refused or broken connections, bad answers
        raise TransientError(f"{where}: {type(exc).__name__}: {exc}") from exc
    if status in RETRY_STATUSES or status >= 500:
        delay = retry_after_seconds(
            value=retry_after, now=timezone.now(), cap=conf.retry_after_max()
        )
        message = f"{where}: HTTP {status}" + (
            f", Retry-After: {retry_after}" if retry_after else ""
        )
        if status == 429 or delay is not None:
            raise RetryLater(message, delay=delay)
        raise TransientError(message)
    raise SyncError(f"{where}: HTTP {status} from {url}; not retried")


def page_parse(*, sync: Sync, cursor: Cursor, body: bytes) -> Page:
    """Read a page's body: its records, mapped by the sync, keyed by their key; the next cursor.

    Raises PageInvalid, naming the sync and the page, for anything else than the declared shape
    (a record that appears twice in one page is upserted once, with its last version)."""
    where = f"sync {sync.name}, {sync.pagination.label(cursor)}"
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PageInvalid(f"{where}: not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise PageInvalid(f"{where}: a JSON object was expected, not {type(data).__name__}")
    records = data.get(sync.records)
    if not isinstance(records, list):
        raise PageInvalid(f"{where}: no list of records at {sync.records!r}")
    rows: dict[str, dict[str, Any]] = {}
    failed = 0
    for index, record in enumerate(records):
        try:
            fields = sync.map(record)
        except RecordRejected as exc:
            failed += 1
            logger.warning("%s: record %d skipped: %s", where, index, exc)
            continue
        except Exception as exc:  # the mapper's verdict on the remote's data, whatever it is
            reason = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, KeyError):
                reason = f"missing field {exc}"
            raise PageInvalid(f"{where}: record {index}: {reason[:300]}") from exc
        key = fields.get(sync.key)
        if not isinstance(key, str) or not key:
            raise PageInvalid(f"{where}: record {index}: no {sync.key!r} after mapping")
        rows[key] = fields
    try:
        following = sync.pagination.next(cursor=cursor, body=data, count=len(records))
        total = sync.pagination.total_pages(data)
    except MalformedPage as exc:
        raise PageInvalid(f"{where}: {exc}") from None
    return Page(cursor=cursor, rows=rows, failed=failed, next=following, total=total)


def rows_upsert(*, sync: Sync, rows: Mapping[str, dict[str, Any]]) -> Counts:
    """Insert the rows whose key is new, update those that differ, count the rest unchanged:
    a query to read, one to insert, one to update, whatever the page's size. Run it in the
    page's transaction (``page_commit``)."""
    model: type[Model] = sync.model
    existing = model._default_manager.in_bulk(list(rows), field_name=sync.key)
    new: list[Model] = []
    changed: list[Model] = []
    names: set[str] = set()
    counts = Counts()
    for key, fields in rows.items():
        row = existing.get(key)
        if row is None:
            new.append(model(**fields))
            continue
        differ = {name: value for name, value in fields.items() if getattr(row, name) != value}
        if not differ:
            counts.unchanged += 1
            continue
        for name, value in differ.items():
            setattr(row, name, value)
        names |= differ.keys()
        changed.append(row)
    if new:
        model._default_manager.bulk_create(new)
    if changed:
        model._default_manager.bulk_update(changed, fields=sorted(names))
    counts.created, counts.updated = len(new), len(changed)
    return counts


def page_commit(
    *, sync: Sync, page: Page, checkpoint: type[Checkpoint], guard: dict[str, Any]
) -> Counts:
    """Upsert ``page`` and move the checkpoint row (``checkpoint`` filtered by ``guard``: the
    run's own) past it, in one transaction, if the row still points at this page. LeaseLost when
    the row is no longer the run's; CopyAhead when it moved on (a copy of this job wrote it)."""
    where = f"sync {sync.name}, {sync.pagination.label(page.cursor)}"
    now = timezone.now()
    try:
        with transaction.atomic():
            counts = rows_upsert(sync=sync, rows=page.rows)
            counts.failed = page.failed
            values: dict[str, Any] = {
                "cursor": page.next,
                "pages": F("pages") + 1,
                **{name: F(name) + getattr(counts, name) for name in Checkpoint.COUNTS},
            }
            if page.next is None:
                values["finished_at"] = now
            if checkpoint is SyncState:
                values["lease_until"] = None if page.next is None else _lease_end(now)
            rows = checkpoint._default_manager.filter(**guard)
            at_page = Q(cursor=page.cursor)
            if page.cursor == sync.pagination.first:
                at_page |= Q(cursor__isnull=True)  # null: the first page
            if not rows.filter(at_page).update(**values):
                if rows.exists():
                    raise CopyAhead(f"{where}: another copy of this job wrote it; this one stops")
                raise LeaseLost(f"{where}: another run took the sync over; this one stops")
            if checkpoint is SyncPart:  # the run's lease, held for its parts
                SyncState.objects.filter(name=sync.name).update(lease_until=_lease_end(now))
    except DataError as exc:
        raise PageInvalid(f"{where}: the database refused a value: {exc}") from exc
    except IntegrityError as exc:  # a row inserted meanwhile by someone else: read it next time
        raise TransientError(f"{where}: {exc}") from exc
    return counts


# --- a run ---------------------------------------------------------------------------------------


def _lease_end(now: Any, extra: float = 0.0) -> Any:
    return now + timedelta(seconds=conf.lease_seconds() + extra)


@dataclass(frozen=True)
class Lease:
    """What ``lease_take`` found: the sync's row, and whether this run may go on."""

    state: SyncState
    #: "taken" (a new run), "resumed" (this run again), "finished" (this run had completed),
    #: "refused" (another run holds it).
    outcome: str


def lease_take(*, name: str, job_id: str) -> Lease:
    """Take the sync's lease for the run ``job_id``; see ``Lease.outcome``.

    A new run starts from the cursor the last run left: the first page after a run that
    completed, the last good page after one that failed."""
    now = timezone.now()
    with transaction.atomic():
        SyncState.objects.get_or_create(name=name)
        state = SyncState.objects.select_for_update().get(name=name)
        if state.job_id == job_id:
            if state.finished_at is not None:
                return Lease(state, "finished")
            state.lease_until = _lease_end(now)
            state.save(update_fields=["lease_until"])
            return Lease(state, "resumed")
        if state.lease_until is not None and state.lease_until > now:
            return Lease(state, "refused")
        state.job_id = job_id
        state.lease_until = _lease_end(now)
        state.started_at = now
        state.finished_at = None
        state.pages = state.created = state.updated = state.unchanged = state.failed = 0
        state.parts = 0
        state.error = ""
        state.save()
    return Lease(state, "taken")


def _lease_answer(*, name: str, lease: Lease) -> dict[str, Any] | None:
    """What a run returns at once for the lease it found: refused (another run holds the sync),
    or this run's counts (it had completed); None when it goes on."""
    if lease.outcome == "refused":
        message = f"sync {name} is running as job {lease.state.job_id}: this run is refused"
        logger.warning(message)
        return {"refused": message}
    if lease.outcome == "finished":
        return lease.state.counts()
    return None


def lease_extend(*, name: str, job_id: str, seconds: float) -> None:
    """Hold the lease ``seconds`` more than usual (a retry's countdown)."""
    SyncState.objects.filter(name=name, job_id=job_id, finished_at=None).update(
        lease_until=_lease_end(timezone.now(), seconds)
    )


def lease_release(*, name: str, job_id: str, error: str) -> None:
    """A run that failed for good lets go, keeping its cursor for the next run."""
    SyncState.objects.filter(name=name, job_id=job_id, finished_at=None).update(
        lease_until=None, error=error[:2000]
    )


def _pages(*, sync: Sync, cursor: Cursor, last: int | None = None) -> Iterator[tuple[Page, bool]]:
    """Fetch and parse pages from ``cursor`` on; yield each with whether it is the last (of the
    remote, or ``last``, the range's last page number)."""
    client = client_get()
    while True:
        page = page_parse(
            sync=sync, cursor=cursor, body=page_fetch(sync=sync, cursor=cursor, client=client)
        )
        if last is not None and isinstance(cursor, int) and cursor >= last:
            page = Page(
                cursor=cursor, rows=page.rows, failed=page.failed, next=None, total=page.total
            )
        yield page, page.next is None
        if page.next is None:
            return
        cursor = page.next


def sync_run(*, name: str, job_id: str) -> dict[str, Any]:
    """Run (or resume) the sync ``name`` as the job ``job_id``; return its counts.

    Progress (pages, records) goes on the job's record. A run refused because another holds
    the sync returns ``{"refused": ...}`` at once, having done nothing."""
    sync = sync_get(name=name)
    lease = lease_take(name=name, job_id=job_id)
    state = lease.state
    if (answer := _lease_answer(name=name, lease=lease)) is not None:
        return answer
    if lease.outcome == "resumed" and state.parts:
        return {"fanned_out": state.parts}  # the parts run on; this message has nothing to do
    cursor = sync.pagination.first if state.cursor is None else state.cursor
    logger.info("sync %s %s at %s", name, lease.outcome, sync.pagination.label(cursor))
    try:
        done, records = state.pages, state.created + state.updated + state.unchanged
        for page, _last in _pages(sync=sync, cursor=cursor):
            counts = page_commit(
                sync=sync, page=page, checkpoint=SyncState, guard={"name": name, "job_id": job_id}
            )
            done += 1
            records += counts.created + counts.updated + counts.unchanged
            percent = 100.0 if page.next is None else 100 * done / (page.total or done * 100)
            progress(min(percent, 100), f"{done} pages, {records} records")
    except PermanentError as exc:
        lease_release(name=name, job_id=job_id, error=str(exc))
        raise
    state.refresh_from_db()
    result = state.counts()
    if sync.on_finish:
        sync.on_finish(result)
    return result


# --- fan-out: page ranges in parallel, one final callback ---------------------------------------


def sync_fan_out(*, name: str, job_id: str, parts: int) -> dict[str, Any]:
    """Start the sync ``name`` as up to ``parts`` jobs over page ranges. Returns ``{"parts": n}``
    when n part jobs run (this time or an earlier one), ``{"refused": ...}`` when another run
    holds the sync, or the counts when page 1 was all there was.

    The run's job fetches page 1 (for the number of pages; it stores it as a part would), then
    enqueues one ``part`` job per range, in the transaction that records the parts. The part
    that ends last enqueues the run's final callback, ``finish``, once: it ends the run's record
    with the counts of every part. Needs page-number pagination with a page count."""
    sync = sync_get(name=name)
    if not isinstance(sync.pagination, PageNumbers) or not sync.pagination.total:
        raise SyncError(f"sync {name}: fan-out needs page numbers with a page count")
    lease = lease_take(name=name, job_id=job_id)
    state = lease.state
    if (answer := _lease_answer(name=name, lease=lease)) is not None:
        return answer
    if state.parts:  # a redelivered message: the parts were enqueued with the record of them
        return {"parts": state.parts}
    try:
        page = page_parse(sync=sync, cursor=1, body=page_fetch(sync=sync, cursor=1))
        if page.total is None:
            raise SyncError(f"sync {name}: page 1 gives no page count; fan-out needs one")
        bounds = _ranges(first=2, last=page.total, parts=parts)
        with transaction.atomic():
            first = Page(cursor=1, rows=page.rows, failed=page.failed, next=2 if bounds else None)
            page_commit(
                sync=sync,
                page=first,
                checkpoint=SyncState,
                guard={"name": name, "job_id": job_id, "parts": 0},
            )
            if not bounds:
                state.refresh_from_db()
                return state.counts()
            SyncState.objects.filter(name=name, job_id=job_id).update(parts=len(bounds))
            for index, (start, last) in enumerate(bounds):
                SyncPart.objects.create(job_id=job_id, index=index, cursor=start, last=last)
                job_enqueue(PART_TASK, kwargs={"name": name, "job_id": job_id, "index": index})
    except PermanentError as exc:
        lease_release(name=name, job_id=job_id, error=str(exc))
        raise
    return {"parts": len(bounds)}


def _ranges(*, first: int, last: int, parts: int) -> list[tuple[int, int]]:
    pages = last - first + 1
    if pages <= 0:
        return []
    parts = max(1, min(parts, pages))
    size, extra = divmod(pages, parts)
    bounds = []
    start = first
    for index in range(parts):
        end = start + size - 1 + (1 if index < extra else 0)
        bounds.append((start, end))
        start = end + 1
    return bounds


def part_run(*, name: str, job_id: str, index: int) -> dict[str, Any]:
    """Run (or resume) one page range of a fanned-out run; the last part to end enqueues the
    run's final callback."""
    sync = sync_get(name=name)
    part = SyncPart.objects.get(job_id=job_id, index=index)
    if part.finished_at is None and part.cursor is not None:
        guard = {"pk": part.pk, "finished_at": None}
        for _page, _last in _pages(sync=sync, cursor=part.cursor, last=part.last):
            page_commit(sync=sync, page=_page, checkpoint=SyncPart, guard=guard)
    part_end(name=name, job_id=job_id, index=index, error="")
    part.refresh_from_db()
    return part.counts()


def part_end(*, name: str, job_id: str, index: int, error: str) -> None:
    """Mark a part ended (with ``error`` if it failed); if it was the last, enqueue ``finish``
    in the same transaction that says so, so the callback runs once."""
    with transaction.atomic():
        if error:
            SyncPart.objects.filter(job_id=job_id, index=index, finished_at=None).update(
                finished_at=timezone.now(), error=error[:2000]
            )
        state = SyncState.objects.select_for_update().get(name=name)
        ended = SyncPart.objects.filter(job_id=job_id, finished_at__isnull=False).count()
        record_progress(
            job_id=job_id,
            percent=100 * ended // max(1, state.parts),
            message=f"{ended} of {state.parts} parts",
        )
        if state.job_id != job_id or state.finished_at is not None or ended < state.parts:
            return
        state.finished_at = timezone.now()
        state.lease_until = None
        state.cursor = None
        state.save(update_fields=["finished_at", "lease_until", "cursor"])
        job_enqueue(FINISH_TASK, kwargs={"name": name, "job_id": job_id})


def sync_finish(*, name: str, job_id: str) -> dict[str, Any]:
    """The fan-out's final callback: the run's counts (its own page and every part's) on its
    record, then the sync's ``on_finish``. A part that failed fails the run, naming it."""
    sync = sync_get(name=name)
    state = SyncState.objects.get(name=name)
    totals = state.counts()
    errors = []
    for part in SyncPart.objects.filter(job_id=job_id).order_by("index"):
        for key, value in part.counts().items():
            totals[key] += value
        if part.error:
            errors.append(f"part {part.index} (pages {part.cursor}..{part.last}): {part.error}")
    if errors:
        SyncState.objects.filter(name=name, job_id=job_id).update(
            error="; ".join(errors)[:2000], cursor=None
        )
        record_fail(job_id=job_id, error="; ".join(errors)[:2000], traceback="", dead=False)
        return {**totals, "failed_parts": len(errors)}
    record_succeed(job_id=job_id, result=totals)
    if sync.on_finish:
        sync.on_finish(totals)
    return totals
