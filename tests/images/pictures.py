"""Images made in the tests with Pillow: photos, rotated ones, CMYK, transparency, bad files."""

from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image, ImageDraw

LEFT, RIGHT = (220, 30, 30), (30, 60, 220)


def encode(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def photo(width: int = 400, height: int = 300, seed: int = 0) -> Image.Image:
    """Something photo-like: gradients and shapes, different for each ``seed``."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(12):
        x = (seed * 37 + i * 53) % width
        y = (seed * 11 + i * 29) % height
        colour = ((seed * 40 + i * 20) % 256, (i * 70) % 256, (seed * 90 + 60) % 256)
        draw.ellipse([x, y, x + width // 5, y + height // 5], fill=colour)
    return image


def halves(width: int = 400, height: int = 300) -> Image.Image:
    """Left half LEFT (red), right half RIGHT (blue)."""
    image = Image.new("RGB", (width, height), LEFT)
    image.paste(RIGHT, (width // 2, 0, width, height))
    return image


def rotated_jpeg() -> bytes:
    """``halves()`` as a camera held upright stores it: pixels turned a quarter, EXIF
    orientation 6 (rotate 90 degrees clockwise to show), and a GPS position."""
    upright = halves(300, 400)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 400 x 300, as the sensor saw it
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera maker"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return encode(stored, exif=exif.tobytes(), quality=95)


def bomb() -> bytes:
    """A PNG of a few KB whose header says 10,000 x 10,000 pixels (100 megapixels)."""
    return encode(Image.new("1", (10_000, 10_000)), "PNG")


def truncated_jpeg() -> bytes:
    data = encode(photo(), quality=90)
    return data[: len(data) // 2]


BAD_FILES: dict[str, bytes] = {
    "bomb": b"",  # made on first use (bad_file): 10k x 10k takes a moment
    "truncated JPEG": b"",
    "fake PNG": b"\x89PNG\r\n\x1a\n" + b"this is not a PNG at all " * 40,
    "SVG": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
    "zero bytes": b"",
}

#: What each bad file's error says.
BAD_MESSAGES = {
    "bomb": "more than IMAGES_MAX_PIXELS",
    "truncated JPEG": "truncated or corrupt JPEG file",
    "fake PNG": "not an image of an allowed type",
    "SVG": "not an image of an allowed type",
    "zero bytes": "the file is empty",
    "over the limit": "more than IMAGES_MAX_SOURCE_BYTES",
}


def bad_file(name: str) -> bytes:
    if name == "bomb":
        return bomb()
    if name == "truncated JPEG":
        return truncated_jpeg()
    if name == "over the limit":  # 20 MB that start like a JPEG
        return encode(photo(), quality=90)[:2000] + os.urandom(20 * 1024 * 1024)
    return BAD_FILES[name]
