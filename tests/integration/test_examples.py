"""The GRPO example runs end to end on its CPU defaults (shortened), and logs the ensemble's per-member metrics."""

import importlib.util
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpo_with_reward_ensemble.py"


def test_grpo_example_runs(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("grpo_with_reward_ensemble", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    argv = ["--output_dir", str(tmp_path), "--max_steps", "1", "--max_completion_length", "4", "--num_problems", "8"]
    trainer = module.main(argv + ["--aggregation", "uncertainty", "--uncertainty_lambda", "0.5"])
    (entry,) = [e for e in trainer.state.log_history if "loss" in e]
    assert {"reward_ensemble/tiny_llama_rm/raw_mean", "reward_ensemble/tiny_bert_rm/raw_mean"} <= set(entry)
    assert trainer.reward_funcs[0].uncertainty_lambda == 0.5


STEP_EXAMPLE = EXAMPLE.parent / "grpo_with_step_rewards.py"


def test_grpo_step_rewards_example_runs(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("grpo_with_step_rewards", STEP_EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    argv = ["--output_dir", str(tmp_path), "--max_steps", "1", "--max_completion_length", "4", "--num_problems", "8"]
    trainer = module.main(argv + ["--step_reward", "prm", "--process_advantage_weight", "2"])
    (entry,) = [e for e in trainer.state.log_history if "loss" in e]
    assert {"steps/tiny_prm/mean_step_reward", "steps/tiny_prm/steps_per_completion"} <= set(entry)
    assert trainer.process_advantage_weight == 2.0
