"""The project's URLs, plus ``POST /tests/enqueue/`` {"task", "args"}: ``job_enqueue`` in the
request's transaction, as a family's endpoint does, for any task, the test jobs included."""

from __future__ import annotations

import json
import logging

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import tests.jobs  # noqa: F401  (registers the test jobs here, as --include does in workers)
from app.enqueue import job_enqueue
from config.urls import urlpatterns as project_urlpatterns

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def enqueue(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    with transaction.atomic():
        job_id = job_enqueue(body["task"], args=body.get("args", []))
    logger.info("enqueued %s", body["task"], extra={"job_id": job_id})
    return JsonResponse({"id": job_id}, status=202)


urlpatterns = [path("tests/enqueue/", enqueue), *project_urlpatterns]
