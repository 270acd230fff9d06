"""``manage.py check`` (and ``migrate``, and ``make run``'s preflight) on ``IMAGES_VARIANTS``: a
variant the jobs cannot make is a startup error, not a job that fails on every image."""

from __future__ import annotations

import re
from typing import Any

from django.core import checks

from tasks.images import conf

FITS = ("cover", "width")
FORMATS = ("JPEG", "PNG", "WEBP", "AVIF")
#: A variant's name is part of its file's name (``<job id>/<name>.<ext>``).
NAME = re.compile(r"[A-Za-z0-9_-]{1,50}")


def variant_problems(name: Any, spec: Any) -> list[str]:
    """What is wrong with the variant ``name``: ``spec`` as IMAGES_VARIANTS gives it."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return [f"name {name!r}: letters, digits, '-' and '_' only (it names the file)"]
    if not isinstance(spec, dict):
        return [f"{name}: a dict of fit, width, height, format and quality, not {spec!r}"]
    problems = []
    fit = spec.get("fit", "width")
    if fit not in FITS:
        problems.append(f"{name}: fit {fit!r} is not one of {', '.join(FITS)}")
    for size in ("width", "height") if fit == "cover" else ("width",):
        value = spec.get(size)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 20_000:
            problems.append(
                f"{name}: {size} must be a number of pixels (1 to 20000), not {value!r}"
            )
    fmt = spec.get("format")
    if not isinstance(fmt, str) or fmt.upper() not in FORMATS:
        problems.append(f"{name}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    quality = spec.get("quality", 85)
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
        problems.append(f"{name}: quality must be 1 to 100, not {quality!r}")
    unknown = sorted(set(spec) - {"fit", "width", "height", "format", "quality"})
    if unknown:
        problems.append(f"{name}: unknown keys {unknown}")
    return problems


@checks.register()
def images_variants_check(**kwargs: Any) -> list[checks.CheckMessage]:
    if not isinstance(conf.VARIANTS, dict) or not conf.VARIANTS:
        return [
            checks.Error("IMAGES_VARIANTS must be a dict of at least one variant", id="images.E001")
        ]
    return [
        checks.Error(f"IMAGES_VARIANTS: {problem}", id="images.E001")
        for name, spec in conf.VARIANTS.items()
        for problem in variant_problems(name, spec)
    ]
