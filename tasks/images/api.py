"""``POST /api/images/``: make the variants of an image, in a job.

Send the image as a multipart upload (field ``file``), or, as a staff user, ``{"path": "..."}``
(JSON or a form field) naming a file already in default storage: anyone else gets a 403, for any
path (the storage holds other users' uploads, exports and attachments; the job's result would
link their variants, and a 400 for a missing file would say which files exist). The file is
checked at once, without decoding:
empty, not an allowed type or too many pixels is a 400, over ``IMAGES_MAX_SOURCE_BYTES`` a 413;
then 202 with ``{"id", "status_url"}``. The job's result maps each variant to
``{"url", "width", "height", "format", "bytes"}``.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse
from ninja import Router, Schema, Status
from pydantic import ValidationError

from app.api import ApiError, ErrorOut, InputSchema
from app.input import FORM_TYPES, json_object_parse
from tasks.images import conf
from tasks.images.services import ImageInvalid, ImageTooLarge, image_enqueue, upload_store

router = Router(tags=["images"])


class PathIn(InputSchema):
    path: str


class EnqueuedOut(Schema):
    id: str
    status_url: str


#: The two bodies this endpoint reads itself (django-ninja cannot say "one or the other").
REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": False,
            }
        },
    },
}


@router.post(
    "/",
    response={202: EnqueuedOut, 400: ErrorOut, 403: ErrorOut, 413: ErrorOut},
    openapi_extra={"requestBody": REQUEST_BODY},
)
def image_submit(request: HttpRequest) -> Status[dict[str, str]]:
    """Enqueue the variants of an uploaded image (multipart ``file``) or, for staff users, of
    ``{"path"}`` in storage; poll ``status_url``. The job belongs to the logged-in user, if any."""
    owner = request.user if request.user.is_authenticated else None
    try:
        if request.content_type in FORM_TYPES and "path" not in request.POST:
            source = upload_store(data=_upload_read(request))
        elif not request.user.is_staff:
            raise ApiError(403, 'only staff users may name a file in the storage; upload "file"')
        else:
            source = _path(request)
        job_id = image_enqueue(source=source, owner=owner)
    except ImageTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except ImageInvalid as exc:
        raise ApiError(400, str(exc)) from None
    return Status(202, {"id": job_id, "status_url": reverse("api:job", args=[job_id])})


def _upload_read(request: HttpRequest) -> bytes:
    upload = request.FILES.get("file")
    if upload is None:
        raise ImageInvalid('send the image as the multipart field "file", or {"path": ...}')
    if upload.size is not None and upload.size > conf.MAX_SOURCE_BYTES:
        raise ImageTooLarge(
            f"the file has {upload.size:,} bytes, more than IMAGES_MAX_SOURCE_BYTES "
            f"({conf.MAX_SOURCE_BYTES:,})"
        )
    return upload.read(conf.MAX_SOURCE_BYTES + 1)


def _path(request: HttpRequest) -> str:
    if request.content_type in FORM_TYPES:
        data = {key: value for key, value in request.POST.items() if key != "csrfmiddlewaretoken"}
    else:
        try:
            data = json_object_parse(request.body)
        except ValueError as exc:
            raise ImageInvalid(str(exc)) from None
    try:
        return PathIn.model_validate(data).path
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(map(str, first["loc"])) or "path"
        raise ImageInvalid(f"{field}: {first['msg']}") from None
