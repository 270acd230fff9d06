"""The Retry-After header (RFC 9110, section 10.2.3): how long a server asks us to wait.

One parser for every family that calls someone else's server (webhooks, notification providers).
The header is input from that server: whatever it holds, the answer is a number of seconds
between 0 and the caller's cap, or None when there is nothing usable (the job's own backoff then
applies). It never raises.

    retry_after_seconds(value=response.headers.get("retry-after"), now=timezone.now(), cap=600)
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime

#: delay-seconds = 1*DIGIT: ASCII digits only (not "²", not "-5", not "1.5").
_DELAY_SECONDS = re.compile(r"[0-9]+", re.ASCII)
#: More digits than this is a delay of ages: the cap, without turning a huge string into a number.
_MOST_DIGITS = 15


def retry_after_seconds(*, value: str | None, now: datetime, cap: float) -> float | None:
    """Seconds a Retry-After header value asks to wait, within ``[0, cap]``; None if unusable.

    Both forms of RFC 9110: delay-seconds (``"120"``) and an HTTP-date in any of its three
    formats (``"Sun, 06 Nov 1994 08:49:37 GMT"``, the obsolete RFC 850 and asctime forms). A date
    is read against ``now``; one in the past is 0. An HTTP-date is always GMT, so a date without
    a zone is read as UTC, and so is a naive ``now``. Whitespace around the value is ignored.
    """
    if not value or cap < 0:
        return None
    value = value.strip(" \t")
    if _DELAY_SECONDS.fullmatch(value):
        if len(value.lstrip("0")) > _MOST_DIGITS:
            return float(cap)
        return min(float(int(value)), float(cap))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        seconds = (when - now).total_seconds()
    except OverflowError:
        return None
    return min(max(seconds, 0.0), float(cap))
