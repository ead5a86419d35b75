"""Worker for the multi-process ProcessGRPOTrainer test: real steps on two CPU processes, with one GRPO group of four
completions split across them (two per rank), so the step rewards must be normalized over both ranks.

Each rank writes `rank{r}.json` with, for every generation batch, its prompts, completion token ids, completion mask
and (B, T) advantages, and the logged metrics. Launched by tests/distributed/test_process_grpo_multiprocess.py with
`python -m torch.distributed.run --nproc_per_node 2`.
"""

import argparse
import json
import os

import torch
import torch.distributed as dist
from datasets import Dataset
from transformers import AutoModelForCausalLM

from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer
from trl_rewards.trainers.process_grpo_config import ProcessGRPOConfig
from trl_rewards.trainers.process_grpo_trainer import ProcessGRPOTrainer

NUM_GENERATIONS = 4
VOWELS = set("aeiouAEIOU")


def prompts() -> Dataset:
    return Dataset.from_dict({"prompt": [f"Say {i} vowels: " for i in range(8)]})


def vowel_count(prompts, completions, **kwargs):
    return [float(sum(c in VOWELS for c in text)) for text in completions]


class TripleSteps:
    """A step every 3 characters (the last one cut by the end), rewarded 1 when it holds a vowel or a digit."""

    __name__ = "triples"

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        out = []
        for text in completions:
            ends = [*range(3, len(text), 3), len(text)] if text else []
            out.append([(e, float(any(c in VOWELS or c.isdigit() for c in text[e - 3 : e]))) for e in ends] or None)
        return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ProcessGRPOConfig(
        output_dir=os.path.join(args.out, "run"),
        per_device_train_batch_size=2,
        num_generations=NUM_GENERATIONS,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        beta=0.0,
        outcome_advantage_weight=0.5,
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
    trainer = ProcessGRPOTrainer(
        policy, vowel_count, config, prompts(), processing_class=tokenizer, step_reward_funcs=TripleSteps()
    )
    batches, original = [], trainer._generate_and_score_completions

    def record(inputs):
        output = original(inputs)
        mask = output["completion_mask"]
        batches.append(
            {
                "prompts": [x["prompt"] for x in inputs],
                "completion_ids": [
                    ids[m.bool()].tolist() for ids, m in zip(output["completion_ids"], mask, strict=True)
                ],
                "advantages": [a[m.bool()].tolist() for a, m in zip(output["advantages"], mask, strict=True)],
            }
        )
        return output

    trainer._generate_and_score_completions = record
    trainer.train()
    rank = dist.get_rank() if dist.is_initialized() else 0
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "rank": rank,
                "world_size": dist.get_world_size() if dist.is_initialized() else 1,
                "batches": batches,
                "logs": [entry for entry in trainer.state.log_history if "loss" in entry],
            },
            f,
        )


if __name__ == "__main__":
    main()
