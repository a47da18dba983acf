"""The calibration report: page, plots and metrics.json from an artifact fitted on synthetic data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from guardrail.calibration import CalibrationArtifact, DecoupledCalibrator, fit_artifact, reliability_diagram_data
from guardrail.calibration.report import REPORT_SCHEMA, write_report
from tests.support.calibration import decoupled_world

COMPONENTS = ("visual", "reasoning", "overall")
PLOTS = {f"{kind}-{c}.png" for kind in ("reliability", "risk-coverage") for c in COMPONENTS}


@pytest.fixture(scope="module")
def artifact() -> CalibrationArtifact:
    world = decoupled_world(2000, seed=5)
    return fit_artifact(
        visual_scores=world["visual"],
        reasoning_scores=world["reasoning"],
        answer_correct=world["answer"],
        perception_correct=world["perception"],
        model_fingerprint="sha256:" + "ab" * 32,
        data_fingerprint="sha256:" + "cd" * 32,
        calibrator=DecoupledCalibrator(combiner="platt_harmonic"),
        targets=[(0.3, 0.1), (0.05, 0.1)],
        info={"split": "calibration", "note": "<script>alert('x')</script> & more"},
    )


@pytest.fixture(scope="module")
def report(artifact: CalibrationArtifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(artifact, tmp_path_factory.mktemp("report") / "out")


def references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html) + re.findall(r"(?:src|href)='([^']*)'", html)


def test_writes_the_page_the_json_and_two_plots_per_component(report: Path) -> None:
    assert report.name == "index.html"
    assert {p.name for p in report.parent.iterdir()} == {"index.html", "metrics.json", *PLOTS}


def test_the_page_references_every_plot_and_nothing_outside_its_folder(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    refs = references(html)
    assert {r for r in refs if r.endswith(".png")} == PLOTS
    assert set(refs) == {*PLOTS, "metrics.json"}
    assert all((report.parent / r).is_file() for r in refs)  # relative, beside the page: no external resources
    assert "<link" not in html
    assert "<script" not in html


def test_plots_are_valid_png_images(report: Path) -> None:
    for name in PLOTS:
        with Image.open(report.parent / name) as image:
            image.verify()
            assert image.format == "PNG"
        with Image.open(report.parent / name) as image:
            assert image.size[0] >= 400
            assert image.size[1] >= 400


def test_the_page_shows_each_components_metrics(artifact: CalibrationArtifact, report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    for name in COMPONENTS:
        m = artifact.metrics[name]
        section = html[html.index(f'id="component-{name}"') :]
        section = section[: section.index("</section>")]
        for value in (m.ece_10, m.ece_15, m.adaptive_ece_15, m.mce_15, m.brier, m.nll, m.aurc, m.eaurc):
            assert f"{value:.4f}" in section
        assert m.auroc is not None
        assert f"{m.auroc:.4f}" in section
        for value in (m.selective_accuracy_50, m.selective_accuracy_80, m.selective_accuracy_90):
            assert f"{value:.4f}" in section
        assert f"95 % ≤ {m.ece_10_noise_floor_high:.4f}" in section
        assert f'<td class="num">{m.n}</td>' in section
        assert f"reliability-{name}.png" in section
        assert f"risk-coverage-{name}.png" in section


def test_the_page_shows_thresholds_with_the_abstention_note_and_provenance(
    artifact: CalibrationArtifact, report: Path
) -> None:
    html = report.read_text(encoding="utf-8")
    feasible = artifact.certified("overall", max_error=0.3, delta=0.1)
    infeasible = artifact.certified("overall", max_error=0.05, delta=0.1)
    assert feasible is not None
    assert feasible.threshold is not None
    assert infeasible is not None
    assert not infeasible.feasible
    assert f"≥ {feasible.threshold:.4f}" in html
    assert f"{100 * infeasible.min_abstention:.1f} %" in html
    assert "visual ≥ " in html  # the pair rule
    assert "reasoning ≥ " in html
    for value in (artifact.model_fingerprint, artifact.data_fingerprint, artifact.created):
        assert value in html


def test_strings_from_the_artifact_are_escaped(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html


def test_the_json_holds_the_artifacts_numbers(artifact: CalibrationArtifact, report: Path) -> None:
    data = json.loads((report.parent / "metrics.json").read_text(encoding="utf-8"))
    assert data["schema"] == REPORT_SCHEMA
    assert data["components"] == list(COMPONENTS)
    assert data["metrics"] == {name: m.model_dump(mode="json") for name, m in artifact.metrics.items()}
    assert data["thresholds"] == [t.model_dump(mode="json") for t in artifact.thresholds]
    assert data["artifact"]["model_fingerprint"] == artifact.model_fingerprint
    assert data["artifact"]["info"] == artifact.info
    assert artifact.evaluation is not None
    for name in COMPONENTS:
        scores = artifact.evaluation[name]
        expected = reliability_diagram_data(scores.confidence, scores.correct, n_bins=10).to_dict()
        assert data["reliability"][name] == {"n_bins": 10, **expected}
        assert sum(data["reliability"][name]["counts"]) == artifact.metrics[name].n
        assert data["plots"][name] == {
            "reliability": f"reliability-{name}.png",
            "risk_coverage": f"risk-coverage-{name}.png",
        }


def test_without_held_out_scores_the_page_says_plots_are_unavailable(
    artifact: CalibrationArtifact, tmp_path: Path
) -> None:
    page = write_report(artifact.model_copy(update={"evaluation": None}), tmp_path)
    html = page.read_text(encoding="utf-8")
    assert html.count("Plots unavailable") == len(COMPONENTS)
    assert "<img" not in html
    assert f"{artifact.metrics['overall'].ece_10:.4f}" in html
    assert {p.name for p in tmp_path.iterdir()} == {"index.html", "metrics.json"}
    data = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert data["plots"] == {}
    assert data["metrics"]["overall"] == artifact.metrics["overall"].model_dump(mode="json")


def test_component_names_never_become_paths(artifact: CalibrationArtifact, tmp_path: Path) -> None:
    assert artifact.evaluation is not None
    # "$" would start matplotlib's math mode (and "\bad{" fail there); "Evil B" gets the same slug as "Evil <b>"
    odd = {"../../Evil <b>": "overall", "Evil B": "reasoning", r"evil $\bad{$": "visual"}
    strange = artifact.model_copy(
        update={
            "metrics": {new: artifact.metrics[old] for new, old in odd.items()},
            "evaluation": {new: artifact.evaluation[old] for new, old in odd.items()},
            "thresholds": (),
        }
    )
    page = write_report(strange, tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {"index.html", "metrics.json"} | {
        f"{kind}-{slug}.png" for kind in ("reliability", "risk-coverage") for slug in ("evil-b", "evil-b-2", "evil-bad")
    }
    assert {p.name for p in tmp_path.iterdir()} == {"out"}
    html = page.read_text(encoding="utf-8")
    assert "<b>" not in html
    assert "../../Evil &lt;b&gt;" in html
    assert "None in this artifact" in html
