from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notifications.twilio import FakeTwilio


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server
