"""GET /downloads/<token>/: the file behind a signed download link (``app/downloads.py``).

Each refusal has its own answer, so a person sees what to do: a link that is not ours is a
404, an expired one a 410 (ask for a new one), someone else's a 403 and an anonymous visitor
goes to the login page first. A file pruned from storage since the link was made is a 404.
Every refusal is logged with its reason and never with the token; Django's request log, which
would write the path (token included) for every 4xx, is skipped for them.
"""

from __future__ import annotations

import logging
import posixpath

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from app.downloads import (
    DownloadLinkExpired,
    DownloadLinkInvalid,
    DownloadWrongOwner,
    download_token_check,
)

logger = logging.getLogger(__name__)


def _refusal(*, status: int, message: str, reason: str) -> HttpResponse:
    logger.warning("download refused (%s): %s", status, reason)
    response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    # Django's own flag (django.utils.log.log_response): no "Gone: /downloads/<token>/" line.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


@require_GET
@never_cache  # an expired or pruned link must not live on in a cache
def download(request: HttpRequest, token: str) -> HttpResponseBase:
    """Stream the link's file as an attachment, in blocks: never the whole file in memory."""
    user_id = request.user.pk if request.user.is_authenticated else None
    try:
        name = download_token_check(token=token, user_id=user_id)
    except DownloadLinkInvalid as exc:
        return _refusal(status=404, message="No such download link.", reason=str(exc))
    except DownloadLinkExpired as exc:
        message = "This download link has expired. Ask for a new one."
        return _refusal(status=410, message=message, reason=str(exc))
    except DownloadWrongOwner as exc:
        if user_id is None:
            logger.info("download needs a login: %s", exc)
            return redirect_to_login(request.get_full_path())
        message = "This download link belongs to another account."
        return _refusal(status=403, message=message, reason=str(exc))
    try:
        file = default_storage.open(name, "rb")
    except (OSError, SuspiciousFileOperation) as exc:  # gone (pruned), or a name outside storage
        reason = f"{name!r} is not in the storage ({type(exc).__name__})"
        return _refusal(status=404, message="This file is no longer available.", reason=reason)
    # FileResponse sends Content-Length and guesses Content-Type from the file name.
    return FileResponse(file, as_attachment=True, filename=posixpath.basename(name))
