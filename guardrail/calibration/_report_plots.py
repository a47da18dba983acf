"""The two plots of the calibration report, drawn with matplotlib's Agg canvas into PNG files.

- :func:`plot_reliability`: accuracy per equal-width right-closed bin (the bins of
  :func:`guardrail.calibration.reliability_diagram_data`, as in ECE) against the diagonal, the gap to each bin's
  mean confidence shaded, and a second panel with the number of answers in each bin, annotated: a bar far from
  the diagonal means little when it holds five answers.
- :func:`plot_risk_coverage`: the selective error rate among the k most confident answers against coverage k/n,
  with the oracle order (every correct answer first) for scale, and each certified rule's operating point.

Figures are built with :class:`matplotlib.figure.Figure` on an explicit ``FigureCanvasAgg``: no pyplot, no global
figure registry, no display needed, safe in a server or a test run. matplotlib is imported inside the functions so
that importing the calibration package stays light; it comes with the ``calibrate`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._extras import require
from .metrics import ReliabilityDiagram, RiskCoverage
from .risk import CertifiedThreshold

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_reliability", "plot_risk_coverage"]

_SIZE = (5.2, 5.2)
"""Inches; both plots share it so that they line up side by side on the page."""
_DPI = 110
_BLUE, _RED, _GREY, _GREEN = "#3b6ea8", "#c8463d", "#8a8f98", "#2e8b57"


def _plain(text: str) -> str:
    """``text`` shown literally: a ``$`` in a component name must not start matplotlib's math mode."""
    return text.replace("$", r"\$")


def _figure() -> Figure:
    feature = "the calibration report's plots"
    canvas = require("matplotlib.backends.backend_agg", extra="calibrate", feature=feature).FigureCanvasAgg
    figure: Figure = require("matplotlib.figure", extra="calibrate", feature=feature).Figure(
        figsize=_SIZE, dpi=_DPI, layout="constrained"
    )
    canvas(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png", metadata={"Software": None})  # no version stamp: same input, same bytes
    return path


def plot_reliability(diagram: ReliabilityDiagram, *, title: str, path: Path) -> Path:
    """Write the reliability diagram of one component (accuracy per bin over bin counts) to ``path``."""
    figure = _figure()
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1.25))
    edges = diagram.edges
    width = float(edges[1] - edges[0])
    left = edges[:-1]
    full = diagram.counts > 0
    top.plot([0, 1], [0, 1], linestyle="--", color=_GREY, linewidth=1, label="perfect calibration")
    top.bar(
        left[full], diagram.accuracy[full], width=width, align="edge", color=_BLUE, edgecolor="white", label="accuracy"
    )
    gap_low = np.minimum(diagram.accuracy[full], diagram.mean_confidence[full])
    gap = np.abs(diagram.accuracy[full] - diagram.mean_confidence[full])
    top.bar(
        left[full],
        gap,
        bottom=gap_low,
        width=width,
        align="edge",
        color=_RED,
        alpha=0.35,
        edgecolor=_RED,
        linewidth=0.6,
        label="gap to mean confidence",
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy in bin")
    top.set_title(_plain(title), fontsize=11)
    top.legend(loc="upper left", fontsize=8, frameon=False)
    bottom.bar(left, diagram.counts, width=width, align="edge", color=_GREY, edgecolor="white")
    peak = max(int(diagram.counts.max()), 1)
    bottom.set_ylim(0, peak * 1.35)
    for x, count in zip(left, diagram.counts, strict=True):
        bottom.text(x + width / 2, count + peak * 0.04, str(int(count)), ha="center", va="bottom", fontsize=7)
    bottom.set_xlabel("calibrated confidence (equal-width bins, right-closed)")
    bottom.set_ylabel("answers")
    bottom.set_xticks(edges[:: max(1, len(left) // 5)])
    return _save(figure, path)


def plot_risk_coverage(
    curve: RiskCoverage,
    correct: Sequence[int],
    thresholds: Sequence[CertifiedThreshold],
    *,
    title: str,
    path: Path,
) -> Path:
    """Write the risk-coverage curve of one component, its oracle, and certified operating points, to ``path``.

    A feasible certified rule is a point (coverage, empirical risk on the certify rows) under its dashed target
    line alpha; an infeasible one is the target line alone, labelled as such.
    """
    figure = _figure()
    axes = figure.subplots()
    n = curve.coverage.shape[0]
    k = np.arange(1, n + 1, dtype=np.float64)
    oracle = np.maximum(0.0, k - float(np.sum(correct))) / k
    axes.plot(curve.coverage, oracle, color=_GREY, linewidth=1, linestyle=":", label="oracle order")
    axes.plot(curve.coverage, curve.risk, color=_BLUE, linewidth=1.6, label="this component")
    colors = [_GREEN, "#b8860b", "#7b4fa0", "#1f8a9a"]
    for index, rule in enumerate(thresholds):
        color = colors[index % len(colors)]
        target = f"α={rule.alpha:g}, δ={rule.delta:g}"
        if rule.feasible and rule.threshold is not None and rule.empirical_risk is not None:
            label = f"{target}: θ={rule.threshold:.3f}, coverage {rule.coverage:.0%}"
            axes.plot(
                [rule.coverage],
                [rule.empirical_risk],
                marker="o",
                markersize=7,
                linestyle="none",
                color=color,
                label=label,
            )
        else:
            label = f"{target}: no certifiable threshold"
        line_label = "_nolegend_" if rule.feasible else label  # a feasible rule is named by its point
        axes.axhline(rule.alpha, color=color, linestyle="--", linewidth=0.9, label=line_label)
    axes.set_xlim(0, 1)
    highest = max(0.05, float(np.max(curve.risk)), *(r.alpha for r in thresholds))
    axes.set_ylim(0, highest * 1.4)  # headroom: the legend sits above the curves and the target lines
    axes.set_xlabel("coverage (share of answers accepted, most confident first)")
    axes.set_ylabel("error rate among accepted")
    axes.set_title(_plain(title), fontsize=11)
    axes.legend(loc="upper left", fontsize=7.5, framealpha=0.92, edgecolor="none")
    return _save(figure, path)
