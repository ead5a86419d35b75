"""PPO (TRL 1.12's PPOTrainer) on arithmetic word problems, rewarded by a RewardEnsemble through
`RewardFunctionModule`, the adapter that lets reward functions serve as PPO's `reward_model`.

PPO needs trl 1.12 (`trl.experimental.ppo`, removed afterwards): run it in the PPO environment that `./dev test-ppo`
creates (`.venv-ppo`). On CPU with tiny models built from configs (random weights), a few seconds:

    .venv-ppo/bin/python examples/ppo_with_reward_ensemble.py

With real models (every PPOConfig flag works, or put them in a YAML file passed with --config):

    .venv-ppo/bin/python examples/ppo_with_reward_ensemble.py --policy Qwen/Qwen2.5-0.5B-Instruct \
        --reward_models my-bt-rm my-outcome-rm --aggregation min --total_episodes 10000 \
        --per_device_train_batch_size 8 --response_length 256 --output_dir runs/ppo_ensemble --use_cpu false

The policy's queries are decoded with its own tokenizer and re-tokenized by each reward model with its own; the gold
answers reach the answer check through `query_columns` (PPO's collator keeps only `input_ids`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from trl import TrlParser  # noqa: E402
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: E402

from trl_rewards.callbacks import attach_reward_metrics  # noqa: E402
from trl_rewards.data.synthetic import build_synthetic_datasets  # noqa: E402
from trl_rewards.rewards.ensemble import AGGREGATIONS, RewardEnsemble  # noqa: E402
from trl_rewards.rewards.model_rewards import RewardModelFunction  # noqa: E402
from trl_rewards.rewards.ppo import RewardFunctionModule  # noqa: E402
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward  # noqa: E402
from trl_rewards.testing import (  # noqa: E402
    tiny_bert_reward_model,
    tiny_llama_config,
    tiny_llama_reward_model,
    tiny_llama_tokenizer,
)

# Small enough for a CPU in seconds; every one is overridden by the matching flag.
CPU_DEFAULTS = dict(
    output_dir="runs/ppo_ensemble",
    per_device_train_batch_size=4,
    local_rollout_forward_batch_size=4,
    num_mini_batches=1,
    total_episodes=8,
    num_ppo_epochs=1,
    response_length=16,
    num_sample_generations=0,
    stop_token="eos",
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
        default=None,
        metadata={"help": "Policy model, also the value model's base; default: a tiny Llama built from a config."},
    )
    reward_models: list[str] = field(
        default_factory=list,
        metadata={"help": "Reward model folders or Hub ids (full or adapter); default: a tiny Llama and a tiny BERT."},
    )
    reward_device: str | None = field(
        default=None, metadata={"help": "Device of the reward models; default cuda when available, else cpu."}
    )
    aggregation: str = field(default="mean", metadata={"help": "How members combine.", "choices": list(AGGREGATIONS)})
    normalization: str = field(
        default="batch",
        metadata={"help": "Per-member z-score (PPO has no groups).", "choices": ["batch", "running", "none"]},
    )
    num_problems: int = field(default=64, metadata={"help": "Synthetic training problems."})


def load_models(example: ExampleArguments):
    """`(tokenizer, policy, ref_policy, value_model)`; the tokenizer pads on the left, as generation needs."""
    if example.policy is None:
        tokenizer = tiny_llama_tokenizer()
        config = tiny_llama_config(tokenizer)
        policy, ref_policy = AutoModelForCausalLM.from_config(config), AutoModelForCausalLM.from_config(config)
        value_config = tiny_llama_config(tokenizer)
        value_config.num_labels = 1
        value_model = AutoModelForSequenceClassification.from_config(value_config)
    else:
        tokenizer = AutoTokenizer.from_pretrained(example.policy)
        policy = AutoModelForCausalLM.from_pretrained(example.policy)
        ref_policy = AutoModelForCausalLM.from_pretrained(example.policy)
        value_model = AutoModelForSequenceClassification.from_pretrained(example.policy, num_labels=1)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    value_model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, policy, ref_policy, value_model


def main(argv: list[str] | None = None):
    parser = TrlParser((ExampleArguments, PPOConfig))
    parser.set_defaults(**CPU_DEFAULTS)
    example, args = parser.parse_args_and_config(argv)
    tokenizer, policy, ref_policy, value_model = load_models(example)
    problems = build_synthetic_datasets(n_train=example.num_problems, n_test=1)["prompts_train"]
    dataset = problems.map(lambda row: {"input_ids": tokenizer(row["prompt"])["input_ids"]})

    if example.reward_models:
        members = [RewardModelFunction(path, device=example.reward_device) for path in example.reward_models]
    else:
        members = [
            RewardModelFunction(*tiny_llama_reward_model(seed=1), name="tiny_llama_rm", device=example.reward_device),
            RewardModelFunction(*tiny_bert_reward_model(seed=2), name="tiny_bert_rm", device=example.reward_device),
        ]
    ensemble = RewardEnsemble(
        members + [AnswerCorrectnessReward()], aggregation=example.aggregation, normalization=example.normalization
    )
    reward_model = RewardFunctionModule(
        ensemble, tokenizer, query_columns=dataset.select_columns(["input_ids", "answer"])
    )

    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=dataset.select_columns(["input_ids"]),
    )
    attach_reward_metrics(trainer, reward_model)  # the ensemble's metrics in every PPO log entry
    trainer.train()
    for entry in trainer.state.log_history:
        members = {k: round(v, 4) for k, v in entry.items() if k.startswith(f"{ensemble.__name__}/")}
        if members:
            print(f"episode {entry['episode']}: score {entry['objective/scores']:.4f} {members}")
    return trainer


if __name__ == "__main__":
    main()
