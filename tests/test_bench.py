"""``make bench`` itself, on a few jobs, rows and images per scenario: every scenario runs to its
end and writes the figures the README and the issues quote. A benchmark nobody runs breaks
unnoticed: its email scenario once stopped at its first run (a server process that could not
import its module), and nothing else failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

#: Each scenario as small as it can be and still measure something: the point is that it runs.
TINY = {
    "BENCH_N": "200",
    "BENCH_DRAIN_N": "200",
    "BENCH_REPEAT": "1",
    "BENCH_LATENCY_N": "50",
    "BENCH_RELAY_N": "200",
    "BENCH_DB_DRAIN_N": "200",
    "BENCH_TRACKED_N": "200",
    "BENCH_SMTP_N": "5",
    "BENCH_THUMBNAIL_N": "4",  # one per source photo
    "BENCH_SYNC_PAGES": "3",
    "BENCH_EXPORT_ROWS": "2000",
}
#: The figures the README's benchmark tables and the issues name.
QUOTED = [
    "noop_drain_ratio_vs_bare",
    "tracked_drain_ratio_vs_bare",
    "tracked_drain_ratio_scraped_vs_not",
    "events_drain_ratio_vs_no_events",
    "enqueue_p99_ratio_vs_bare",
    "relay_ratio_vs_unconfirmed_publish",
    "smtp_bulk_speedup",
    "thumbnail_speedup_vs_pillow",
    "thumbnail_peak_rss_mb",
    "sync_speedup_vs_naive",
    "csv_copy_ratio_vs_bare_copy",
    "csv_cursor_ratio_vs_bare_copy",
    "xlsx_rows_per_s",
    "jsonl_rows_per_s",
]


@pytest.mark.slow
@pytest.mark.heavy
def test_make_bench_runs_every_scenario_and_writes_the_quoted_figures(tmp_path: Path) -> None:
    results = tmp_path / "bench-results.json"
    run = subprocess.run(
        [sys.executable, "-m", "tests.bench"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, **TINY, "BENCH_RESULTS": str(results), "BENCH_ONLY": ""},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    figures = json.loads(results.read_text())
    for key in QUOTED:
        assert isinstance(figures.get(key), int | float) and figures[key] > 0, (
            key,
            figures.get(key),
        )
    # A difference of two processes' peaks: noise makes it a little negative at times, as in the
    # CI run where the assertion was ">= 0" (it read -0.1). What it must never be is large.
    growth = figures["export_rss_growth_mb"]
    assert isinstance(growth, int | float) and abs(growth) < 20, growth
    assert "noop_drain_ratio_vs_bare = " in run.stdout  # the printed table
