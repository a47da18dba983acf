"""The calibration report: one self-contained HTML page, its PNG plots and a JSON file of every number.

:func:`write_report` turns a :class:`CalibrationArtifact` into ``OUT/index.html``, ``OUT/metrics.json`` and, per
component (visual, reasoning, overall), ``reliability-<component>.png`` and ``risk-coverage-<component>.png``.
The page has, per component, the reliability diagram with bin counts (METHOD.md section 6 binning: equal-width,
right-closed), the risk-coverage curve with the certified operating points, and the metrics table (ECE10/15,
adaptive ECE, MCE, Brier, NLL, AUROC, AURC, E-AURC, selective accuracy at 50/80/90 % coverage, the ECE noise
floor, n); then the certified thresholds with the infeasibility note of section 7, and the artifact's provenance.

Why a static page: it opens in any browser offline, can be attached to a model card or a CI run, and needs no
server. Styles are inline, images are relative PNG files beside the page, and every string taken from the
artifact is HTML-escaped (component names, reasons and ``info`` come from a file and may contain anything).

Plots need the held-out scores stored in the artifact's ``evaluation`` field (filled by
:func:`guardrail.calibration.fit_artifact`); for an older artifact without them the page says the plots are
unavailable and still shows every table.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from .._version import __version__
from .artifact import CalibrationArtifact
from .metrics import reliability_diagram_data, risk_coverage_curve
from .risk import CertifiedThreshold
from .summary import CalibrationSummary

__all__ = ["REPORT_SCHEMA", "write_report"]

REPORT_SCHEMA = "guardrail.calibration.report"
_ORDER = ("visual", "reasoning", "overall")
_BINS = 10
_TARGETS = {
    "visual": "perception correctness",
    "reasoning": "answer correctness, given correct perception",
    "overall": "answer correctness",
}
_NO_PLOTS = (
    "Plots unavailable: this artifact holds no held-out scores (it predates the <code>evaluation</code> field). "
    "Refit it with <code>guardrail calibrate</code> to get reliability diagrams and risk-coverage curves."
)


def write_report(artifact: CalibrationArtifact, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``index.html``, ``metrics.json`` and the PNG plots of ``artifact`` into ``out_dir``; returns the page.

    ``out_dir`` is created if needed; files of an earlier report there are overwritten. The page is written last,
    so a page that exists refers to plots that exist.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    components = _components(artifact)
    names = _file_names(components)
    plots: dict[str, dict[str, str]] = {}
    reliability: dict[str, dict[str, Any]] = {}
    held_out = artifact.evaluation or {}
    for component in components:
        if component in held_out:
            plots[component], reliability[component] = _draw(artifact, component, names[component], out)
    summary = {
        "schema": REPORT_SCHEMA,
        "version": 1,
        "guardrail_version": __version__,
        "artifact": {
            "version": artifact.version,
            "created": artifact.created,
            "model_fingerprint": artifact.model_fingerprint,
            "data_fingerprint": artifact.data_fingerprint,
            "info": artifact.info,
        },
        "components": components,
        "metrics": {name: m.model_dump(mode="json") for name, m in artifact.metrics.items()},
        "thresholds": [t.model_dump(mode="json") for t in artifact.thresholds],
        "reliability": reliability,
        "plots": plots,
    }
    (out / "metrics.json").write_text(
        json.dumps(_finite(summary), indent=2, allow_nan=False, default=str) + "\n", "utf-8"
    )
    page = out / "index.html"
    page.write_text(_page(artifact, components, plots), encoding="utf-8")
    return page


def _components(artifact: CalibrationArtifact) -> list[str]:
    """Components with metrics or held-out scores: visual, reasoning, overall first, then any others by name."""
    present = set(artifact.metrics) | set(artifact.evaluation or {})
    return [c for c in _ORDER if c in present] + sorted(present - set(_ORDER))


def _file_names(components: list[str]) -> dict[str, str]:
    """A distinct file-name-safe slug per component (names come from a file: never trust them as paths)."""
    names: dict[str, str] = {}
    for component in components:
        slug = re.sub(r"[^a-z0-9]+", "-", component.lower()).strip("-")[:40] or "component"
        candidate, suffix = slug, 2
        while candidate in names.values():
            candidate, suffix = f"{slug}-{suffix}", suffix + 1
        names[component] = candidate
    return names


def _draw(artifact: CalibrationArtifact, component: str, slug: str, out: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """Both plots of one component from its held-out scores; returns their file names and the bin data."""
    from ._report_plots import plot_reliability, plot_risk_coverage

    scores = (artifact.evaluation or {})[component]
    metrics = artifact.metrics.get(component)
    diagram = reliability_diagram_data(scores.confidence, scores.correct, n_bins=_BINS)
    files = {"reliability": f"reliability-{slug}.png", "risk_coverage": f"risk-coverage-{slug}.png"}
    ece = "" if metrics is None else f", ECE{_BINS} = {metrics.ece_10:.4f}"
    plot_reliability(
        diagram, title=f"{component}: reliability{ece} (n = {len(scores.correct)})", path=out / files["reliability"]
    )
    plot_risk_coverage(
        risk_coverage_curve(scores.confidence, scores.correct),
        scores.correct,
        [t for t in artifact.thresholds if t.component == component],
        title=f"{component}: risk against coverage" + ("" if metrics is None else f", AURC = {metrics.aurc:.4f}"),
        path=out / files["risk_coverage"],
    )
    return files, {"n_bins": _BINS, **diagram.to_dict()}


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2228;
  margin: 0; background: #f6f7f9 }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px }
h1 { font-size: 26px; margin: 0 0 4px }
h2 { font-size: 20px; margin: 0 0 2px }
.sub { color: #5b6470; margin: 0 0 14px }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: 18px 20px; margin: 18px 0 }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start }
.tables { margin-top: 14px; gap: 28px }
figure { margin: 0; flex: 1 1 440px; max-width: 580px }
figure img { width: 100%; height: auto; border: 1px solid #eceff2; border-radius: 4px }
table { border-collapse: collapse; font-size: 13.5px }
caption { text-align: left; font-weight: 600; padding: 0 0 6px }
td, th { padding: 4px 10px; border-bottom: 1px solid #e6e9ed; text-align: left; vertical-align: top }
th { background: #f0f2f5; font-weight: 600 }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; word-break: break-all }
.ok { color: #1e7a46; font-weight: 600 }
.bad { color: #b3261e; font-weight: 600 }
.note { color: #5b6470; font-size: 13px }
.scroll { overflow-x: auto }
table.thresholds { width: 100% }
table.thresholds td, table.thresholds th { padding: 4px 7px }
td.reason { min-width: 260px; font-size: 13px }
.warn { background: #fff6e0; border: 1px solid #f0d58c; border-radius: 6px; padding: 10px 12px }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.1f} %"


def _rows(rows: list[tuple[str, str]]) -> str:
    """Table rows of (escaped label HTML, escaped value HTML)."""
    return "".join(f'<tr><th scope="row">{label}</th><td class="num">{value}</td></tr>' for label, value in rows)


def _interval(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f" <span class='note'>[{_num(ci[0])}, {_num(ci[1])}]</span>"


def _floor(ece: float, mean: float, high: float) -> str:
    verdict = "<span class='ok'>within</span>" if ece <= high else "<span class='bad'>above</span>"
    return f"mean {_num(mean)}, 95 % ≤ {_num(high)}: {verdict}"


def _metrics_tables(m: CalibrationSummary) -> str:
    """Two tables side by side: calibration (how close c is to the accuracy) and ranking (which answers go first)."""
    calibration = [
        ("n (held-out answers)", _e(m.n)),
        ("accuracy", _num(m.accuracy)),
        ("mean confidence", _num(m.mean_confidence)),
        ("ECE, 10 bins", _num(m.ece_10) + _interval(m.ece_10_ci)),
        ("ECE, 15 bins", _num(m.ece_15)),
        ("ECE10 noise floor", _floor(m.ece_10, m.ece_10_noise_floor_mean, m.ece_10_noise_floor_high)),
        ("ECE15 noise floor", _floor(m.ece_15, m.ece_15_noise_floor_mean, m.ece_15_noise_floor_high)),
        ("adaptive ECE, 15 groups", _num(m.adaptive_ece_15)),
        ("MCE, 15 bins", _num(m.mce_15)),
        ("Brier score", _num(m.brier)),
        (f"NLL (ε = {_e(f'{m.nll_eps:g}')})", _num(m.nll)),
    ]
    ranking = [
        ("AUROC", _num(m.auroc) + _interval(m.auroc_ci)),
        ("AURC", _num(m.aurc)),
        ("E-AURC", _num(m.eaurc)),
        ("selective accuracy at 50 % coverage", _num(m.selective_accuracy_50)),
        ("selective accuracy at 80 % coverage", _num(m.selective_accuracy_80)),
        ("selective accuracy at 90 % coverage", _num(m.selective_accuracy_90)),
    ]
    return "".join(
        f'<table class="metrics-table"><caption>{caption}</caption><tbody>{_rows(rows)}</tbody></table>'
        for caption, rows in (("Calibration", calibration), ("Ranking and selective prediction", ranking))
    )


def _component_section(artifact: CalibrationArtifact, component: str, plots: Mapping[str, str] | None) -> str:
    target = _TARGETS.get(component)
    sub = f"calibrated confidence against {_e(target)}" if target else "calibrated confidence"
    if plots is None:
        figures = f'<p class="warn">{_NO_PLOTS}</p>'
    else:
        figures = "".join(
            f'<figure><img src="{_e(plots[kind])}" alt="{_e(component)} {alt}"></figure>'
            for kind, alt in (("reliability", "reliability diagram"), ("risk_coverage", "risk-coverage curve"))
        )
    metrics = artifact.metrics.get(component)
    table = _metrics_tables(metrics) if metrics is not None else '<p class="note">No metrics for this component.</p>'
    return (
        f'<section id="component-{_e(component)}"><h2>{_e(component)}</h2><p class="sub">{sub}</p>'
        f'<div class="row">{figures}</div><div class="row tables">{table}</div></section>'
    )


def _rule(t: CertifiedThreshold) -> str:
    if t.threshold is not None:
        return f"≥ {_num(t.threshold)}"
    if t.thresholds:
        return "<br>".join(f"{_e(name)} ≥ {_num(value)}" for name, value in t.thresholds.items())
    return "—"


def _risks(t: CertifiedThreshold) -> tuple[str, str]:
    """Empirical risk and bound; for an infeasible result they belong to the best tested rule, shown greyed."""
    risk, bound = _num(t.empirical_risk), _num(t.risk_bound)
    if t.feasible:
        return risk, bound
    grey = "<span class='note' title='of the tested rule with the lowest bound (not certified)'>{}</span>"
    return grey.format(risk), grey.format(bound)


def _thresholds_section(thresholds: tuple[CertifiedThreshold, ...]) -> str:
    """The certified rules; ``min. abstention`` is section 7's (mu - alpha) / (1 - alpha) when mu > alpha."""
    if not thresholds:
        return '<section><h2>Certified thresholds</h2><p class="note">None in this artifact.</p></section>'
    names = (
        "component", "α", "δ", "threshold", "coverage", "empirical risk", "risk bound", "n", "base error",
        "min. abstention", "feasible", "note",
    )  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in names)
    body = []
    for t in thresholds:
        cells = [
            _e(t.component), _e(f"{t.alpha:g}"), _e(f"{t.delta:g}"), _rule(t), _pct(t.coverage),
            *_risks(t), _e(t.n), _pct(t.base_error),
            _pct(t.min_abstention) if t.base_error > t.alpha else "—",
            "<span class='ok'>yes</span>" if t.feasible else "<span class='bad'>no</span>",
        ]  # fmt: skip
        note = f"{_e(t.reason)} <span class='note'>({_e(t.method)}, δ split over {_e(t.n_tests)} tests)</span>"
        body.append(
            "<tr>"
            + "".join(f'<td class="num">{c}</td>' if i else f"<td>{c}</td>" for i, c in enumerate(cells))
            + f"<td class='reason'>{note}</td></tr>"
        )
    return (
        "<section><h2>Certified thresholds</h2><p class='sub'>Accept an answer only if its calibrated confidence"
        " reaches the threshold: with probability at least 1 − δ its error rate among accepted answers is at most α"
        " (METHOD.md section 7), certified on the held-out rows. When the base error exceeds α, any valid rule must"
        " abstain on at least the share in <em>min. abstention</em>.</p>"
        f"<div class='scroll'><table class='thresholds'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
        "</tbody></table></div></section>"
    )


def _provenance_section(artifact: CalibrationArtifact) -> str:
    rows = [
        ("artifact version", _e(artifact.version)),
        ("created", _e(artifact.created)),
        ("model fingerprint", f"<span class='mono'>{_e(artifact.model_fingerprint)}</span>"),
        ("data fingerprint", f"<span class='mono'>{_e(artifact.data_fingerprint)}</span>"),
    ]
    params = artifact.calibrator.get("params")
    if isinstance(params, Mapping):
        rows.append(("calibrator", _e(", ".join(f"{k}: {v}" for k, v in params.items() if isinstance(v, str)))))
    if artifact.visual_normalization is not None:
        norm = artifact.visual_normalization
        rows.append(("visual normalisation", f"mean {_num(norm.mean)}, std {_num(norm.std)}"))
    for key, value in artifact.info.items():
        shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        rows.append((_e(key), f"<span class='mono'>{_e(shown)}</span>"))
    body = "".join(f'<tr><th scope="row">{label}</th><td>{value}</td></tr>' for label, value in rows)
    return f"<section><h2>Provenance</h2><table><tbody>{body}</tbody></table></section>"


def _page(artifact: CalibrationArtifact, components: list[str], plots: Mapping[str, Mapping[str, str]]) -> str:
    where = artifact.info.get("metrics_on", "held-out rows")
    sections = "".join(_component_section(artifact, c, plots.get(c)) for c in components)
    if not components:
        sections = '<section><p class="note">This artifact holds no metrics.</p></section>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Calibration report · {_e(artifact.created)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>Calibration report</h1><p class='sub'>Artifact created {_e(artifact.created)}; metrics measured on"
        f" {_e(where)}. Numbers are also in <a href='metrics.json'>metrics.json</a>. Reliability bins: {_BINS},"
        " equal-width, right-closed; a bar far from the diagonal matters in proportion to its count. ECE inside"
        " its noise floor cannot be told apart from a perfectly calibrated model at this n.</p>"
        f"{sections}{_thresholds_section(artifact.thresholds)}{_provenance_section(artifact)}"
        f"<p class='note'>Written by guardrail {_e(__version__)}.</p></main></body></html>\n"
    )
