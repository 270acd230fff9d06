"""Bad JSON bodies at a family's endpoint (``POST /api/example/demo/``) get a 400 naming what is
wrong, never a 500, and enqueue nothing: specific cases, then generated bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.models import JobRecord
from tests.test_input import (
    EXTREMES,
    GENERATED,
    JSON_VALUES,
    TEXT,
    assert_no_server_error,
    client_for,
    error_json,
)

pytestmark = [pytest.mark.usefixtures("development_http"), pytest.mark.django_db]


def demo_post(body: str | bytes) -> Any:
    return client_for("anonymous").post("/api/example/demo/", body, content_type="application/json")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"upto": 1e309}', "the JSON body holds '1e309', a number out of range"),
        ('{"upto": -1e309}', "the JSON body holds '-1e309', a number out of range"),
        ('{"upto": NaN}', "the JSON body holds NaN, which is not JSON"),
        ('{"seconds": 1' + "0" * 400 + "}", "seconds: Input should be"),
        ('{"upto": 1' + "0" * 400 + "}", "upto: Input should be"),
        ('{"upto": ' + "[" * 500 + "]" * 500 + "}", "upto: Input should be a valid integer"),
        ("[" * 100_000 + "]" * 100_000, "the JSON body is nested too deeply"),
        ('{"upto": ' + '{"a": ' * 5000 + "1" + "}" * 5001, "the JSON body is nested too deeply"),
        ('{"upto": "\\u0000"}', "the JSON body contains a NUL character"),
        ('{"upto": "\\ud800"}', "the JSON body contains a NUL character or a lone surrogate"),
        (b'{"upto": "\xff"}', "the body is not valid JSON"),
        ("[1]", "the JSON body must be an object"),
    ],
)
def test_a_bad_demo_body_is_a_400_naming_what_is_wrong(body: str, message: str) -> None:
    assert error_json(demo_post(body)).startswith(message)
    assert not JobRecord.objects.exists()


FIELD_VALUES = EXTREMES | st.floats() | st.integers() | TEXT | JSON_VALUES
DEMO_BODIES = st.fixed_dictionaries(
    {}, optional={"upto": FIELD_VALUES, "seconds": FIELD_VALUES}
) | st.dictionaries(TEXT, JSON_VALUES, max_size=3)


@GENERATED
@given(body=DEMO_BODIES | JSON_VALUES)
def test_generated_json_bodies_never_get_a_server_error(body: Any) -> None:
    response = demo_post(json.dumps(body))
    assert_no_server_error(response, api=True)
    if response.status_code == 202:  # what was enqueued is within the documented bounds
        kwargs = JobRecord.objects.get(id=response.json()["id"]).payload["kwargs"]
        assert 1 <= kwargs["upto"] <= 10_000_000 and 0 <= kwargs["seconds"] <= 60


@GENERATED
@given(body=st.binary(max_size=200))
def test_generated_raw_bodies_never_get_a_server_error(body: bytes) -> None:
    assert_no_server_error(demo_post(body), api=True)
