"""``python -m tests.bench.thumbnail MODE N``: N 400-pixel-wide JPEG thumbnails of 12-megapixel
photo-like JPEGs; prints RESULT {"seconds", "peak_rss_mb", "ssim"}.

- ``pillow``: plain Pillow, open / resize (Lanczos) / save: a full decode of each photo.
- ``template``: the images family's path, ``image_variants_make`` with one variant (JPEG draft
  decoding sized for the variant, orientation, colour, progressive optimised JPEG).
- ``draft2``: the same, decoding at twice the size the variant needs (``DRAFT_FACTOR = 2``).

Quality: the mean SSIM (grey, 8x8 windows) of each output against a reference made from the
full decode, resized with Lanczos and not compressed. Peak RSS is this process's while it makes the
thumbnails (Django and Pillow loaded, the four source files in memory), its generation of the
photos forgotten.
"""

from __future__ import annotations

import gc
import io
import json
import os
import sys
import time

from PIL import Image, ImageDraw, ImageFilter

from tests.memory import peak_reset, peak_rss_mb

RESULT_PREFIX = "RESULT "
SIZE = (4000, 3000)
WIDTH = 400
SOURCES = 4


def photo_jpeg(seed: int) -> bytes:
    """A 12-megapixel photo-like JPEG: gradients, soft shapes, fine grain (quality 90)."""
    width, height = SIZE
    base = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize(SIZE),
            Image.radial_gradient("L").resize(SIZE),
            Image.linear_gradient("L").rotate(90 + seed * 20).resize(SIZE),
        ],
    )
    draw = ImageDraw.Draw(base)
    for i in range(40):
        x, y = (seed * 131 + i * 977) % width, (seed * 71 + i * 613) % height
        r = 60 + (i * 37) % 400
        draw.ellipse([x, y, x + r, y + r * 2 // 3], fill=((i * 53) % 256, (i * 97) % 256, 128))
    base = base.filter(ImageFilter.GaussianBlur(3))
    grain = Image.effect_noise(SIZE, 24).convert("RGB")
    photo = Image.blend(base, grain, 0.12)
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=90)
    return out.getvalue()


def ssim(a: Image.Image, b: Image.Image) -> float:
    """Mean SSIM of two same-size images, grey, over 8x8 windows."""
    x, y = a.convert("L"), b.convert("L")
    width, height = x.size
    px, py = x.tobytes(), y.tobytes()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    total, count = 0.0, 0
    for top in range(0, height - 7, 8):
        for left in range(0, width - 7, 8):
            xs = [px[(top + j) * width + left + i] for j in range(8) for i in range(8)]
            ys = [py[(top + j) * width + left + i] for j in range(8) for i in range(8)]
            mx, my = sum(xs) / 64, sum(ys) / 64
            vx = sum((v - mx) ** 2 for v in xs) / 63
            vy = sum((v - my) ** 2 for v in ys) / 63
            cov = sum((p - mx) * (q - my) for p, q in zip(xs, ys, strict=True)) / 63
            total += ((2 * mx * my + c1) * (2 * cov + c2)) / (
                (mx * mx + my * my + c1) * (vx + vy + c2)
            )
            count += 1
    return total / count


def reference(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    height = round(image.size[1] * WIDTH / image.size[0])
    return image.resize((WIDTH, height), Image.Resampling.LANCZOS)


def main(mode: str, n: int) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from tasks.images import services

    sources = [photo_jpeg(seed) for seed in range(SOURCES)]
    spec = {"t": {"fit": "width", "width": WIDTH, "format": "JPEG", "quality": 85}}
    if mode == "draft2":
        services.DRAFT_FACTOR = 2

    def plain(data: bytes) -> bytes:
        image = Image.open(io.BytesIO(data))
        height = round(image.size[1] * WIDTH / image.size[0])
        out = io.BytesIO()
        image.resize((WIDTH, height), Image.Resampling.LANCZOS).save(out, "JPEG", quality=85)
        return out.getvalue()

    def template(data: bytes) -> bytes:
        return services.image_variants_make(data=data, variants=spec)["t"].data

    make = plain if mode == "pillow" else template
    if mode not in ("pillow", "template", "draft2"):
        raise SystemExit(f"unknown mode {mode!r}: pillow, template or draft2")
    make(sources[0])  # warm-up
    gc.collect()
    peak_reset()  # the photos' generation is not the resize's
    started = time.perf_counter()
    outputs = [make(sources[i % SOURCES]) for i in range(n)]
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    scores = [
        ssim(Image.open(io.BytesIO(outputs[i])), reference(sources[i])) for i in range(SOURCES)
    ]
    result = {"seconds": seconds, "n": n, "peak_rss_mb": peak, "ssim": min(scores)}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
