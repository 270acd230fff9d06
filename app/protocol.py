"""What a task message must look like before a worker touches it: Celery's message protocol v2.

Celery trusts its producers: a body that is not ``[args, kwargs, embed]``, or a header of the
wrong type, raises deep inside the worker, where it stops the whole worker (and every restart,
since the message is still queued), is acknowledged and lost, or stays unacknowledged. The
consumer (``app/consumer.py``) checks each message here first and dead-letters what fails.

Only the fields a worker reads are checked; unknown headers (custom stamps, our own
``job_correlation_id``) pass. Protocol v1 (the task name in the body) is refused: this project
only sends v2. https://docs.celeryq.dev/en/stable/internals/protocol.html
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery.utils.time import maybe_iso8601
from kombu.message import Message

Check = Callable[[Any], bool]


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: Any) -> bool:
    return value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 2**31
    )


def _timelimit(value: Any) -> bool:
    """``[hard, soft]``, each None or seconds."""
    return isinstance(value, list | tuple) and len(value) == 2 and all(map(_seconds, value))


def _iso_datetime(value: Any) -> bool:
    """Parsed as the worker will parse it (``celery.worker.request.Request``)."""
    if not isinstance(value, str):
        return False
    try:
        maybe_iso8601(value)
    except Exception:  # ValueError, and OverflowError for "9999-12-31T24:00:00"
        return False
    return True


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _text_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(map(_text, value))


def _signature(value: Any) -> bool:
    """A serialised signature: a dict naming its task (a callback without one would fail only
    after the job ran, its effect done)."""
    return isinstance(value, dict) and isinstance(value.get("task"), str)


def _signatures(value: Any) -> bool:
    """Callbacks, errbacks and chain: a list of serialised signatures."""
    return isinstance(value, list | tuple) and all(map(_signature, value))


#: Header -> what its value must be. ``task`` and ``id`` are required; the rest may be absent.
HEADERS: dict[str, Check] = {
    "task": lambda value: isinstance(value, str) and value != "",
    "id": lambda value: isinstance(value, str) and value != "",
    "lang": _optional(_text),
    "shadow": _optional(_text),
    "eta": _optional(_iso_datetime),
    "expires": _optional(_iso_datetime),
    "group": _optional(_text),
    "group_index": _optional(_count),
    "retries": _optional(_count),
    "timelimit": _optional(_timelimit),
    "root_id": _optional(_text),
    "parent_id": _optional(_text),
    "argsrepr": _optional(_text),
    "kwargsrepr": _optional(_text),
    "origin": _optional(_text),
    "ignore_result": _optional(lambda value: isinstance(value, bool)),
    "replaced_task_nesting": _optional(_count),
    "stamped_headers": _optional(_text_list),
    "stamps": _optional(lambda value: isinstance(value, dict)),
}
REQUIRED_HEADERS = ("task", "id")

#: The third part of the body: what runs after the task.
EMBED: dict[str, Check] = {
    "callbacks": _optional(_signatures),
    "errbacks": _optional(_signatures),
    "chain": _optional(_signatures),
    "chord": _optional(_signature),
}


def headers_problem(headers: Any) -> str | None:
    """What is wrong with a message's headers for protocol v2, or None."""
    if not isinstance(headers, Mapping):
        return f"headers are {type(headers).__name__}, not a table"
    for name in REQUIRED_HEADERS:
        if name not in headers:
            return f"no {name!r} header (not a Celery protocol v2 message)"
    for name, check in HEADERS.items():
        if name in headers and not check(headers[name]):
            return f"header {name!r} is invalid: {_short(headers[name])}"
    return None


def body_problem(body: Any) -> str | None:
    """What is wrong with a decoded body, which must be ``[args, kwargs, embed]``, or None."""
    if not isinstance(body, list | tuple) or len(body) != 3:
        return f"body is not [args, kwargs, embed]: {_short(body)}"
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        return f"args are {type(args).__name__}, not a list"
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        return f"kwargs are not an object: {_short(kwargs)}"
    if not isinstance(embed, dict):
        return f"embed is {type(embed).__name__}, not an object"
    for name, check in EMBED.items():
        if not check(embed.get(name)):
            return f"embed {name!r} is invalid: {_short(embed[name])}"
    return None


def message_problem(message: Message) -> str | None:
    """What is wrong with a task message, decoding its body (Celery decodes it anyway and keeps
    the result on the message, so the body is not decoded twice), or None."""
    if message.errors:  # kombu could not decompress it (a bad ``compression`` header)
        return f"cannot read body ({type(message.errors[0][1]).__name__})"
    problem = headers_problem(message.headers)
    if problem:
        return problem
    try:
        body = message.decode()
    except Exception as exc:  # any decoder error: the bytes are the problem, not the worker
        return f"cannot decode body ({type(exc).__name__}: {_short(exc)})"
    return body_problem(body)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
