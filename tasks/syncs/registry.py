"""Declared syncs. A sync is a few lines: where its pages are, how they are numbered, how a
remote record becomes the fields of a row, and which model (and unique field) to upsert into.

    SYNCS["contacts"] = Sync(
        name="contacts",
        url="https://crm.example.com/api/contacts",
        pagination=PageNumbers(param="page", size_param="per_page", size=100, total="total_pages"),
        records="data",                # where the page's list of records is
        map=contact_map,               # remote record -> {"external_id": ..., "name": ...}
        model=Contact,                 # upserted by `key`, a unique field
        key="external_id",
        per_second=5,                  # the remote's budget, shared by every worker
    )

``map`` raises anything for a record the remote should not have sent (a missing field, a wrong
type): the page is malformed and the run fails naming it. It raises ``RecordRejected`` for a
record it chooses to skip: counted ``failed``, the page goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from django.db import models
from django.utils.dateparse import parse_datetime

from tasks.syncs.models import Contact

#: A page's position: a page number, an offset, or the remote's own cursor (a string).
Cursor = int | str


class RecordRejected(Exception):
    """Raised by a sync's ``map`` for a record it skips (counted ``failed``)."""


class MalformedPage(ValueError):
    """Raised by a pagination for a page whose paging fields are wrong."""


def _count(body: Mapping[str, Any], name: str) -> int | None:
    if not name or name not in body:
        return None
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedPage(f"{name!r} is not a count: {value!r}")
    return value


@dataclass(frozen=True)
class PageNumbers:
    """``?page=1&per_page=100``, ``?page=2``...; the end: ``total`` pages (when the remote gives
    that field), else the first page with fewer than ``size`` records."""

    param: str = "page"
    size_param: str = "per_page"
    size: int = 100
    total: str = "total_pages"
    first: Cursor = 1

    def params(self, cursor: Cursor) -> dict[str, str]:
        return {self.param: str(cursor), self.size_param: str(self.size)}

    def next(self, *, cursor: Cursor, body: Mapping[str, Any], count: int) -> Cursor | None:
        assert isinstance(cursor, int)
        total = _count(body, self.total)
        if total is not None:
            return cursor + 1 if cursor < total else None
        return cursor + 1 if count >= self.size else None

    def total_pages(self, body: Mapping[str, Any]) -> int | None:
        return _count(body, self.total)

    def label(self, cursor: Cursor) -> str:
        return f"page {cursor}"


@dataclass(frozen=True)
class Offsets:
    """``?offset=0&limit=100``, ``?offset=100``...; the end: a page with fewer than ``size``."""

    param: str = "offset"
    size_param: str = "limit"
    size: int = 100
    first: Cursor = 0

    def params(self, cursor: Cursor) -> dict[str, str]:
        return {self.param: str(cursor), self.size_param: str(self.size)}

    def next(self, *, cursor: Cursor, body: Mapping[str, Any], count: int) -> Cursor | None:
        assert isinstance(cursor, int)
        return cursor + count if count >= self.size else None

    def total_pages(self, body: Mapping[str, Any]) -> int | None:
        return None

    def label(self, cursor: Cursor) -> str:
        return f"offset {cursor}"


@dataclass(frozen=True)
class Cursors:
    """``?cursor=<the previous page's next_cursor>``; the first page without it; the end: a
    page whose ``next`` field is null, empty or absent."""

    param: str = "cursor"
    next_field: str = "next_cursor"
    size_param: str = "limit"
    size: int = 100
    first: Cursor = ""

    def params(self, cursor: Cursor) -> dict[str, str]:
        params = {self.size_param: str(self.size)}
        if cursor:
            params[self.param] = str(cursor)
        return params

    def next(self, *, cursor: Cursor, body: Mapping[str, Any], count: int) -> Cursor | None:
        value = body.get(self.next_field)
        if value is None or value == "":
            return None
        if not isinstance(value, str) or len(value) > 2000:
            raise MalformedPage(f"{self.next_field!r} is not a cursor: {value!r:.100}")
        if value == cursor:
            raise MalformedPage(f"{self.next_field!r} is the page's own cursor: a loop")
        return value

    def total_pages(self, body: Mapping[str, Any]) -> int | None:
        return None

    def label(self, cursor: Cursor) -> str:
        return f"cursor {cursor!r}" if cursor else "the first page"


#: How pages are numbered: ``first``, ``params(cursor)``, ``next(...)``, ``total_pages(body)``
#: (how many pages, when the remote says: for progress and fan-out) and ``label(cursor)``.
Pagination = PageNumbers | Offsets | Cursors


@dataclass(frozen=True)
class Sync:
    name: str
    #: The first page's URL, without the paging query. ``SYNCS_REMOTES[name]`` replaces it.
    url: str
    pagination: Pagination
    map: Callable[[Any], dict[str, Any]]
    model: type[models.Model]
    key: str = "external_id"
    records: str = "data"
    #: Requests per second to the remote's host, across every worker; ``SYNCS_RATES[name]``
    #: replaces it. 0: no limit.
    per_second: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Called once with the run's counts when a run completes (the fan-out's final callback).
    on_finish: Callable[[dict[str, int]], None] | None = None


# --- the example: contacts of a CRM --------------------------------------------------------------


def _text(record: Mapping[str, Any], name: str, *, longest: int) -> str:
    value = record[name]
    if not isinstance(value, str):
        raise TypeError(f"{name!r} is not a string: {value!r:.60}")
    if "\x00" in value:
        raise ValueError(f"{name!r} holds a NUL character")
    if len(value) > longest:
        raise ValueError(f"{name!r} is longer than {longest} characters")
    return value


def contact_map(record: Any) -> dict[str, Any]:
    """``{"id": 7, "name": "Ann", "email": "ann@example.com", "updated_at": "2024-05-01T..."}``
    -> a ``Contact``'s fields. An email without "@" is rejected (the record is skipped)."""
    if not isinstance(record, dict):
        raise TypeError(f"a record is an object, not {type(record).__name__}")
    remote_id = record["id"]
    if isinstance(remote_id, bool) or not isinstance(remote_id, int | str):
        raise TypeError(f"'id' is not a number or a string: {remote_id!r:.60}")
    external_id = str(remote_id)
    if not external_id or len(external_id) > 100 or "\x00" in external_id:
        raise ValueError(
            f"'id' is empty, longer than 100 characters or holds NUL: {remote_id!r:.60}"
        )
    email = _text(record, "email", longest=254)
    if "@" not in email:
        raise RecordRejected(f"contact {external_id}: {email!r:.60} is not an email address")
    updated = record.get("updated_at")
    updated_at = None
    if updated is not None:
        if not isinstance(updated, str):
            raise TypeError(f"'updated_at' is not a date: {updated!r:.60}")
        updated_at = parse_datetime(updated)
        if updated_at is None:
            raise ValueError(f"'updated_at' is not an ISO 8601 date: {updated!r:.60}")
        if updated_at.tzinfo is None:
            updated_at = updated_at.replace(tzinfo=UTC)
    return {
        "external_id": external_id,
        "name": _text(record, "name", longest=200),
        "email": email,
        "remote_updated_at": updated_at,
    }


#: Every sync, by name: ``POST /api/syncs/ {"sync": name}`` and the schedule start them.
SYNCS: dict[str, Sync] = {
    "contacts": Sync(
        name="contacts",
        url="https://crm.example.com/api/contacts",
        pagination=PageNumbers(param="page", size_param="per_page", size=100),
        records="data",
        map=contact_map,
        model=Contact,
        key="external_id",
        per_second=5.0,
    ),
}
