"""Reference implementations of the calibration metrics: plain loops over the definitions (METHOD.md section 6).

The metric tests check ``guardrail.calibration.metrics`` and ``summary`` against these.
"""

from __future__ import annotations

import numpy as np


def ref_bins(c: np.ndarray, n_bins: int) -> list[np.ndarray]:
    masks = []
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        masks.append((c >= lo) & (c <= hi) if k == 0 else (c > lo) & (c <= hi))
    return masks


def ref_ece(c: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    n = len(c)
    return float(
        sum(mask.sum() / n * abs(y[mask].mean() - c[mask].mean()) for mask in ref_bins(c, n_bins) if mask.any())
    )


def ref_mce(c: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    return float(max(abs(y[mask].mean() - c[mask].mean()) for mask in ref_bins(c, n_bins) if mask.any()))


def ref_adaptive(c: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    pairs = sorted(zip(c.tolist(), y.tolist(), strict=True))  # by c, ties by the label
    n, total, start = len(pairs), 0.0, 0
    for g in range(n_bins):
        size = n // n_bins + (1 if g < n % n_bins else 0)
        group = pairs[start : start + size]
        start += size
        if group:
            total += abs(sum(p[1] for p in group) - sum(p[0] for p in group))
    return total / n


def ref_risks(c: np.ndarray, y: np.ndarray) -> list[float]:
    """Expected error rate of the top k over every order of tied answers: a tie group's errors spread evenly."""
    values = sorted(set(c.tolist()), reverse=True)
    errors_before, risks = 0.0, list[float]()
    for value in values:
        group = [1 - y[i] for i in range(len(c)) if c[i] == value]
        for j in range(1, len(group) + 1):
            risks.append((errors_before + j * sum(group) / len(group)) / (len(risks) + 1))
        errors_before += sum(group)
    return risks


def stable_risks(c: np.ndarray, y: np.ndarray) -> list[float]:
    """Error rate of the top k in one given order (a stable sort keeps the input order among ties)."""
    order = sorted(range(len(c)), key=lambda i: -c[i])
    errors, risks = 0.0, []
    for k, i in enumerate(order, start=1):
        errors += 1 - y[i]
        risks.append(errors / k)
    return risks
