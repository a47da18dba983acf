"""``guardrail train reference | verbalized | grpo``: one entry point, the former commands hidden aliases, no default
that writes into the package, CPU training that picks CPU settings, and help that reads at 80 columns."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from guardrail.cli import _register, app
from guardrail.cli.train import refuse_package_folder
from guardrail.errors import InputError
from guardrail.reference import reference_model_path
from tests.support.trl import TRL_DEPRECATIONS

_register()
runner = CliRunner()
PACKAGE = reference_model_path().parents[1]
OLD_NAMES = {
    "train-reference": "train reference",
    "train-verbalized": "train verbalized",
    "train-calibration": "train grpo",
}


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command under ``group`` (a click group: typer's own copy of click), hidden ones included, with the
    words that invoke it."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))


def options(command: Any) -> list[Any]:
    """The visible options of a click command."""
    return [p for p in command.params if p.param_type_name == "option" and not p.hidden]


ALL = dict(commands(typer.main.get_command(app)))


def test_one_train_command_with_a_subcommand_per_run() -> None:
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "80"})
    assert top.exit_code == 0
    listed = re.findall(r"^  (\S+)", top.output.split("Commands:")[1], re.MULTILINE)
    assert "train" in listed
    assert not set(OLD_NAMES) & set(listed), "the former names must not show in guardrail --help"
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "80"})
    assert re.findall(r"^  (\S+)", train.output.split("Commands:")[1], re.MULTILINE) == [
        "grpo",
        "reference",
        "verbalized",
    ]


@pytest.mark.parametrize(
    ("old", "args", "error"),
    [
        ("train-verbalized", ["--mode", "holistic"], "error: --mode must be decoupled or single, got 'holistic'"),
        ("train-calibration", ["--model", "m"], "error: without --config, give --data"),
        ("train-reference", ["--threads", "1"], "error: --out {tmp} is a file, not a folder"),
    ],
)
def test_the_former_names_still_run_with_a_deprecation_note(
    old: str, args: list[str], error: str, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    out = ["--out", str(a_file)] if old == "train-reference" else ["--out", str(tmp_path / "m")]
    for words in ([old], OLD_NAMES[old].split()):
        result = runner.invoke(app, [*words, *out, *args])
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines()[-1] == error.format(tmp=a_file)
        note = f"note: `guardrail {old}` is deprecated and will be removed in the next release; use `guardrail "
        assert (note in result.stderr) == (words == [old])
    assert ALL[(old,)].hidden
    assert not ALL[tuple(OLD_NAMES[old].split())].hidden


def test_a_folder_inside_the_package_is_refused_without_force(tmp_path: Path) -> None:
    inside = PACKAGE / "reference" / "not-a-model-yet"
    result = runner.invoke(app, ["train", "verbalized", "--out", str(inside)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --out {inside} is inside the installed guardrail package ({PACKAGE}), whose shipped files it would "
        "replace; choose another folder, or give --force to write there anyway\n"
    )
    assert not inside.exists()
    refuse_package_folder(inside, force=True)  # a maintainer refreshing the shipped model
    refuse_package_folder(tmp_path / "m")  # anywhere else: no objection


@pytest.mark.parametrize("words", sorted(ALL), ids=" ".join)
def test_help_reads_at_80_columns(words: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    long = [line for line in result.output.splitlines() if len(line) > 80]
    assert not long, f"lines over 80 columns: {long}"
    for param in options(ALL[words]):
        for name in (*param.opts, *param.secondary_opts):
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", result.output), f"{name} is cut"
    assert "…" not in result.output


def test_no_flag_is_a_double_negative() -> None:
    """``--no-uncalibrated`` and ``--no-clean`` are gone from the help; their old spellings still parse."""
    for words, command in ALL.items():
        for param in options(command):
            for name in param.secondary_opts:
                positive = name.removeprefix("--no-")
                assert not positive.startswith(("un", "no-", "not-", "clean", "skip", "disable")), (words, name)
    help_text = runner.invoke(app, ["ask", "--help"], env={"COLUMNS": "80"}).output
    assert "--uncalibrated / --calibrated" in help_text
    assert "--no-uncalibrated" not in help_text
    assert "--clean / --corrupted" in runner.invoke(app, ["calibrate", "--help"], env={"COLUMNS": "80"}).output
    ask = {p.name: p for p in ALL[("ask",)].params}
    assert not ask["uncalibrated"].hidden
    assert ask["no_uncalibrated"].hidden


def test_the_former_module_names_import_with_a_deprecation_warning() -> None:
    for old, new in (("guardrail.training.train", "guardrail.training.run"), ("guardrail.reference.train", None)):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} is deprecated"):
            module = importlib.import_module(old)
        if new is not None:
            assert module.GRPORunConfig is importlib.import_module(new).GRPORunConfig
    from guardrail.reference import supervised
    from guardrail.training import GRPORunConfig, TrainCalibrationConfig, train_calibration, train_grpo

    assert TrainCalibrationConfig is GRPORunConfig
    assert train_calibration is train_grpo
    assert sys.modules["guardrail.reference.train"].train_reference is supervised.train_reference


# -- precision on a machine without a bf16 GPU ---------------------------------------------------------------------


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import transformers.utils.import_utils

    monkeypatch.setattr(transformers.utils.import_utils, "is_torch_bf16_gpu_available", lambda: False)
    monkeypatch.setattr(transformers.utils.import_utils, "is_torch_xla_available", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.usefixtures("no_gpu")
def test_without_a_gpu_training_takes_cpu_settings_by_itself() -> None:
    from guardrail.training.run import precision_defaults

    assert precision_defaults({}) == {"bf16": False, "use_cpu": True, "fp16": False}
    assert precision_defaults({"use_cpu": True, "bf16": False}) == {"fp16": False}  # what the run says stands
    with pytest.raises(InputError, match=r"^grpo\.bf16 is true, but this machine has no GPU: set it to false"):
        precision_defaults({"bf16": True})
    with pytest.raises(InputError, match=r"^grpo\.fp16 is true, but this machine has no GPU"):
        precision_defaults({"fp16": True})


def test_with_a_bf16_gpu_trl_defaults_stand(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.utils.import_utils

    from guardrail.training.run import precision_defaults

    monkeypatch.setattr(transformers.utils.import_utils, "is_torch_bf16_gpu_available", lambda: True)
    assert precision_defaults({}) == {}
    assert precision_defaults({"bf16": True}) == {}


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.filterwarnings(*TRL_DEPRECATIONS)
def test_train_grpo_on_a_cpu_machine_builds_cpu_settings_and_names_a_bf16_it_cannot_run(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from guardrail.training.run import GRPORunConfig

    run = GRPORunConfig(model="m", data="easyvqa:test", output=str(tmp_path / "o"))
    args = run.grpo_config()
    assert (args.bf16, args.fp16, args.use_cpu, args.output_dir) == (False, False, True, str(tmp_path / "o"))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {reference_model_path()}\ndata: 'easyvqa:test'\noutput: {tmp_path / 'o'}\ngrpo:\n  bf16: true\n"
    )
    result = runner.invoke(app, ["train", "grpo", "--config", str(config)])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: grpo.bf16 is true, but this machine has no GPU: set it to false (or leave it out to train in float32)\n"
    )
    assert not isinstance(result.exception, ValueError)


def test_train_reference_names_its_worlds_and_refuses_another(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "reference", "--world", "mnist", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert result.stderr == "error: --world 'mnist': expected easy-vqa or scenes\n"
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--visual-target", "absolute"], "error: --visual-target must be batch or guard, got 'absolute'"),
        (
            ["--mode", "single", "--no-tar", "--pairs"],
            "error: --visual-target guard and --pairs train the visual score of the decoupled reward; not with "
            "--mode single",
        ),
    ],
)
def test_train_verbalized_checks_the_issue_30_switches_before_training(
    args: list[str], error: str, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["train", "verbalized", "--out", str(tmp_path / "m"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == error
    assert not (tmp_path / "m").exists()


def test_train_grpo_takes_the_switches_as_flags(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {reference_model_path()}\ndata: 'easyvqa:test'\noutput: {tmp_path / 'o'}\n")
    result = runner.invoke(app, ["train", "grpo", "--config", str(config), "--visual-target", "guard"])
    assert result.exit_code == 2, result.output
    assert "target_artifact" in result.stderr
