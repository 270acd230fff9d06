"""``IMAGES_VARIANTS`` is checked when Django's checks run (``manage.py check``, ``migrate``):
a variant with an unknown format or a missing width used to fail every job, after a whole
decode, as the file's fault (an unknown format) or retried ten times (a missing key)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks

from tasks.images import conf
from tasks.images.checks import images_variants_check


@pytest.mark.parametrize(
    ("variants", "problem"),
    [
        ({"thumb": {"width": 200, "format": "BMP"}}, "thumb: format 'BMP' is not one of"),
        ({"thumb": {"fit": "cover", "width": 200, "format": "JPEG"}}, "thumb: height must be"),
        ({"thumb": {"format": "JPEG"}}, "thumb: width must be a number of pixels"),
        ({"thumb": {"width": "200", "format": "JPEG"}}, "not '200'"),
        ({"thumb": {"width": 200, "format": "JPEG", "quality": 0}}, "quality must be 1 to 100"),
        ({"thumb": {"fit": "contain", "width": 9, "format": "PNG"}}, "fit 'contain' is not"),
        ({"../x": {"width": 9, "format": "PNG"}}, "name '../x': letters, digits"),
        ({"thumb": {"width": 9, "format": "PNG", "widht": 9}}, "unknown keys ['widht']"),
        ({}, "IMAGES_VARIANTS must be a dict of at least one variant"),
    ],
)
def test_a_variant_the_jobs_cannot_make_is_a_check_error(
    monkeypatch: pytest.MonkeyPatch, variants: dict[str, Any], problem: str
) -> None:
    monkeypatch.setattr(conf, "VARIANTS", variants)
    errors = checks.run_checks()
    assert [e.id for e in errors] == ["images.E001"]
    assert problem in errors[0].msg


def test_the_default_variants_pass() -> None:
    assert images_variants_check() == []
