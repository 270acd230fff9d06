"""The images family's settings: set them in config/settings.py (or the environment there) to
change them; these are the defaults."""

from __future__ import annotations

from typing import Any

from django.conf import settings

#: Each variant: ``width`` and ``height`` (``fit: "cover"``: exactly that box, centre-cropped;
#: ``fit: "width"``: that width, the height keeping the proportions; never enlarged), ``format``
#: (JPEG, PNG, WEBP or AVIF) and ``quality`` (JPEG, WEBP, AVIF: 1 to 100).
VARIANTS: dict[str, dict[str, Any]] = getattr(
    settings,
    "IMAGES_VARIANTS",
    {
        "thumb": {"fit": "cover", "width": 200, "height": 200, "format": "JPEG", "quality": 82},
        "medium": {"fit": "width", "width": 800, "format": "WEBP", "quality": 80},
        "large": {"fit": "width", "width": 1600, "format": "JPEG", "quality": 85},
    },
)
#: The decoders a source may use (Pillow format names): anything else is refused before
#: decoding. TIFF, BMP, PSD, EPS and the rest are left out: seldom uploaded, a wider surface.
FORMATS: tuple[str, ...] = tuple(
    getattr(settings, "IMAGES_FORMATS", ("JPEG", "PNG", "WEBP", "GIF", "AVIF"))
)
#: The largest source file, in bytes: an upload over it is a 413, a job a permanent failure.
MAX_SOURCE_BYTES: int = getattr(settings, "IMAGES_MAX_SOURCE_BYTES", 15 * 1024 * 1024)
#: The most pixels (width x height) a source may have: a decompression bomb is refused from its
#: header, before any decoding. 50 megapixels, decoded as RGBA, are 200 MB.
MAX_PIXELS: int = getattr(settings, "IMAGES_MAX_PIXELS", 50_000_000)
#: Keep an RGB source's ICC profile in the variants (False: convert the pixels to sRGB and
#: write no profile, which every browser then reads as sRGB).
KEEP_ICC: bool = getattr(settings, "IMAGES_KEEP_ICC", False)
#: What transparent pixels become in a format without transparency (JPEG).
BACKGROUND: str = getattr(settings, "IMAGES_BACKGROUND", "#ffffff")
#: Where variants (``<OUTPUT_DIR>/<job id>/<variant>.<ext>``) and uploads go in default storage.
OUTPUT_DIR: str = getattr(settings, "IMAGES_OUTPUT_DIR", "images")
