"""Outside input, checked once before any view or query sees it.

PostgreSQL refuses text with a NUL character (0x00): a query parameter, form field or cookie
that carries one reaches a query (a list filter, the admin's search, the session lookup) and
fails there with a 500. ``InputCheckMiddleware`` answers such a request with a 400 at the door,
whatever view it was meant for. JSON bodies are read by the view that wants one, through
``json_object_parse``, which refuses the same characters and names what else is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

from django.core.exceptions import BadRequest, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError

NUL = "\x00"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: What Django raises while reading a malformed or oversized body (Django answers 400 too).
BAD_BODY = (BadRequest, SuspiciousOperation, MultiPartParserError)


class InputError(ValueError):
    """Input a view cannot take; the message says what is wrong, for a 400."""


def text_unstorable(text: str) -> bool:
    """Whether the database cannot store ``text``: a NUL, or a lone surrogate (not UTF-8)."""
    if NUL in text:
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _unstorable_where(request: HttpRequest) -> str | None:
    """Where ``request`` carries text the database cannot store, or None."""
    if NUL in request.path:
        return "the path"
    for name, values in request.GET.lists():
        if NUL in name or any(NUL in value for value in values):
            return f"query parameter {name!r}"
    if request.method == "POST" and request.content_type in FORM_TYPES:
        for name, values in request.POST.lists():
            if NUL in name or any(NUL in value for value in values):
                return f"form field {name!r}"
    for name, value in request.COOKIES.items():
        if NUL in name or NUL in value:
            return f"cookie {name!r}"
    return None


class InputCheckMiddleware:
    """Answers 400, as JSON, a request carrying a NUL character or a body Django cannot read."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            where = _unstorable_where(request)
        except BAD_BODY as exc:
            return JsonResponse({"error": f"the request body cannot be read: {exc}"}, status=400)
        if where is not None:
            message = f"{where} contains a NUL character (%00), which is not allowed"
            return JsonResponse({"error": message}, status=400)
        return self.get_response(request)


def _strings(value: Any) -> Iterator[str]:
    """Every key and string in a parsed JSON value, without recursion (it may be deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _finite(text: str) -> float:
    """JSON numbers only: ``NaN``, ``Infinity`` and ``1e400`` would reach a JSONField that
    PostgreSQL refuses (a 500), whatever field a schema declares."""
    value = float(text)
    if not math.isfinite(value):
        raise InputError(f"the JSON body holds {text[:20]!r}, a number out of range")
    return value


def _no_constant(name: str) -> float:
    raise InputError(f"the JSON body holds {name}, which is not JSON")


def json_object_parse(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object; InputError naming what is wrong."""
    try:
        value = json.loads(body, parse_float=_finite, parse_constant=_no_constant)
    except InputError:
        raise
    except RecursionError:
        raise InputError("the JSON body is nested too deeply") from None
    except ValueError:  # UnicodeDecodeError included
        raise InputError("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InputError('the JSON body must be an object, e.g. {"upto": 1000}')
    if any(text_unstorable(text) for text in _strings(value)):
        raise InputError(
            "the JSON body contains a NUL character or a lone surrogate, which is not allowed"
        )
    return value
