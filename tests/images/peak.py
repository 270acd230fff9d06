"""``python -m tests.images.peak FILE``: how much this process's peak memory grows (MB) while
``image_variants_make`` makes one small variant of FILE; printed alone on the last line. A
process of its own, so that nothing else moved its peak."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.memory import peak_reset, peak_rss_mb, rss_mb


def main(path: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from tasks.images.services import image_variants_make

    data = Path(path).read_bytes()
    peak_reset()
    before = rss_mb()
    image_variants_make(data=data, variants={"small": {"width": 200, "format": "PNG"}})
    print(round(peak_rss_mb() - before, 1))


if __name__ == "__main__":
    main(sys.argv[1])
