"""The command line lets torch's idle CPU threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from guardrail.cli import _passive_thread_waits


def test_idle_threads_sleep_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    _passive_thread_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_the_users_choice_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    _passive_thread_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_it_is_set_before_torch_loads() -> None:
    """OpenMP reads the setting when torch loads it: the command line must not have imported torch by then."""
    code = (
        "import sys, guardrail.cli as cli; cli._register();print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
