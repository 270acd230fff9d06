"""GET /metrics: the page Prometheus scrapes (app/metrics.py), behind a bearer token.

Off unless ``METRICS_TOKEN`` is set: then it answers 404, as any unknown URL does, so that the
public side of a deployment does not even show that it exists (403 would say "there is
something here, try credentials"). With a token set, a request without it, or with another one,
gets 401 and ``WWW-Authenticate: Bearer`` (RFC 6750), which tells whoever sets up Prometheus what
is missing.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from app.metrics import metrics_page


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as ``Bearer <token>``.

    The header comes from anyone: any text at all is refused or accepted, never an error (a
    non-ASCII header would make ``hmac.compare_digest`` raise on strings, hence bytes). The
    comparison takes the same time wherever the first difference is, so the token cannot be
    guessed a character at a time from response times. An empty ``token`` matches nothing.
    """
    if not token or authorization is None:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(
        credentials.strip().encode("utf-8", "surrogatepass"),
        token.encode("utf-8", "surrogatepass"),
    )


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404
    if not bearer_token_matches(request.headers.get("Authorization"), token):
        response = HttpResponse("a bearer token is required\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_page(), content_type=CONTENT_TYPE_LATEST)
