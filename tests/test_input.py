"""Bad HTTP input answers a 4xx with a JSON message, never a 500: specific cases, then generated
query strings thrown at the real endpoints (on PostgreSQL in CI, where a NUL character used to
reach a query). JSON bodies: tests/example/test_input.py, against a family's endpoint."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.usefixtures("development_http"), pytest.mark.django_db]


def client_for(who: str) -> Client:
    """A client that reports a view's exception as the 500 a browser would get."""
    client = Client(raise_request_exception=False)
    if who != "anonymous":
        user, _ = User.objects.get_or_create(username=who, is_staff=who == "staff")
        client.force_login(user)
    return client


def error_json(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    message: str = response.json()["error"]
    return message


@pytest.mark.parametrize(
    ("who", "url", "where"),
    [
        ("alice", "/api/jobs/?task=%00", "query parameter 'task'"),
        ("alice", "/jobs/?task=a%00b", "query parameter 'task'"),
        ("alice", "/api/jobs/?%00=1", "query parameter '\\x00'"),
        ("staff", "/admin/app/jobrecord/?q=%00", "query parameter 'q'"),
        ("anonymous", "/api/jobs/%00/", "the path"),
    ],
)
def test_a_nul_character_anywhere_in_the_url_is_a_400(who: str, url: str, where: str) -> None:
    assert error_json(client_for(who).get(url)) == (
        f"{where} contains a NUL character (%00), which is not allowed"
    )


def test_a_nul_character_in_a_form_field_or_a_cookie_is_a_400() -> None:
    client = client_for("alice")
    response = client.post("/admin/login/", {"username": "a\x00", "password": "x"})
    assert error_json(response).startswith("form field 'username' contains a NUL character")
    client.cookies["sessionid"] = "\x00" * 40
    assert error_json(client.get("/api/jobs/")).startswith("cookie 'sessionid'")


# --- generated input ----------------------------------------------------------------------------

#: Text as a client may send it, NUL characters and lone surrogates included.
TEXT = st.text() | st.sampled_from(["\x00", "a\x00b", "\ud800"])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT  # floats: inf, nan too
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
#: Numbers at the edges (inf, nan, past a float, past 64 bits) are rare in st.floats(): add them.
EXTREMES = st.sampled_from([math.inf, -math.inf, math.nan, 10**400, -(2**63), 1e-320])
FIELD_VALUES = EXTREMES | st.floats() | st.integers() | TEXT | JSON_VALUES
QUERY_NAMES = st.sampled_from(["status", "task", "limit", "q", "o", "p"]) | TEXT


def query_encode(pairs: list[tuple[str, str]]) -> str:
    """Percent-encoded as sent; a lone surrogate becomes bytes that are not UTF-8."""
    return urlencode(
        [(k.encode(errors="surrogatepass"), v.encode(errors="surrogatepass")) for k, v in pairs]
    )


QUERIES = st.lists(st.tuples(QUERY_NAMES, TEXT), max_size=4).map(query_encode) | st.from_regex(
    r"[a-z%0-9=&;+.\-]{0,40}", fullmatch=True
)
GET_URLS = st.sampled_from(
    [
        ("alice", "/api/jobs/"),
        ("alice", "/jobs/"),
        ("staff", "/api/jobs/"),
        ("staff", "/admin/app/jobrecord/"),
        ("anonymous", "/api/jobs/0f1c0000-0000-4000-8000-000000000000/"),
    ]
)
GENERATED = hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_no_server_error(response: Any, *, api: bool) -> None:
    assert response.status_code < 500, response.content[:1000]
    if api and response.status_code >= 400:
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["error"]


@GENERATED
@given(url=GET_URLS, query=QUERIES)
def test_generated_query_strings_never_get_a_server_error(url: tuple[str, str], query: str) -> None:
    who, path = url
    response = client_for(who).get(f"{path}?{query}")
    assert_no_server_error(response, api=path.startswith("/api/"))
