"""Reward functions from a YAML file, and through TRL's own `trl grpo` command line."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.from_config import build_reward
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
from trl_rewards.testing import save_tiny, tiny_llama_config, tiny_llama_reward_model, tiny_llama_tokenizer


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    return save_tiny(*tiny_llama_reward_model(), tmp_path_factory.mktemp("rm") / "rm")


def test_build_reward_from_yaml(tmp_path, reward_dir):
    config = {
        "members": [{"model": reward_dir, "name": "rm", "device": "cpu"}, {"answer_correctness": {}}],
        "aggregation": "min",
        "normalization": "none",
    }
    path = tmp_path / "rewards.yaml"
    path.write_text(yaml.safe_dump(config))
    reward = build_reward(path)
    assert isinstance(reward, RewardEnsemble) and reward.aggregation == "min"
    assert isinstance(reward.members["rm"], RewardModelFunction)
    assert isinstance(reward.members["answer_correctness"], AnswerCorrectnessReward)
    single = build_reward({"model": reward_dir, "device": "cpu"})
    assert isinstance(single, RewardModelFunction)
    with pytest.raises(ValueError, match=r"members\[0\]: name exactly one of"):
        build_reward({"members": [{"name": "x"}]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_reward(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_trl_grpo_command_line_trains_with_our_ensemble(tmp_path, reward_dir):
    """TRL's real `trl grpo` entry point imports `trl_rewards.rewards.from_config.reward`, which builds our ensemble
    from the YAML file named in TRL_REWARDS_REWARD_CONFIG; one GRPO step runs and logs the ensemble's metrics."""
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = save_tiny(AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer)), tokenizer, tmp_path / "policy")
    data = tmp_path / "prompts"
    data.mkdir()
    (data / "train.jsonl").write_text(
        "".join(json.dumps({"prompt": f"What is {i}+{i}? ", "answer": 2 * i}) + "\n" for i in range(4))
    )
    config = tmp_path / "rewards.yaml"
    config.write_text(yaml.safe_dump({
        "members": [{"model": reward_dir, "name": "rm", "device": "cpu"}, {"answer_correctness": {}}],
        "normalization": "group", "num_generations": 2, "name": "ensemble",
    }))  # fmt: skip
    out = tmp_path / "out"
    command = [
        os.path.join(os.path.dirname(sys.executable), "trl"), "grpo", "--model_name_or_path", policy,
        "--dataset_name", str(data), "--reward_funcs", "trl_rewards.rewards.from_config.reward",
        "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--max_completion_length", "4", "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
        "--logging_steps", "1", "--save_strategy", "no", "--scale_rewards", "none", "--dataloader_pin_memory", "false",
    ]  # fmt: skip
    env = {**os.environ, "TRL_REWARDS_REWARD_CONFIG": str(config), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ensemble/disagreement" in result.stdout + result.stderr
    assert (out / "model.safetensors").exists()


def test_every_reward_kind_builds_from_yaml(tmp_path, reward_dir):
    from transformers import AutoModelForSequenceClassification

    from trl_rewards.rewards.attribute_rewards import AttributeRewardFunction
    from trl_rewards.rewards.ensemble import AsyncRewardEnsemble
    from trl_rewards.rewards.implicit_rewards import ImplicitRewardFunction, JudgeRewardFunction
    from trl_rewards.rewards.remote_rewards import RemoteRewardFunction
    from trl_rewards.trainers.attr_trainer import set_attribute_head

    tokenizer = tiny_llama_tokenizer()
    policy = save_tiny(AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer)), tokenizer, tmp_path / "lm")
    attributes = AutoModelForSequenceClassification.from_config(tiny_llama_config(tokenizer, num_labels=2))
    set_attribute_head(attributes.config, ["quality", "safety"])
    attributes = save_tiny(attributes, tokenizer, tmp_path / "attr")
    config = {
        "members": [
            {"attributes": attributes, "weights": {"quality": 1.0}, "name": "attr", "device": "cpu"},
            {"implicit": policy, "ref_model": policy, "beta": 0.5, "name": "dpo"},
            {"judge": policy, "name": "judge"},
            {"remote": "http://127.0.0.1:1/v1,http://127.0.0.1:2/v1", "on_error": "none", "name": "served"},
        ],
        "normalization": "batch",
    }
    reward = build_reward(config)
    assert isinstance(reward, AsyncRewardEnsemble)  # the remote member is async, so the ensemble is too
    members = reward.members
    assert isinstance(members["attr"], AttributeRewardFunction) and isinstance(members["dpo"], ImplicitRewardFunction)
    assert isinstance(members["judge"], JudgeRewardFunction) and isinstance(members["served"], RemoteRewardFunction)
    assert members["served"].urls == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    prompts, completions = ["Q: 1+1?"] * 2, ["2", "3"]
    assert members["dpo"](prompts, completions) == [0.0, 0.0]  # the policy is its own reference: no implicit reward
    assert members["attr"](prompts, completions) == pytest.approx(
        AttributeRewardFunction(attributes, weights={"quality": 1.0}, device="cpu")(prompts, completions)
    )


@pytest.mark.parametrize(
    "member, error, message",
    [
        ({"remote": "http://h:8000", "max_length": 3}, TypeError, r"\[0\]: remote member \(RemoteRewardFunction\)"),
        ({"answer_correctness": "yes"}, ValueError, r"members\[0\]: 'answer_correctness' takes a mapping"),
        ({"judge": "m", "prm": "p"}, ValueError, r"members\[0\]: name exactly one of \['model', 'prm', 'attributes'"),
    ],
)  # fmt: skip
def test_a_bad_member_is_named(member, error, message):
    with pytest.raises(error, match=message):
        build_reward({"members": [member]})
