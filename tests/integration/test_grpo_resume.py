"""GRPO with a running-normalized RewardEnsemble, resumed from a checkpoint: the reward statistics come back with the
checkpoint (no hand-written restore), and every reward is counted once, also when the checkpoint falls inside a
generation batch (which the resumed trainer generates and scores again)."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer

from trl_rewards.callbacks import NormalizerCheckpointCallback
from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
from trl_rewards.testing import tiny_llama_config, tiny_llama_reward_model, tiny_llama_tokenizer


def _run(output_dir, resume=None, **overrides):
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    ensemble = RewardEnsemble(
        [RewardModelFunction(*tiny_llama_reward_model(seed=1), name="rm", device="cpu"), AnswerCorrectnessReward()],
        normalization="running",
        name="ensemble",
    )
    data = Dataset.from_dict(
        {"prompt": [f"What is {i} + {i}? " for i in range(16)], "answer": [2 * i for i in range(16)]}
    )
    args = GRPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=4, num_generations=2, max_completion_length=6,
        max_steps=4, learning_rate=1e-2, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
        activation_checkpointing=False, save_strategy="steps", save_steps=1, seed=0, dataloader_pin_memory=False,
        scale_rewards="none", **overrides,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=policy, reward_funcs=ensemble, args=args, train_dataset=data, processing_class=tokenizer,
        callbacks=[NormalizerCheckpointCallback.for_ensemble(ensemble)],
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    return {name: normalizer.state_dict() for name, normalizer in ensemble.normalizers.items()}


@pytest.mark.slow
def test_resumed_run_has_the_statistics_of_an_uninterrupted_one(tmp_path):
    """One generation per step (the default): resumed from checkpoint-2, the statistics equal the uninterrupted
    run's exactly (TRL restores the sampling RNG, the callback the statistics). Without the restore the resumed run
    would count only the 2 steps after the checkpoint: 8 rewards per member instead of 16."""
    uninterrupted = _run(tmp_path)
    resumed = _run(tmp_path, resume=str(tmp_path / "checkpoint-2"))
    assert resumed == uninterrupted and uninterrupted["rm"]["count"] == 16


@pytest.mark.slow
def test_checkpoint_inside_a_generation_batch_counts_each_reward_once(tmp_path):
    """steps_per_generation=2: completions are generated and scored at steps 0 and 2, each batch serving two steps.
    checkpoint-3 falls inside the second batch; the resumed trainer generates and scores at step 3 again. Saving the
    statistics as they were at step 3 counted that batch twice (24 rewards per member); the callback saves those
    from before the batch's call, so the resumed run counts 16, like the uninterrupted one."""
    uninterrupted = _run(tmp_path, steps_per_generation=2)
    resumed = _run(tmp_path, resume=str(tmp_path / "checkpoint-3"), steps_per_generation=2)
    assert uninterrupted["rm"]["count"] == 16
    assert resumed["rm"]["count"] == resumed["answer_correctness"]["count"] == 16
