"""Real GRPOTrainer and RLOOTrainer steps (tiny Llama policy built from a config) rewarded by a RewardEnsemble of two
reward models with different tokenizers (a Llama decoder given as a loaded model, a BERT encoder given as a folder and
loaded lazily) plus a rule-based answer check. The per-member metrics reach the trainer's logs exactly."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
from trl_rewards.testing import (
    save_tiny,
    tiny_bert_reward_model,
    tiny_llama_config,
    tiny_llama_reward_model,
    tiny_llama_tokenizer,
)

MEMBERS = ("llama_rm", "bert_rm", "answer_correctness")
COMMON = dict(
    per_device_train_batch_size=4,
    num_generations=2,
    max_completion_length=6,
    max_steps=2,
    learning_rate=1e-2,
    logging_steps=1,
    report_to=[],
    use_cpu=True,
    bf16=False,
    activation_checkpointing=False,
    save_strategy="no",
    seed=0,
    dataloader_pin_memory=False,
)


@pytest.fixture
def setup(tmp_path):
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    bert_path = save_tiny(*tiny_bert_reward_model(seed=2), tmp_path / "bert_rm")
    ensemble = RewardEnsemble(
        [
            RewardModelFunction(*tiny_llama_reward_model(seed=1), name="llama_rm", device="cpu"),
            RewardModelFunction(bert_path, device="cpu", max_length=64),  # named after its folder
            AnswerCorrectnessReward(),
        ],
        aggregation="mean",
        normalization="group",
        num_generations=2,
        name="ensemble",
    )
    # one prompt without a gold answer: the answer check gives None for its completions
    answers = [2 * i if i != 3 else None for i in range(8)]
    dataset = Dataset.from_dict({"prompt": [f"What is {i} + {i}? " for i in range(8)], "answer": answers})
    return policy, tokenizer, ensemble, dataset


def _check_logs(trainer, policy, before, ensemble):
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(math.isfinite(entry["loss"]) for entry in logs)
    for entry in logs:
        for member in MEMBERS:
            for stat in ("raw_mean", "normalized_mean", "missing_frac"):
                assert f"ensemble/{member}/{stat}" in entry, (member, stat)
        assert "ensemble/disagreement" in entry and entry["ensemble/disagreement"] >= 0
        assert "llama_rm/num_truncated" in entry and "bert_rm/num_truncated" in entry
        assert "rewards/ensemble/mean" in entry
    # one reward call per step and logging_steps=1: the last entry holds exactly the last call's metrics
    for key, value in ensemble.last_metrics.items():
        assert logs[-1][key] == pytest.approx(value, abs=1e-5), key
    changed = [n for n, p in policy.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "the policy did not train"


def test_grpo_steps_with_reward_ensemble(setup, tmp_path):
    policy, tokenizer, ensemble, dataset = setup
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), scale_rewards="none", **COMMON)
    assert ensemble.check_trainer_args(args) == []  # group z-score + scale_rewards="none": normalized once
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainer = GRPOTrainer(
        model=policy, reward_funcs=ensemble, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    _check_logs(trainer, policy, before, ensemble)


def test_rloo_steps_with_reward_ensemble(setup, tmp_path):
    policy, tokenizer, ensemble, dataset = setup
    args = RLOOConfig(output_dir=str(tmp_path / "rloo"), beta=0.0, normalize_advantages=False, **COMMON)
    assert ensemble.check_trainer_args(args) == []
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainer = RLOOTrainer(
        model=policy, reward_funcs=ensemble, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    _check_logs(trainer, policy, before, ensemble)


def test_reward_hacking_monitor_inside_grpo(setup, tmp_path, caplog):
    """The monitor's instruments reach GRPO's logs at every logging step: the reward-length Spearman correlation of
    the last generation batch (checked against scipy on the trainer's own completions and rewards), the ensemble's
    disagreement, and a held-out reward model the policy is not trained on; a threshold crossing warns once; the
    trajectories are plotted at the end."""
    from scipy.stats import spearmanr

    from trl_rewards.callbacks import RewardHackingMonitor

    policy, tokenizer, ensemble, dataset = setup
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), scale_rewards="none", **COMMON)
    trainer = GRPOTrainer(
        model=policy, reward_funcs=ensemble, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    held_out = RewardModelFunction(*tiny_llama_reward_model(seed=5), name="held_out", device="cpu")
    monitor = RewardHackingMonitor(
        trainer, held_out=held_out, thresholds={"disagreement": -1.0}, plot_path=str(tmp_path / "hacking.png")
    )
    trainer.add_callback(monitor)
    with caplog.at_level("WARNING", logger="trl_rewards.callbacks"):
        trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["hacking/disagreement"] == entry["ensemble/disagreement"]
        assert math.isfinite(entry["hacking/held_out_reward"])
    assert logs[0]["hacking/held_out_drop"] == 0.0
    recent = trainer._logs
    lengths = [len(c) for c in recent["completion"]]
    expected = spearmanr(lengths, list(recent["rewards"]["ensemble"])).statistic
    assert logs[-1].get("hacking/length_spearman", float("nan")) == pytest.approx(expected, nan_ok=True)
    assert caplog.text.count("reward hacking monitor: disagreement") == 1
    assert (tmp_path / "hacking.png").stat().st_size > 0
