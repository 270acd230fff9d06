"""GET /healthz: for load balancers and compose health checks."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from app.health import broker_error, database_error


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Database and broker reachability, for load balancers and compose health checks."""
    errors = {"database": database_error(), "broker": broker_error()}
    healthy = not any(errors.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            "checks": {name: error or "ok" for name, error in errors.items()},
        },
        status=200 if healthy else 503,
    )
