"""``POST /api/example/demo/`` (DEBUG only): enqueue ``count_to`` as a tracked job, the whole path
a family's endpoint takes: validate, enqueue inside the request's transaction, answer 202."""

from __future__ import annotations

from typing import Annotated, Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from ninja import Router, Schema, Status
from pydantic import BeforeValidator, Field

from app.api import ApiError, ErrorOut, InputSchema, JsonOrForm
from app.enqueue import job_enqueue
from tasks.example import conf
from tasks.example.tasks import count_to

router = Router(tags=["example"])


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would take true for 1
        raise ValueError("must be a number, not true or false")
    return value


class DemoIn(InputSchema):
    """Form fields or a JSON object; both optional."""

    upto: Annotated[int, Field(ge=1, le=10_000_000), BeforeValidator(_not_a_bool)] = 2_000_000
    #: How long the count takes at least; the threads pool enforces no time limit, so a cap.
    seconds: Annotated[
        float,
        Field(ge=0, le=conf.DEMO_MAX_SECONDS, allow_inf_nan=False),
        BeforeValidator(_not_a_bool),
    ] = 0.0


class EnqueuedOut(Schema):
    id: str
    status_url: str


@router.post("/demo/", response={202: EnqueuedOut, 400: ErrorOut, 404: ErrorOut})
def demo_enqueue(
    request: HttpRequest, payload: Annotated[DemoIn, JsonOrForm(DemoIn())]
) -> Status[dict[str, str]]:
    """Count to ``upto`` over at least ``seconds``, reporting progress; poll ``status_url``
    for it. The job belongs to the logged-in user, if any."""
    if not settings.DEBUG:
        raise ApiError(404, "the demo endpoint only exists with DJANGO_DEBUG=1")
    owner = request.user if request.user.is_authenticated else None
    with transaction.atomic():
        job_id = job_enqueue(count_to, kwargs=payload.model_dump(), owner=owner)
    return Status(202, {"id": job_id, "status_url": reverse("api:job", args=[job_id])})
