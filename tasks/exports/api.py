"""``POST /api/exports/`` with ``{"export": name, "format": "csv"|"xlsx"|"jsonl", "gzip": bool,
"filters": {...}}``: start an export (202 with the job's id and status URL). A name, format or
filter the export does not declare, or a filter value of the wrong type, is a 400 naming it, and
nothing is enqueued. The finished job's result holds ``rows``, ``bytes``, ``format`` and
``url``, a signed download link for the requester only (anyone holding it, if anonymous)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from django.http import HttpRequest
from django.urls import reverse
from ninja import Router, Schema, Status
from pydantic import Field

from app.api import ApiError, ErrorOut, InputSchema, JsonOrForm
from tasks.exports.registry import EXPORTS
from tasks.exports.services import ExportForbidden, ExportInvalid, export_start

router = Router(tags=["exports"])


class ExportIn(InputSchema):
    export: Annotated[
        str, Field(min_length=1, max_length=100, json_schema_extra={"enum": sorted(EXPORTS)})
    ]
    format: Literal["csv", "xlsx", "jsonl"]
    gzip: bool = False
    filters: dict[str, Any] = Field(default_factory=dict)


class EnqueuedOut(Schema):
    id: str
    status_url: str


@router.post("/", response={202: EnqueuedOut, 400: ErrorOut, 403: ErrorOut})
def export_submit(
    request: HttpRequest, payload: Annotated[ExportIn, JsonOrForm()]
) -> Status[dict[str, str]]:
    """Start the export ``export``; poll ``status_url`` for rows written and the link. Each
    export says who may start it (staff users, by default): anyone else gets a 403."""
    try:
        job_id = export_start(
            export=payload.export,
            format=payload.format,
            gzip=payload.gzip,
            filters=payload.filters,
            user=request.user,
        )
    except ExportInvalid as exc:
        raise ApiError(400, str(exc)) from None
    except ExportForbidden as exc:
        raise ApiError(403, str(exc)) from None
    return Status(202, {"id": job_id, "status_url": reverse("api:job", args=[job_id])})
