"""``python -m tests.bench.scraper``: scrapes the template's /metrics page (``metrics_page()``,
what the view returns) every BENCH_SCRAPE_INTERVAL seconds until stopped, beside a drain: what
Prometheus scraping costs the workers (``tracked_drain_ratio_scraped_vs_not``). Each scrape's
milliseconds go, one line each, to BENCH_SCRAPE_LOG.

The interval defaults to 1 s, fifteen times Prometheus' usual rate, so that a cost shows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def main() -> None:
    import django

    django.setup()
    from app.metrics import metrics_page

    interval = float(os.environ.get("BENCH_SCRAPE_INTERVAL", "1"))
    log = Path(os.environ["BENCH_SCRAPE_LOG"])
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    with log.open("a") as out:
        while not stop:
            started = time.monotonic()
            metrics_page()
            took = time.monotonic() - started
            out.write(f"{took * 1000:.2f}\n")
            out.flush()
            time.sleep(max(interval - took, 0))


@contextmanager
def scraping(env: Mapping[str, str], directory: Path) -> Iterator[Path]:
    """A scraper process on ``env``'s database and vhost while the block runs; yields the file
    its scrapes' milliseconds go to."""
    log = directory / "scrapes.txt"
    log.touch()
    with (directory / "scraper.log").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.scraper"],
            env={**env, "BENCH_SCRAPE_LOG": str(log)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield log
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


if __name__ == "__main__":
    main()
