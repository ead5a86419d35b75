"""The pairwise-reward GRPO example runs end to end on its CPU defaults (shortened) with a reference column and
within groups, and logs the pairwise reward's mean, a win probability."""

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpo_with_pairwise_reward.py"


@pytest.mark.parametrize("reference", ["reference", "best_of_group"])
def test_grpo_pairwise_example_runs(tmp_path, monkeypatch, reference):
    spec = importlib.util.spec_from_file_location("grpo_with_pairwise_reward", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    argv = ["--output_dir", str(tmp_path), "--max_steps", "1", "--max_completion_length", "4", "--num_problems", "8"]
    trainer = module.main(argv + ["--reference", reference])
    (entry,) = [e for e in trainer.state.log_history if "loss" in e]
    assert 0.0 <= entry["rewards/pairwise/mean"] <= 1.0
    if reference == "best_of_group":  # groups of two: the best gets 0.5, the other P(other ≻ best) <= 0.5
        assert entry["rewards/pairwise/mean"] <= 0.5
