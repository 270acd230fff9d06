"""``python -m tests.images.peak FILE``: how much this process's peak memory grows (MB) while
``image_variants_make`` makes one small variant of FILE; printed alone on the last line. A
process of its own, so that nothing else moved its peak."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def main(path: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from tasks.images.services import image_variants_make

    data = Path(path).read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts over from here
    before = _status("VmRSS")
    image_variants_make(data=data, variants={"small": {"width": 200, "format": "PNG"}})
    print(round(_status("VmHWM") - before, 1))


if __name__ == "__main__":
    main(sys.argv[1])
