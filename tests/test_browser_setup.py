"""The browser tests' own switch: skipped on a laptop without Chromium, failed in CI without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import chromium_check


def test_missing_chromium_skips_on_a_laptop_and_fails_where_it_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    present = tmp_path / "present"
    present.touch()
    nowhere = tmp_path / "chromium"
    chromium_check(chromium=present, chromedriver=present, required=True)  # found: runs

    monkeypatch.delenv("REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        chromium_check(chromium=nowhere, chromedriver=present)
    for value in ("1", "yes"):
        monkeypatch.setenv("REQUIRE_CHROMIUM", value)  # as .ci/run sets it
        with pytest.raises(pytest.fail.Exception, match=str(nowhere)):
            chromium_check(chromium=nowhere, chromedriver=present)
    monkeypatch.setenv("REQUIRE_CHROMIUM", "0")
    with pytest.raises(pytest.skip.Exception):
        chromium_check(chromium=present, chromedriver=nowhere)
