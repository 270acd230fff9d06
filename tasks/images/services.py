"""The images family's logic: check an untrusted file, decode it once, write every variant.

Each source is decoded once, no larger than its largest variant needs (JPEG: DCT scaling at
decode, ``Image.draft``), turned upright (EXIF orientation), brought to sRGB in RGB, RGBA or L,
and each variant is resized from that and encoded without metadata.

Sources are untrusted. Before anything is decoded they must be non-empty, at most
``IMAGES_MAX_SOURCE_BYTES``, of a format in ``IMAGES_FORMATS`` (only those decoders are tried)
and at most ``IMAGES_MAX_PIXELS`` by their header. Whatever a decoder raises on a truncated or
corrupt file becomes ``ImageInvalid``, a ``PermanentError``: the job is dead-lettered at once with
that message, never retried (decoders raise OSError, SyntaxError, ValueError, struct.error and
others on bad input; OSError would otherwise count as transient).
"""

from __future__ import annotations

import io
import logging
import math
import posixpath
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from app.batches import batch_start
from app.enqueue import job_enqueue
from app.errors import PermanentError
from tasks.images import conf

logger = logging.getLogger(__name__)

PROCESS_TASK = "tasks.images.process"
#: The decode size for JPEG as a multiple of what the largest variant needs (``Image.draft``
#: picks the smallest DCT scale, 1/8 to 1, at least that large). 1: fastest, and make bench's
#: quality check finds it no worse than a full decode (README, "Images").
DRAFT_FACTOR = 1
#: ``Image.resize(reducing_gap=...)``: shrink by a whole factor with a box filter first when
#: the ratio is over this, then Lanczos for the rest; for sources not decoded by draft.
REDUCING_GAP = 3.0
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "AVIF": "avif", "GIF": "gif"}
_ORIENTATION = 0x0112
_SWAPPED = {5, 6, 7, 8}  # orientations that turn the image a quarter
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class ImageInvalid(PermanentError):
    """Not an image this family takes: empty, not an allowed format, corrupt, too many pixels."""


class ImageTooLarge(ImageInvalid):
    """The file is over ``IMAGES_MAX_SOURCE_BYTES``."""


@dataclass(frozen=True)
class Variant:
    """One encoded variant."""

    data: bytes
    width: int
    height: int
    format: str


# --- checking and decoding -----------------------------------------------------------------


def image_open(*, data: bytes) -> Image.Image:
    """Open ``data`` lazily (the header only) after every check that needs no decoding.

    Raises ``ImageTooLarge`` or ``ImageInvalid`` naming what is wrong."""
    if not data:
        raise ImageInvalid("the file is empty")
    if len(data) > conf.MAX_SOURCE_BYTES:
        raise ImageTooLarge(
            f"the file has {len(data):,} bytes, more than IMAGES_MAX_SOURCE_BYTES "
            f"({conf.MAX_SOURCE_BYTES:,})"
        )
    try:
        with warnings.catch_warnings():
            # Pillow's own limit warns (and raises at twice it); ours, below, raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(conf.FORMATS))
    except UnidentifiedImageError:
        raise ImageInvalid(f"not an image of an allowed type ({', '.join(conf.FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise ImageInvalid(f"more than IMAGES_MAX_PIXELS ({conf.MAX_PIXELS:,}): {exc}") from None
    except Exception as exc:  # a corrupt header: any decoder error is the file's fault
        raise ImageInvalid(f"corrupt {_kind(data)}file: {type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageInvalid(f"an image of {width}x{height} pixels has nothing to show")
    if width * height > conf.MAX_PIXELS:
        raise ImageInvalid(
            f"{width}x{height} is {width * height:,} pixels, more than IMAGES_MAX_PIXELS "
            f"({conf.MAX_PIXELS:,}): refused before decoding (a decompression bomb?)"
        )
    return image


def image_check(*, data: bytes) -> dict[str, Any]:
    """What the endpoint checks at once: ``image_open``'s checks, no decoding. The format and
    size, for a 202; ``ImageInvalid`` or ``ImageTooLarge`` otherwise."""
    image = image_open(data=data)
    return {"format": image.format, "width": image.size[0], "height": image.size[1]}


def image_decode(*, image: Image.Image, scale: float = 1.0) -> Image.Image:
    """Decode ``image`` (as ``image_open`` returns it), at no less than ``scale`` times its size
    where the decoder can shrink on load (JPEG), upright (EXIF orientation), in L, RGB or RGBA,
    in sRGB unless the profile is kept (``image.info["icc_profile"]``, the only metadata
    left)."""
    factor = scale * DRAFT_FACTOR
    if image.format == "JPEG" and factor < 1:
        requested = (
            max(1, math.ceil(image.size[0] * factor)),
            max(1, math.ceil(image.size[1] * factor)),
        )
        image.draft(image.mode, requested)
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as exc:  # truncated data, a bad chunk, a decoder error: the file's fault
        raise ImageInvalid(
            f"truncated or corrupt {image.format} file: {type(exc).__name__}: {exc}"
        ) from None
    return colour_normalise(image=image, keep_icc=conf.KEEP_ICC)


def _kind(data: bytes) -> str:
    for magic, name in ((b"\xff\xd8", "JPEG "), (b"\x89PNG", "PNG "), (b"GIF8", "GIF ")):
        if data.startswith(magic):
            return name
    return ""


def colour_normalise(*, image: Image.Image, keep_icc: bool) -> Image.Image:
    """``image`` in L, RGB or RGBA, its pixels in sRGB unless ``keep_icc`` and it has an RGB (or
    grey) profile, kept then as ``info["icc_profile"]``; every other metadata dropped."""
    icc = image.info.get("icc_profile") or None
    mode = image.mode
    if mode.startswith("I") or mode == "F":  # 16-bit and 32-bit grey: to 8 bits, not clipped
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    elif mode in ("P", "PA", "LA", "La", "RGBa"):
        transparent = mode != "P" or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "RGB", "RGBA", "CMYK"):  # YCbCr, LAB, HSV, RGBX...
        image = image.convert("RGB")
    profile = _profile(icc)
    if image.mode == "CMYK":
        space = _space(profile)
        if profile is not None and space == "CMYK":
            image = _to_srgb(image, profile, "RGB")
        else:  # no usable profile: Pillow's naive conversion
            image = image.convert("RGB")
        profile = None
    kept: bytes | None = None
    if profile is not None:
        space = _space(profile)
        fits = (space == "RGB" and image.mode in ("RGB", "RGBA")) or (
            space == "GRAY" and image.mode == "L"
        )
        if keep_icc and fits:
            kept = icc
        elif fits:
            out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
            try:
                image = _to_srgb(image, profile, out_mode)
            except ImageCms.PyCMSError as exc:
                logger.warning("ICC profile not applied (%s); the pixels are taken as sRGB", exc)
    image.info = {"icc_profile": kept} if kept else {}
    return image


def _to_srgb(image: Image.Image, profile: ImageCms.ImageCmsProfile, mode: str) -> Image.Image:
    converted = ImageCms.profileToProfile(image, profile, _SRGB, outputMode=mode)
    assert converted is not None  # None only with inPlace=True
    return converted


def _profile(icc: bytes | None) -> ImageCms.ImageCmsProfile | None:
    if not icc:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        logger.warning("unreadable ICC profile ignored (%s); the pixels are taken as sRGB", exc)
        return None


def _space(profile: ImageCms.ImageCmsProfile | None) -> str:
    return "" if profile is None else str(profile.profile.xcolor_space).strip()


# --- variants ------------------------------------------------------------------------------


def variant_size(*, source: tuple[int, int], spec: Mapping[str, Any]) -> tuple[int, int]:
    """The size of a variant of an upright ``source``: never larger than the source."""
    width, height = source
    if spec.get("fit", "width") == "cover":
        box = (int(spec["width"]), int(spec["height"]))
        scale = min(1.0, max(box[0] / width, box[1] / height))
        if scale == 1.0:  # smaller than the box: the largest part of it with the box's shape
            crop = min(width / box[0], height / box[1])
            return max(1, round(box[0] * crop)), max(1, round(box[1] * crop))
        return box
    target = min(width, int(spec["width"]))
    return target, max(1, round(height * target / width))


def _scale_needed(*, source: tuple[int, int], spec: Mapping[str, Any]) -> float:
    """How much of the source's resolution a variant uses (1: all of it)."""
    width, height = source
    out = variant_size(source=source, spec=spec)
    if spec.get("fit", "width") == "cover":
        return min(1.0, max(out[0] / width, out[1] / height))
    return min(1.0, out[0] / width)


def variant_resize(*, image: Image.Image, spec: Mapping[str, Any]) -> Image.Image:
    size = variant_size(source=image.size, spec=spec)
    if spec.get("fit", "width") == "cover":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def variant_encode(*, image: Image.Image, spec: Mapping[str, Any]) -> Variant:
    """Encode without metadata (no EXIF, so no GPS, no XMP): the ICC profile only if kept."""
    fmt = str(spec["format"]).upper()
    icc = image.info.get("icc_profile")
    options: dict[str, Any] = {"icc_profile": icc} if icc else {}
    quality = int(spec.get("quality", 85))
    if fmt == "JPEG":
        if image.mode == "RGBA":  # transparency onto the background
            flat = Image.new("RGB", image.size, conf.BACKGROUND)
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        options.update(quality=quality, optimize=True, progressive=True)
    elif fmt == "PNG":
        options.update(optimize=True)
    elif fmt in ("WEBP", "AVIF"):
        if image.mode == "L":
            image = image.convert("RGB")
        options.update(quality=quality)
        if fmt == "WEBP":
            options.update(method=4)
    else:
        raise ImageInvalid(f"variant format {fmt!r}: use JPEG, PNG, WEBP or AVIF")
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return Variant(out.getvalue(), image.size[0], image.size[1], fmt)


def image_variants_make(
    *, data: bytes, variants: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Variant]:
    """Every variant of the image in ``data``, from one decode."""
    variants = conf.VARIANTS if variants is None else variants
    header = image_open(data=data)
    upright = header.size
    try:
        orientation = header.getexif().get(_ORIENTATION)  # PNG: a full load, to find its eXIf
    except Exception as exc:
        raise ImageInvalid(f"corrupt {header.format} file: {type(exc).__name__}: {exc}") from None
    if orientation in _SWAPPED:
        upright = upright[::-1]
    scale = max(
        (_scale_needed(source=upright, spec=spec) for spec in variants.values()), default=1.0
    )
    image = image_decode(image=header, scale=scale)
    return {
        name: variant_encode(image=variant_resize(image=image, spec=spec), spec=spec)
        for name, spec in variants.items()
    }


# --- storage and jobs --------------------------------------------------------------------


def source_check(*, path: str) -> str:
    """``path`` as a name inside default storage; ImageInvalid for ``..``, absolute paths and
    files that are not there; ImageTooLarge when over the limit."""
    name = posixpath.normpath(path.strip().replace("\\", "/")) if path.strip() else ""
    if not name or name.startswith(("/", "../")) or name in (".", ".."):
        raise ImageInvalid(f"path {path!r} must name a file inside the storage")
    if not default_storage.exists(name):
        raise ImageInvalid(f"no file {name!r} in the storage")
    size = default_storage.size(name)
    if size > conf.MAX_SOURCE_BYTES:
        raise ImageTooLarge(
            f"{name!r} has {size:,} bytes, more than IMAGES_MAX_SOURCE_BYTES "
            f"({conf.MAX_SOURCE_BYTES:,})"
        )
    return name


def source_read(*, path: str) -> bytes:
    name = source_check(path=path)
    with default_storage.open(name, "rb") as source:
        data = source.read(conf.MAX_SOURCE_BYTES + 1)
    return bytes(data)


def image_process(*, source: str, job_id: str) -> dict[str, dict[str, Any]]:
    """Write every variant of ``source`` (a name in default storage) under
    ``<OUTPUT_DIR>/<job_id>/``; the result maps each variant to its url, size, format, bytes.
    Run again (a redelivery), it writes the same names again."""
    made = image_variants_make(data=source_read(path=source))
    result = {}
    for name, variant in made.items():
        target = f"{conf.OUTPUT_DIR}/{job_id}/{name}.{EXTENSIONS[variant.format]}"
        if default_storage.exists(target):
            default_storage.delete(target)
        saved = default_storage.save(target, ContentFile(variant.data))
        result[name] = {
            "url": default_storage.url(saved),
            "width": variant.width,
            "height": variant.height,
            "format": variant.format,
            "bytes": len(variant.data),
        }
    return result


def upload_store(*, data: bytes) -> str:
    """Check an uploaded file (ImageInvalid, ImageTooLarge) and store it; its storage name."""
    found = image_check(data=data)
    name = f"{conf.OUTPUT_DIR}/uploads/{uuid.uuid4().hex}.{EXTENSIONS.get(found['format'], 'img')}"
    return default_storage.save(name, ContentFile(data))


def image_enqueue(*, source: str, owner: User | None = None) -> str:
    """Enqueue the variants of ``source`` (checked now); the job id."""
    name = source_check(path=source)
    with transaction.atomic():
        return job_enqueue(PROCESS_TASK, kwargs={"source": name}, owner=owner)


def images_batch_start(
    *, sources: list[str], callback: str, callback_kwargs: dict[str, Any] | None = None
) -> tuple[str, list[str]]:
    """One job per source, and ``callback`` (a tracked task) once all have ended, with
    ``batch_id``, ``succeeded`` and ``failed`` (job ids) added to ``callback_kwargs``. Returns
    the batch id and the job ids, in the order of ``sources``."""
    return batch_start(
        task=PROCESS_TASK,
        members=[{"source": source} for source in sources],
        callback=callback,
        callback_kwargs=callback_kwargs,
    )
