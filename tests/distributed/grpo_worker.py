"""Worker for the multi-process GRPO tests: real `trl.GRPOTrainer` steps rewarded by a `RewardEnsemble` of two reward
models with different tokenizers (given as folders, loaded lazily on the first reward call) plus a rule-based answer
check, z-scored with running statistics synchronized across ranks.

Each rank writes `rank{r}.json` with, for every model member, where it ran and whether its weights are whole (not
ZeRO-3 partitioned), the running statistics of every member after training, every raw reward it computed with the
texts it scored (so the test can rescore them in a plain process), and the logged metric names.

Launched by tests/distributed/test_grpo_multiprocess.py with `python -m torch.distributed.run --nproc_per_node 2`
(plain multi-process, gloo) or `accelerate launch --num_processes 2 --use_deepspeed --zero_stage 3 ...`.
"""

import argparse
import json
import os

import torch
import torch.distributed as dist
from datasets import Dataset
from transformers import AutoModelForCausalLM
from transformers.integrations import is_deepspeed_zero3_enabled
from trl import GRPOConfig, GRPOTrainer

from trl_rewards.modeling import load_reward_model
from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer

N_PROMPTS = 8
NO_ANSWER = 3  # this prompt has no gold answer: the answer check returns None for its completions


def prompts() -> Dataset:
    answers = [2 * i if i != NO_ANSWER else None for i in range(N_PROMPTS)]
    return Dataset.from_dict({"prompt": [f"What is {i} + {i}? " for i in range(N_PROMPTS)], "answer": answers})


class RecordingEnsemble(RewardEnsemble):
    """A `RewardEnsemble` that keeps every call's texts and raw member rewards, and whether ZeRO-3 was active then."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def member_rewards(self, prompts, completions, completion_ids=None, **kwargs):
        raw, failed = super().member_rewards(prompts, completions, completion_ids, **kwargs)
        self.calls.append(
            {
                "prompts": list(prompts),
                "completions": list(completions),
                "raw": {name: raw[:, k].tolist() for k, name in enumerate(self.members)},  # NaN = None
                "zero3_enabled": is_deepspeed_zero3_enabled(),
            }
        )
        return raw, failed


def _is_whole(model) -> bool:
    """No parameter is a ZeRO-3 shard (`ds_id` attribute, empty `data`), and the 1-output head is a 2-D matrix."""
    params = list(model.named_parameters())
    head = [p for name, p in params if name.split(".")[-2] in ("score", "classifier") and name.endswith("weight")]
    return (
        bool(params)
        and all(not hasattr(p, "ds_id") and p.numel() > 0 for _, p in params)
        and len(head) == 1
        and head[0].dim() == 2
        and head[0].shape[0] == 1
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama_rm", required=True)
    parser.add_argument("--bert_rm", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    ensemble = RecordingEnsemble(
        [
            RewardModelFunction(args.llama_rm, name="llama_rm"),  # default device: cpu here, this rank's GPU on CUDA
            RewardModelFunction(args.bert_rm, name="bert_rm", max_length=64),
            AnswerCorrectnessReward(),
        ],
        normalization="running",
        name="ensemble",
    )
    config = GRPOConfig(
        output_dir=os.path.join(args.out, "run"),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=4,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        scale_rewards="none",
        report_to=[],
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        seed=0,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    trainer = GRPOTrainer(
        model=policy, reward_funcs=ensemble, args=config, train_dataset=prompts(), processing_class=tokenizer
    )
    trainer.train()

    members = {}
    for name in ("llama_rm", "bert_rm"):
        member = ensemble.members[name]
        loaded_in_training = member._scorer is not None  # lazily, on the first reward call
        model = member.scorer.model
        members[name] = {
            "loaded_in_training": loaded_in_training,
            "device": str(next(model.parameters()).device),
            "scorer_device": str(member.scorer.device),
            "whole": _is_whole(model),
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }
    # Control for the check above: the same folder loaded for training (partitioned) must not pass as whole.
    control_whole = None
    if is_deepspeed_zero3_enabled():
        control_whole = _is_whole(load_reward_model(args.llama_rm, partition_under_zero3=True)[0])
    rank = dist.get_rank() if dist.is_initialized() else 0
    policy_params = list(trainer.model.parameters())
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "rank": rank,
                "world_size": dist.get_world_size() if dist.is_initialized() else 1,
                "backend": dist.get_backend() if dist.is_initialized() else None,
                "deepspeed": trainer.is_deepspeed_enabled,
                "policy_partitioned": any(hasattr(p, "ds_id") for p in policy_params),
                "members": members,
                "partitioned_load_whole": control_whole,
                "normalizers": {name: n.state_dict() for name, n in ensemble.normalizers.items()},
                "calls": ensemble.calls,
                "logs": [entry for entry in trainer.state.log_history if "loss" in entry],
            },
            f,
        )


if __name__ == "__main__":
    main()
