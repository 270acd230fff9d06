"""The email benchmark's script (``make bench``'s email scenario) on a few messages: its SMTP
server runs in a spawned process, which once could not import tests.smtp (the models were not
loaded there), and the benchmark stopped at its first email scenario."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.bench.smtp import RESULT_PREFIX
from tests.support import ROOT, database_url


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["per-message", "bulk"])
def test_the_email_benchmark_sends_what_it_says(mode: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.bench.smtp", mode, "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url(), "HOME": "/root"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    figures = json.loads(line.removeprefix(RESULT_PREFIX))
    assert figures["n"] == 3 and figures["seconds"] > 0
