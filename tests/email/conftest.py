from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_django.fixtures import Settings

from tests.smtp import SmtpSink, smtp_sink


@pytest.fixture
def sink(settings: Settings) -> Iterator[SmtpSink]:
    """A plain SMTP server, and this process's email settings pointing at it."""
    with smtp_sink() as server:
        for name, value in server.settings().items():
            setattr(settings, name, value)
        yield server
