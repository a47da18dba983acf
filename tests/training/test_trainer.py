"""The calibration trainer on TRL: options, the pinned version, the run config, and (slow) real GRPO steps."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from guardrail.cli import _register, app
from guardrail.errors import InputError
from guardrail.training import CalibrationOptions, GRPORunConfig, load_config
from guardrail.training.collapse import ConfidenceCollapseWarning
from guardrail.training.trainer import TRL_VERSION, check_trl_version, confidence_block_span
from tests.support.trl import TRL_DEPRECATIONS


def test_the_pinned_trl_is_installed_and_another_is_refused() -> None:
    check_trl_version()
    with pytest.raises(RuntimeError, match=f"internals of TRL {TRL_VERSION}"):
        check_trl_version("1.17.0")


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="mode"):
        CalibrationOptions(mode="holistic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TAR"):
        CalibrationOptions(mode="single", tar=True)
    with pytest.raises(ValueError, match="w_min"):
        CalibrationOptions(w_min=1.2, w_max=1.1)
    assert not CalibrationOptions(mode="single", tar=False).needs_probe
    with pytest.raises(ValueError, match="visual_target"):
        CalibrationOptions(visual_target="absolute")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target_artifact"):
        CalibrationOptions(visual_target="guard")
    with pytest.raises(ValueError, match="decoupled"):
        CalibrationOptions(mode="single", tar=False, pairs=True)
    with pytest.raises(ValueError, match=r"`rank_margin` must be a finite number >= 0, got -0\.1"):
        CalibrationOptions(rank_margin=-0.1)
    with pytest.raises(ValueError, match="collapse_patience"):
        CalibrationOptions(collapse_patience=0)


def test_the_switches_add_their_reward_terms_and_weights() -> None:
    plain = CalibrationOptions()
    assert plain.term_names() == ["correctness", "calibration_brier", "format", "visual_brier"]
    assert plain.reward_weights() == [1.0, 2.0, 0.4, 0.4]
    both = CalibrationOptions(ranking=True, pairs=True)
    assert both.term_names() == ["correctness", "calibration_brier", "format", "visual_brier", "ranking", "pair"]
    assert both.reward_weights() == [1.0, 2.0, 0.4, 0.4, 1.0, 0.4]
    single = CalibrationOptions(mode="single", tar=False, ranking=True)
    assert single.term_names() == ["correctness", "calibration_brier", "format", "ranking"]


def test_the_confidence_block_runs_from_its_first_tag_to_the_end() -> None:
    text = "<vision>a red circle</vision> \\boxed{red}<confidence><vision_confidence>8</vision_confidence>"
    assert confidence_block_span(text) == (text.index("<confidence>"), len(text))
    bare = "\\boxed{red} <reasoning_confidence>7</reasoning_confidence>"
    assert confidence_block_span(bare) == (bare.index("<reasoning"), len(bare))
    assert confidence_block_span("\\boxed{red}") is None


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\ndata: easyvqa:calibration\noutput: o\ngrpo: {max_steps: 3}\nlora: {r: 8}\n")
    config = load_config(path, tar=False)
    got = (config.model, config.tar, dict(config.grpo), dict(config.lora or {}))
    assert got == ("m", False, {"max_steps": 3}, {"r": 8})
    path.write_text("model: m\ndata: d\noutput: o\nvisual_target: guard\ntarget_artifact: a.json\nranking: true\n")
    options = load_config(path, pairs=True, own_advantage=True).options()
    assert (options.visual_target, options.target_artifact, options.ranking, options.pairs, options.own_advantage) == (
        "guard",
        "a.json",
        True,
        True,
        True,
    )
    path.write_text("model: m\ndata: d\noutput: o\nlearning_rate: 1\n")
    with pytest.raises(InputError, match="unknown key"):
        load_config(path)
    path.write_text("model: m\n")
    with pytest.raises(InputError, match="missing"):
        load_config(path)


def test_shipped_gpu_recipe_is_a_valid_config() -> None:
    recipe = Path(__file__).resolve().parents[2] / "examples" / "train_calibration" / "qwen2_5_vl_3b.yaml"
    config = load_config(recipe)
    options = config.options()
    assert options.mode == "decoupled"
    assert options.tar
    assert config.lora is not None
    assert config.grpo["use_vllm"] is True
    from peft import LoraConfig
    from trl.trainer.grpo_config import GRPOConfig

    LoraConfig(**dict(config.lora))
    assert set(config.grpo) <= set(GRPOConfig.__dataclass_fields__)


def test_cli_refuses_bad_usage(tmp_path: Path) -> None:
    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["train", "grpo", "--model", "m"])
    assert result.exit_code == 2
    assert "--data" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: m\ndata: 'easyvqa:test'\noutput: {tmp_path / 'o'}\nmode: holistic\n")
    result = runner.invoke(app, ["train", "grpo", "--config", str(bad)])
    assert result.exit_code == 2
    assert "mode" in result.output


@pytest.mark.slow
@pytest.mark.filterwarnings(*TRL_DEPRECATIONS)
def test_grpo_steps_on_the_reference_model_reach_the_loss_with_per_token_advantages(tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl.trainer.grpo_config import GRPOConfig

    from guardrail.reference import reference_model_path
    from guardrail.training import ConfidenceGRPOTrainer, extend_vocabulary, reward_functions
    from guardrail.training.run import build_dataset

    model = AutoModelForImageTextToText.from_pretrained(reference_model_path())
    processor = AutoProcessor.from_pretrained(reference_model_path())  # type: ignore[no-untyped-call]
    assert extend_vocabulary(model, processor) == 19
    seen: list[torch.Tensor] = []

    class Recording(ConfidenceGRPOTrainer):
        def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
            seen.append(inputs["advantages"].detach().clone())
            return super()._compute_loss(model, inputs)  # type: ignore[no-untyped-call]

    rng = random.Random(0)

    def noise(completions: list[Any], **_: Any) -> list[float]:  # rewards that differ within every group
        return [rng.random() for _ in completions]

    config = GRPORunConfig(model="reference", data="easyvqa:calibration", output=str(tmp_path), limit=8)
    options = CalibrationOptions()
    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=32,
        temperature=1.5,
        learning_rate=1e-3,
        beta=0.0,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        reward_weights=[*options.weights.as_list(), 1.0],
    )
    trainer = Recording(
        model=model,
        reward_funcs=[*reward_functions(), noise],
        args=args,
        train_dataset=build_dataset(config),
        processing_class=processor,
        calibration=options,
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert seen
    assert all(a.dim() == 2 for a in seen)
    reweighted = [row for a in seen for row in a if float(row.max() - row.min()) > 0]
    assert reweighted, "TAR reweighted no token"
    assert all(float(row.max()) < 0 for row in reweighted)  # only rollouts with negative advantage
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    logged = [h for h in trainer.state.log_history if "tar/reweighted_tokens" in h]
    assert logged
    assert all("visual_certainty/raw_score_mean" in h for h in logged)


@pytest.mark.slow
@pytest.mark.filterwarnings(*TRL_DEPRECATIONS)
def test_grpo_steps_with_every_switch_of_issue_30(tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from guardrail.reference import reference_model_path
    from guardrail.training import ConfidenceGRPOTrainer, extend_vocabulary
    from guardrail.training.run import build_dataset

    model = AutoModelForImageTextToText.from_pretrained(reference_model_path())
    processor = AutoProcessor.from_pretrained(reference_model_path())  # type: ignore[no-untyped-call]
    extend_vocabulary(model, processor)
    roles: list[list[float]] = []
    seen: list[torch.Tensor] = []

    class Recording(ConfidenceGRPOTrainer):
        def _calculate_rewards(self, inputs: list[dict[str, Any]], *args: Any) -> torch.Tensor:
            roles.append([float(x["pair_role"]) for x in inputs])
            return super()._calculate_rewards(inputs, *args)

        def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
            seen.append(inputs["advantages"].detach().clone())
            return super()._compute_loss(model, inputs)  # type: ignore[no-untyped-call]

    config = GRPORunConfig(
        model="reference",
        data="easyvqa:calibration",
        output=str(tmp_path),
        limit=4,
        visual_target="guard",
        target_artifact=str(reference_model_path() / "guardrail_calibration.json"),
        own_advantage=True,
        ranking=True,
        pairs=True,
        collapse_threshold=10.0,  # the untrained model states no confidence: the alarm must fire
        collapse_patience=2,
        grpo={
            "max_steps": 2,
            "per_device_train_batch_size": 8,
            "num_generations": 4,
            "max_completion_length": 32,
            "beta": 0.0,
            "use_cpu": True,
            "save_strategy": "no",
            "report_to": "none",
            "logging_steps": 1,
        },
    )
    options = config.options()
    trainer = Recording(
        model=model,
        reward_funcs=options.reward_functions(),
        args=config.grpo_config(),
        train_dataset=build_dataset(config),
        processing_class=processor,
        calibration=options,
    )
    with pytest.warns(ConfidenceCollapseWarning, match="for 2 steps"):
        trainer.train()
    assert roles
    assert all(r == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0] for r in roles)
    assert seen
    assert all(a.dim() == 2 for a in seen)
    logged = [h for h in trainer.state.log_history if "rewards/ranking/mean" in h]
    assert len(logged) == 2
    for entry in logged:
        assert "rewards/pair/mean" in entry
        assert 0.0 <= entry["visual_certainty/target_mean"] <= 1.0
        assert "confidence/stated_std" in entry
        assert "confidence/ceiling_share" in entry
    assert trainer.collapse_alarm.fired_at == [1]


@pytest.mark.slow
@pytest.mark.filterwarnings(*TRL_DEPRECATIONS)
def test_cli_trains_a_lora_adapter_on_a_tiny_llava(tmp_path: Path) -> None:
    from tests.support.tiny_vlms import save_tiny_llava

    model = save_tiny_llava(tmp_path / "model")
    config = tmp_path / "run.yaml"
    config.write_text(
        json.dumps(
            {
                "model": str(model),
                "data": "easyvqa:calibration",
                "output": str(tmp_path / "out"),
                "limit": 4,
                "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                "grpo": {
                    "per_device_train_batch_size": 4,
                    "num_generations": 4,
                    "max_completion_length": 12,
                    "beta": 0.0,
                    "use_cpu": True,
                    "save_strategy": "no",
                },
            }
        )
    )
    _register()
    result = CliRunner().invoke(app, ["train", "grpo", "--config", str(config), "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "adapter_config.json").is_file()
