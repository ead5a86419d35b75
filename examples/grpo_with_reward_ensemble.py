"""GRPO on arithmetic word problems, rewarded by a RewardEnsemble of reward models and an answer check.

The members have their own tokenizers (none needs the policy's), are z-scored per GRPO group before being averaged,
and their raw / normalized means and their disagreement are logged with the trainer's metrics.

On CPU with tiny models built from configs (a Llama-style and a BERT-style reward model, random weights), a few
seconds:

    python examples/grpo_with_reward_ensemble.py

With real models (every GRPOConfig flag works, or put them in a YAML file passed with --config):

    python examples/grpo_with_reward_ensemble.py --policy Qwen/Qwen2.5-0.5B-Instruct \
        --reward_models my-bt-rm my-outcome-rm --aggregation uncertainty --uncertainty_lambda 0.5 \
        --max_steps 200 --per_device_train_batch_size 8 --num_generations 8 --max_completion_length 256 \
        --output_dir runs/grpo_ensemble --bf16 true --use_cpu false
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, TrlParser

from trl_rewards.data.synthetic import build_synthetic_datasets
from trl_rewards.rewards.ensemble import AGGREGATIONS, NORMALIZATIONS, RewardEnsemble
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
from trl_rewards.testing import (
    tiny_bert_reward_model,
    tiny_llama_config,
    tiny_llama_reward_model,
    tiny_llama_tokenizer,
)

# Small enough for a CPU in seconds; every one is overridden by the matching flag.
CPU_DEFAULTS = dict(
    output_dir="runs/grpo_ensemble",
    per_device_train_batch_size=4,
    num_generations=2,
    max_completion_length=16,
    max_steps=2,
    scale_rewards="none",  # the ensemble z-scores per group already: GRPO's group std would normalize twice
    logging_steps=1,
    report_to="none",
    save_strategy="no",
    use_cpu=True,
    bf16=False,
    activation_checkpointing=False,
)


@dataclass
class ExampleArguments:
    policy: str | None = field(
        default=None, metadata={"help": "Policy model (Hub id or folder); default: a tiny Llama built from a config."}
    )
    reward_models: list[str] = field(
        default_factory=list,
        metadata={"help": "Reward model folders or Hub ids (full or adapter); default: a tiny Llama and a tiny BERT."},
    )
    reward_device: str | None = field(
        default=None, metadata={"help": "Device of the reward models; default cuda when available, else cpu."}
    )
    max_tokens_per_batch: int | None = field(
        default=None, metadata={"help": "Token budget of one reward-model forward pass (long completions)."}
    )
    aggregation: str = field(default="mean", metadata={"help": "How members combine.", "choices": list(AGGREGATIONS)})
    uncertainty_lambda: float | None = field(
        default=None, metadata={"help": "lambda of aggregation='uncertainty' (mean - lambda * std)."}
    )
    normalization: str = field(
        default="group", metadata={"help": "Per-member z-score.", "choices": list(NORMALIZATIONS)}
    )
    num_problems: int = field(default=64, metadata={"help": "Synthetic training problems."})


def build_ensemble(example: ExampleArguments, num_generations: int) -> RewardEnsemble:
    if example.reward_models:
        members = [
            RewardModelFunction(
                path,
                name=os.path.basename(os.path.normpath(path)),
                device=example.reward_device,
                max_tokens_per_batch=example.max_tokens_per_batch,
            )
            for path in example.reward_models
        ]
    else:
        members = [
            RewardModelFunction(*tiny_llama_reward_model(seed=1), name="tiny_llama_rm", device=example.reward_device),
            RewardModelFunction(*tiny_bert_reward_model(seed=2), name="tiny_bert_rm", device=example.reward_device),
        ]
    return RewardEnsemble(
        members + [AnswerCorrectnessReward()],
        aggregation=example.aggregation,
        uncertainty_lambda=example.uncertainty_lambda,
        normalization=example.normalization,
        num_generations=num_generations if example.normalization == "group" else None,
    )


def main(argv: list[str] | None = None):
    parser = TrlParser((ExampleArguments, GRPOConfig))
    parser.set_defaults(**CPU_DEFAULTS)
    example, args = parser.parse_args_and_config(argv)
    if example.policy is None:
        tokenizer = tiny_llama_tokenizer()
        policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    else:
        tokenizer = AutoTokenizer.from_pretrained(example.policy)
        policy = AutoModelForCausalLM.from_pretrained(example.policy)
    prompts = build_synthetic_datasets(n_train=example.num_problems, n_test=1)["prompts_train"]
    ensemble = build_ensemble(example, args.num_generations)
    ensemble.check_trainer_args(args)  # warns when GRPO normalizes the rewards again (scale_rewards)
    trainer = GRPOTrainer(
        model=policy, reward_funcs=ensemble, args=args, train_dataset=prompts, processing_class=tokenizer
    )
    trainer.train()
    for entry in trainer.state.log_history:
        members = {k: round(v, 4) for k, v in entry.items() if k.startswith(f"{ensemble.__name__}/")}
        if members:
            print(f"step {entry['step']}: reward {entry.get('reward', float('nan')):.4f} {members}")
    return trainer


if __name__ == "__main__":
    main()
