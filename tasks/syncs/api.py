"""``POST /api/syncs/`` with ``{"sync": name}``: start a run of a declared sync (202 with the
job's id and status URL); 400 for a name no sync has, and nothing is enqueued."""

from __future__ import annotations

from typing import Annotated

from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from ninja import Router, Schema, Status
from pydantic import AfterValidator, Field

from app.api import ApiError, ErrorOut, InputSchema, JsonOrForm
from tasks.syncs.registry import SYNCS
from tasks.syncs.services import SyncUnknown, sync_get, sync_start

router = Router(tags=["syncs"])


def _declared(name: str) -> str:
    try:
        sync_get(name=name)
    except SyncUnknown as exc:
        raise ValueError(str(exc)) from None
    return name


class SyncIn(InputSchema):
    #: The declared names, listed in the schema (/api/docs) as the values it takes.
    sync: Annotated[
        str,
        Field(min_length=1, max_length=100, json_schema_extra={"enum": sorted(SYNCS)}),
        AfterValidator(_declared),
    ]


class EnqueuedOut(Schema):
    id: str
    status_url: str


@router.post("/", response={202: EnqueuedOut, 400: ErrorOut})
def sync_enqueue(
    request: HttpRequest, payload: Annotated[SyncIn, JsonOrForm()]
) -> Status[dict[str, str]]:
    """Start the sync ``sync``; poll ``status_url`` for its progress and counts. A run of the
    same sync still going makes this one end at once, refused (its result says so)."""
    owner = request.user if request.user.is_authenticated else None
    try:
        with transaction.atomic():
            job_id = sync_start(name=payload.sync, owner=owner)
    except SyncUnknown as exc:
        raise ApiError(400, str(exc)) from None
    return Status(202, {"id": job_id, "status_url": reverse("api:job", args=[job_id])})
