"""Applying a fitted calibrator needs NumPy alone, with SciPy's numbers; fitting without SciPy names the extra.

The light install has no SciPy: the logistic function and AUROC's midranks are NumPy transcriptions of
``scipy.special.expit`` and ``scipy.stats.rankdata``, compared with them here (SciPy is installed in development).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import rankdata

from guardrail.calibration import IsotonicCalibrator, PlattScaling, certify_threshold
from guardrail.calibration.calibrators import _sigmoid
from guardrail.calibration.metrics import _midranks, auroc


def test_the_sigmoid_is_scipys_expit() -> None:
    z = np.concatenate([np.linspace(-800.0, 800.0, 4001), [0.0, -0.0, 1e-300, -1e-300, 36.7, -745.2]])
    # equal to a few ulps; below 1e-300 expit rounds 1 / (1 + e^710) to 0 where e^-710 / (1 + e^-710) keeps it
    np.testing.assert_allclose(_sigmoid(z), expit(z), rtol=1e-15, atol=1e-300)
    assert np.all(np.isfinite(_sigmoid(z)))


@pytest.mark.parametrize("seed", range(5))
def test_midranks_are_rankdatas_average_ranks(seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 7, size=50).astype(np.float64) / 7.0  # many ties
    assert np.array_equal(_midranks(values), rankdata(values, method="average"))


def test_fitting_without_scipy_names_the_calibrate_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    fitted = PlattScaling().fit([0.2, 0.4, 0.6, 0.8, 0.9], [0, 0, 1, 1, 1])
    rng = np.random.default_rng(0)
    confidence, correct = rng.uniform(size=200), rng.integers(0, 2, size=200)
    for name in ("scipy", "scipy.optimize", "scipy.stats", "sklearn", "sklearn.isotonic"):
        monkeypatch.setitem(sys.modules, name, None)
    hint = r"needs the `calibrate` extra: pip install 'lvlm-guardrail\[calibrate\]'"
    with pytest.raises(ImportError, match="fitting PlattScaling " + hint):
        PlattScaling().fit([0.2, 0.8], [0, 1])
    with pytest.raises(ImportError, match="fitting an isotonic map " + hint):
        IsotonicCalibrator().fit([0.2, 0.8], [0, 1])
    with pytest.raises(ImportError, match="certifying a threshold " + hint):
        certify_threshold(confidence, correct, alpha=0.2, delta=0.1)
    # applying what was fitted, and the metrics, need none of it
    assert fitted.predict([0.9])[0] > fitted.predict([0.2])[0]
    assert 0.0 <= auroc(confidence, correct) <= 1.0
