"""The Retry-After parser (app/retry_after.py) that webhooks and notification providers share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.retry_after import retry_after_seconds

NOW = datetime(2015, 10, 21, 7, 27, tzinfo=UTC)  # Wed, 21 Oct 2015 07:27:00 GMT


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("\t120", 120.0),
        ("0042", 42.0),
        ("99999999", 600.0),  # capped
        ("9" * 5000, 600.0),  # a delay of ages: the cap, not an error
        # The three HTTP-date formats of RFC 9110, one minute from NOW:
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 60.0),
        ("Wed Oct 21 07:28:00 2015", 60.0),
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),  # in the past
        ("Wed, 21 Oct 2015 09:28:00 +0200", 60.0),  # not GMT as it should be, but unambiguous
        ("Wed, 21 Oct 2015 08:27:00 GMT", 600.0),  # an hour: capped
        ("Fri, 31 Dec 9999 23:59:59 GMT", 600.0),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("²", None),  # a digit to str.isdigit, not to RFC 9110
        ("5 s", None),
        ("", None),
        (None, None),
    ],
)
def test_both_forms_are_read_and_capped(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value=value, now=NOW, cap=600) == seconds


def test_a_date_without_a_zone_and_a_naive_now_are_utc() -> None:
    """An HTTP-date is GMT by definition, whatever a sloppy server wrote."""
    naive_now = NOW.replace(tzinfo=None)
    assert retry_after_seconds(value="Wed Oct 21 07:28:00 2015", now=naive_now, cap=600) == 60.0
    tokyo = NOW.astimezone(ZoneInfo("Asia/Tokyo"))
    assert retry_after_seconds(value="Wed, 21 Oct 2015 07:28:30 GMT", now=tokyo, cap=600) == 90.0


@given(
    value=st.one_of(
        st.none(),
        st.text(),
        st.from_regex(r"\A[ \t]*[0-9]{1,30}[ \t]*\Z"),
        st.datetimes(timezones=st.one_of(st.none(), st.just(UTC))).map(
            lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")
        ),
    ),
    now=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    cap=st.floats(min_value=0, max_value=1e9),
)
def test_any_header_value_gives_none_or_seconds_within_the_cap(
    value: str | None, now: datetime, cap: float
) -> None:
    seconds = retry_after_seconds(value=value, now=now, cap=cap)
    assert seconds is None or 0 <= seconds <= cap


def test_the_date_form_counts_from_now() -> None:
    later = NOW + timedelta(seconds=30)
    assert retry_after_seconds(value="Wed, 21 Oct 2015 07:28:00 GMT", now=later, cap=600) == 30.0
