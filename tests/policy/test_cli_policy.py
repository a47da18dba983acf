"""``guardrail policy check`` and ``guardrail policy show``: output lines and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import guardrail.cli.policy  # registers the ``policy`` group on ``app``
from guardrail.cli import app

SHIPPED = Path(guardrail.cli.policy.__file__).parent.parent / "policies"
BAD = "version: 1\nname: x\nrules:\n  - when: {visual: {below: 1.5}}\n    do: escalte\notherwise: accept\n"

runner = CliRunner()


@pytest.fixture
def bad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text(BAD)
    return "bad.yaml"


def test_check_valid_files_prints_ok_and_exits_0() -> None:
    files = sorted(str(p) for p in SHIPPED.glob("*.yaml"))
    assert len(files) >= 3
    result = runner.invoke(app, ["policy", "check", *files])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"{f}: OK" for f in files]


def test_check_prints_one_line_per_problem_and_exits_1(bad: str) -> None:
    result = runner.invoke(app, ["policy", "check", bad])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "bad.yaml:4:28: rules[0].when.visual.below: threshold must be a probability in [0, 1], got 1.5",
        "bad.yaml:5:9: rules[0].do: unknown action 'escalte'; expected one of: accept, abstain, re_ask, "
        "fetch_more_views, escalate, fallback (did you mean 'escalate'?)",
    ]


def test_check_reports_every_file_and_fails_if_any_fails(bad: str) -> None:
    Path("ok.yaml").write_text("version: 1\nname: ok\notherwise: accept\n")
    result = runner.invoke(app, ["policy", "check", "ok.yaml", bad, "missing.yaml"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "ok.yaml: OK"
    assert len(lines) == 4
    assert lines[-1] == "missing.yaml:1:1: cannot read the file: No such file or directory"


def test_check_with_context_shows_the_line_and_a_caret(bad: str) -> None:
    result = runner.invoke(app, ["policy", "check", "--context", bad])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1:3] == [
        "      - when: {visual: {below: 1.5}}",
        "                               ^",
    ]


def test_check_without_files_is_a_usage_error() -> None:
    assert runner.invoke(app, ["policy", "check"]).exit_code == 2


def test_show_prints_rules_in_order_with_params() -> None:
    result = runner.invoke(app, ["policy", "show", "default"])
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("policy default (version 1)\n")
    assert "budget: at most 3 attempts, at most 30 s" in out
    assert out.index("[0] confidence-unmeasured") < out.index("[1] unfamiliar-input") < out.index("[2] both-doubtful")
    assert out.index("[2] both-doubtful") < out.index("[3] perception")
    assert "      when  familiarity < 0.01\n      do    abstain (message='The question or image is unlike" in out
    assert "      when  visual < 0.5\n      do    fetch_more_views (views=2, provider='zoom', mode='auto')\n" in out
    assert out.rstrip().endswith(
        "otherwise     accept\non_exhausted  abstain\non_error      abstain\n"
        "on_uncalibrated  abstain (message='this model has no calibration, so the guard cannot judge its answers')"
    )


def test_show_a_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nname: mine\notherwise: {do: fallback, with: {model: big}}\n")
    result = runner.invoke(app, ["policy", "show", str(path)])
    assert result.exit_code == 0
    assert "rules (tried in order; the first that matches decides):\n  (none)\n" in result.stdout
    assert "otherwise     fallback (model='big')" in result.stdout


def test_show_says_what_an_uncalibrated_guard_does(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nname: mine\notherwise: accept\non_uncalibrated: {do: escalate, with: {reason: raw}}\n")
    assert "on_uncalibrated  escalate (reason='raw')" in runner.invoke(app, ["policy", "show", str(path)]).stdout
    path.write_text("version: 1\nname: mine\notherwise: accept\naccept_uncalibrated: true\n")
    shown = runner.invoke(app, ["policy", "show", str(path)]).stdout
    assert shown.rstrip().endswith("on_uncalibrated  the rules decide on raw scores (accept_uncalibrated: true)")


def test_show_a_certified_threshold(tmp_path: Path) -> None:
    """Issue 32: a certified threshold (``{max_error, delta}``) once ended ``policy show`` in a TypeError."""
    path = tmp_path / "p.yaml"
    rule = "{name: doubt, when: {reasoning: {below: {max_error: 0.1, delta: 0.05}}}, do: escalate}"
    path.write_text(f"version: 1\nname: mine\nrules: [{rule}]\notherwise: accept\n")
    result = runner.invoke(app, ["policy", "show", str(path)])
    assert result.exit_code == 0, result.output
    assert "      when  reasoning < certified(max_error=0.1, delta=0.05)\n" in result.stdout


def test_show_an_invalid_file_prints_its_problems(bad: str) -> None:
    result = runner.invoke(app, ["policy", "show", bad])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith("bad.yaml:4:28: rules[0].when.visual.below:")


def test_show_an_unknown_name_is_a_usage_error() -> None:
    result = runner.invoke(app, ["policy", "show", "nosuch"])
    assert result.exit_code == 2
    assert "no built-in policy named 'nosuch' (built-ins: cost-aware, default, scenes, strict)" in result.stderr


def test_the_top_level_policies_folder_is_the_shipped_one() -> None:
    top = Path(__file__).resolve().parents[2] / "policies"
    assert top.resolve() == SHIPPED.resolve()
    result = runner.invoke(app, ["policy", "check", *sorted(str(p) for p in top.glob("*.yaml"))])
    assert result.exit_code == 0
    assert result.stdout.count(": OK") == len(list(SHIPPED.glob("*.yaml"))) == 4


def test_check_a_non_utf8_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("latin1.yaml").write_bytes("version: 1\nname: café\notherwise: accept\n".encode("latin-1"))
    result = runner.invoke(app, ["policy", "check", "latin1.yaml"])
    assert result.exit_code == 1
    assert result.stdout == (
        "latin1.yaml:2:10: the file is not valid UTF-8: byte 0xe9 cannot be decoded (policies are UTF-8 text)\n"
    )


def test_check_refuses_a_boolean_threshold_at_its_position(tmp_path: Path) -> None:
    # Issue 27, item 6: `at_least: false` was read as `>= 0` and the check said OK.
    path = tmp_path / "lax.yaml"
    path.write_text(
        "version: 1\nname: lax\nrules:\n  - when: {visual: {at_least: false}}\n    do: accept\notherwise: abstain\n"
    )
    result = runner.invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}:4:31: rules[0].when.visual.at_least: should be a number, got false (a boolean: YAML reads true, "
        "false, yes, no, on and off as booleans, never as numbers)"
    ]
