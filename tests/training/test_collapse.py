"""The collapse alarm: fires on a constant sequence of stated confidences, not on a spread one."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from guardrail.training.collapse import CollapseAlarm, ConfidenceCollapseWarning, stated_spread


def test_stated_spread_is_the_population_std_and_the_share_at_the_ceiling() -> None:
    std, ceiling = stated_spread(torch.tensor([0.5, 1.0, 1.0, math.nan]))
    assert std == pytest.approx(math.sqrt(((0.5 - 5 / 6) ** 2 + 2 * (1 - 5 / 6) ** 2) / 3))
    assert ceiling == pytest.approx(2 / 3)
    assert all(math.isnan(x) for x in stated_spread(torch.tensor([math.nan])))


def test_the_alarm_fires_once_on_a_constant_sequence(caplog: pytest.LogCaptureFixture) -> None:
    alarm = CollapseAlarm(threshold=0.05, patience=3)
    constant = stated_spread(torch.full((32,), 0.9))[0]
    assert constant == 0.0
    with caplog.at_level(logging.WARNING, logger="guardrail.training"):
        assert not alarm.update(constant, 1)
        assert not alarm.update(constant, 2)
        with pytest.warns(ConfidenceCollapseWarning, match="below 0.05 for 3 steps"):
            assert alarm.update(constant, 3)
        assert not alarm.update(constant, 4)  # once per collapse
    assert alarm.fired_at == [3]
    assert "stated confidence collapsing" in caplog.text


def test_the_alarm_stays_quiet_on_a_spread_sequence_and_re_arms() -> None:
    alarm = CollapseAlarm(threshold=0.05, patience=2)
    spread = stated_spread(torch.linspace(0.0, 1.0, 32))[0]
    assert spread > 0.25
    assert not any(alarm.update(spread, step) for step in range(20))
    assert not alarm.update(0.0, 20)
    assert not alarm.update(spread, 21)  # the run of low steps is broken
    assert not alarm.update(math.nan, 22)  # no score stated counts as collapsed
    with pytest.warns(ConfidenceCollapseWarning):
        assert alarm.update(0.0, 23)
    assert alarm.fired_at == [23]


@pytest.mark.parametrize(("threshold", "patience", "name"), [(-1.0, 2, "threshold"), (0.1, 0, "patience")])
def test_settings_are_checked(threshold: float, patience: int, name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        CollapseAlarm(threshold=threshold, patience=patience)
