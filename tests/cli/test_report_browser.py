"""``guardrail report`` opened in a real browser (headless Chromium): every plot of the page loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardrail.cli import _register, app
from guardrail.pretrained import find_artifact
from guardrail.reference import reference_model_path
from tests.support.browser import console_errors, headless_chromium, images_loaded

pytestmark = pytest.mark.slow


def test_the_report_of_the_shipped_artifact_shows_its_plots(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    artifact = find_artifact(reference_model_path())
    if artifact is None:
        pytest.skip("the reference model has no calibration artifact yet")
    _register()
    result = CliRunner().invoke(app, ["report", "--artifact", str(artifact), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.stderr
    plots = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert plots
    with headless_chromium() as browser:
        browser.get((tmp_path / "report" / "index.html").as_uri())
        widths = images_loaded(browser)
        shown = sorted(Path(i.get_attribute("src") or "").name for i in browser.find_elements(By.TAG_NAME, "img"))
        assert console_errors(browser) == []
    assert shown == plots  # every plot written is on the page
    assert len(widths) == len(plots)
    assert all(width > 0 for width in widths), widths  # and the browser decoded each one
