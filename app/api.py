"""The project's one JSON API (django-ninja): typed schemas, OpenAPI at ``/api/openapi.json``,
interactive docs at ``/api/docs`` served from the project's own static files.

``config/urls.py`` builds it with ``api_create()`` and mounts the engine's jobs router and each
family's router. Every answer is JSON, errors included: ``{"error": "<what is wrong>"}`` with
400 (bad input, the field named), 403, 404 (unknown endpoint, or a malformed, unknown or
invisible id), 405 (method, with ``Allow``) or 409; a family raises ``ApiError`` for its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Schema
from ninja.errors import HttpError, ValidationError, ValidationErrorContext
from ninja.params.models import Body, BodyModel
from ninja.parser import Parser
from ninja.utils import check_csrf
from pydantic import ConfigDict

from app.input import FORM_TYPES, InputError, json_object_parse


class ApiError(Exception):
    """An answer other than success: ``status`` and a message, plus any extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


class ErrorOut(Schema):
    error: str


class InputSchema(Schema):
    """The base of request bodies: an unknown field is a 400 naming it, not silently ignored
    (a misspelt ``uptoo`` would otherwise run with the default)."""

    model_config = ConfigDict(extra="forbid")


class JsonObjectParser(Parser):
    """JSON bodies as objects, checked by app/input.py (depth, NUL characters)."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        return json_object_parse(request.body)


class _JsonOrFormModel(BodyModel):
    @classmethod
    def get_request_data(
        cls, request: HttpRequest, api: NinjaAPI, path_params: dict[str, Any]
    ) -> dict[str, Any] | None:
        if request.content_type not in FORM_TYPES:
            return super().get_request_data(request, api, path_params)
        # Django has read (and, for multipart, consumed) the body into request.POST already.
        data = request.POST.dict()
        data.pop("csrfmiddlewaretoken", None)  # an HTML form's, checked by session_csrf
        single = getattr(cls, "__read_from_single_attr__", None)
        return {single: data} if single else data


class _JsonOrFormParam(Body):  # type: ignore[misc]
    _model = _JsonOrFormModel

    @classmethod
    def _param_source(cls) -> str:
        return "body"


def JsonOrForm(default: Any = ...) -> Any:
    """A body that is a JSON object or HTML form fields, so a plain form posts to the same
    endpoint a script sends JSON to: ``payload: Annotated[MySchema, JsonOrForm()]``. OpenAPI
    documents it as JSON."""
    return _JsonOrFormParam(default)


def _error(status: int, message: str, **extra: Any) -> HttpResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """The first error, for a reader: ``upto: Input should be greater than or equal to 1, got
    '0'``; a rule over several fields is its own message."""
    first = errors[0]
    location = list(first.get("loc", ()))
    # (source, field...) for query and form; (body, parameter name, field...) for a body
    location = location[2:] if location[:1] == ["body"] else location[1:]
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    value = first.get("input")
    got = f", got {value!r}" if "input" in first and not isinstance(value, dict) else ""
    if not location:
        return message
    return f"{'.'.join(map(str, location))}: {message}{got}"


class ProjectApi(NinjaAPI):
    def validation_error_from_error_contexts(
        self, error_contexts: list[ValidationErrorContext[Any]]
    ) -> ValidationError:
        """As django-ninja's, with the offending value kept (it drops it), to say what came."""
        error = super().validation_error_from_error_contexts(error_contexts)
        first = error_contexts[0].pydantic_validation_error.errors(include_url=False)
        if first and error.errors:
            error.errors[0]["input"] = first[0].get("input")
        return error


def api_create(**options: Any) -> NinjaAPI:
    """The API with the project's parser and JSON errors; mount routers on it."""
    api = ProjectApi(parser=JsonObjectParser(), **options)

    @api.exception_handler(ApiError)
    def api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        response = _error(exc.status, exc.message, **exc.extra)
        if exc.status == 405:
            response["Allow"] = ", ".join(exc.extra.get("allowed", []))
        return response

    @api.exception_handler(HttpError)
    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        cause = exc.__cause__  # the parser's own message beats "Cannot parse request body"
        message = str(cause) if isinstance(cause, InputError) else str(exc)
        return _error(exc.status_code, message)

    @api.exception_handler(ValidationError)
    def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        return _error(400, _validation_message(exc.errors))

    return api


def session_csrf(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., Any]:
    """Middleware: a request under ``/api/`` that changes something, from a user logged in with
    a session cookie, needs the CSRF token (``X-CSRFToken``), as any Django form would.
    django-ninja marks its views CSRF-exempt; anonymous calls (curl, scripts) carry no cookie
    worth forging and pass."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if (
            request.path.startswith("/api/")
            and request.method not in ("GET", "HEAD", "OPTIONS", "TRACE")
            and request.user.is_authenticated
            and check_csrf(request) is not None
        ):
            message = "CSRF check failed: send the csrftoken cookie's value as X-CSRFToken"
            return JsonResponse({"error": message}, status=403)
        return get_response(request)

    return middleware


def json_errors(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., Any]:
    """Middleware: under ``/api/``, Django's HTML 404 (no such endpoint) and django-ninja's
    plain-text 405 become JSON errors like every other answer there."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code in (404, 405)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            allowed = response.get("Allow", "")
            if response.status_code == 405:
                message = f"use {' or '.join(m.strip() for m in allowed.split(','))}"
            else:
                message = f"no API endpoint {request.path}"
            json_response = JsonResponse({"error": message}, status=response.status_code)
            if allowed:
                json_response["Allow"] = allowed
            return json_response
        return response

    return middleware
