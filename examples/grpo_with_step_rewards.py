"""GRPO with dense step rewards on arithmetic word problems: DeepSeekMath's process supervision.

Every step of every completion is rewarded, either by an exact rule (`--step_reward rule`: each `a op b = c` is
checked, operands must come from the problem or earlier steps, the final answer from the dataset) or by a process
reward model (`--step_reward prm`, with `--prm` a folder or Hub id; by default a tiny BERT PRM with random weights and
its own tokenizer). The step rewards are normalized over each GRPO group and every token gets the sum of those of the
steps ending at or after it, added to the outcome advantage of the answer check (weights
`--outcome_advantage_weight`, `--process_advantage_weight`).

On CPU with a tiny Llama policy built from a config, a few seconds:

    python examples/grpo_with_step_rewards.py

With real models (every ProcessGRPOConfig flag works, or put them in a YAML file passed with --config):

    python examples/grpo_with_step_rewards.py --policy Qwen/Qwen2.5-0.5B-Instruct --step_reward prm \
        --prm my-prm --max_steps 200 --per_device_train_batch_size 8 --num_generations 8 \
        --max_completion_length 256 --output_dir runs/grpo_steps --bf16 true --use_cpu false
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import TrlParser

from trl_rewards.data.synthetic import build_synthetic_datasets
from trl_rewards.rewards.model_rewards import ProcessRewardFunction
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
from trl_rewards.rewards.step_rewards import ArithmeticStepReward
from trl_rewards.testing import tiny_bert_token_classifier, tiny_llama_config, tiny_llama_tokenizer
from trl_rewards.trainers.process_grpo_config import ProcessGRPOConfig
from trl_rewards.trainers.process_grpo_trainer import ProcessGRPOTrainer

# Small enough for a CPU in seconds; every one is overridden by the matching flag.
CPU_DEFAULTS = dict(
    output_dir="runs/grpo_steps",
    per_device_train_batch_size=4,
    num_generations=4,
    max_completion_length=16,
    max_steps=2,
    logging_steps=1,
    report_to="none",
    save_strategy="no",
    use_cpu=True,
    bf16=False,
    activation_checkpointing=False,
)
STEP_REWARDS = ("rule", "prm")


@dataclass
class ExampleArguments:
    policy: str | None = field(
        default=None, metadata={"help": "Policy model (Hub id or folder); default: a tiny Llama built from a config."}
    )
    step_reward: str = field(
        default="rule", metadata={"help": "Where step rewards come from.", "choices": list(STEP_REWARDS)}
    )
    prm: str | None = field(
        default=None, metadata={"help": "PRM folder or Hub id for --step_reward prm; default: a tiny BERT PRM."}
    )
    step_separator: str = field(default="\n", metadata={"help": "What separates two steps of a completion."})
    num_problems: int = field(default=64, metadata={"help": "Synthetic training problems."})

    def __post_init__(self):
        if self.step_reward not in STEP_REWARDS:
            raise ValueError(f"step_reward must be one of {STEP_REWARDS}, got {self.step_reward!r}")
        if self.prm is not None and self.step_reward != "prm":
            raise ValueError("--prm is used only with --step_reward prm")


def build_step_reward(example: ExampleArguments):
    if example.step_reward == "rule":
        return ArithmeticStepReward(separator=example.step_separator)
    if example.prm is None:
        return ProcessRewardFunction(
            *tiny_bert_token_classifier(seed=3),
            name="tiny_prm",
            step_rewards=True,
            step_separator=example.step_separator,
        )
    return ProcessRewardFunction(example.prm, step_rewards=True, step_separator=example.step_separator)


def main(argv: list[str] | None = None):
    parser = TrlParser((ExampleArguments, ProcessGRPOConfig))
    parser.set_defaults(**CPU_DEFAULTS)
    example, args = parser.parse_args_and_config(argv)
    if example.policy is None:
        tokenizer = tiny_llama_tokenizer()
        policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    else:
        tokenizer = AutoTokenizer.from_pretrained(example.policy)
        policy = AutoModelForCausalLM.from_pretrained(example.policy)
    prompts = build_synthetic_datasets(n_train=example.num_problems, n_test=1)["prompts_train"]
    step_reward = build_step_reward(example)
    trainer = ProcessGRPOTrainer(
        model=policy,
        reward_funcs=AnswerCorrectnessReward(),
        step_reward_funcs=step_reward,
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
    )
    trainer.train()
    for entry in trainer.state.log_history:
        steps = {k: round(v, 4) for k, v in entry.items() if k.startswith("steps/")}
        if steps:
            print(f"step {entry['step']}: reward {entry.get('reward', float('nan')):.4f} {steps}")
    return trainer


if __name__ == "__main__":
    main()
