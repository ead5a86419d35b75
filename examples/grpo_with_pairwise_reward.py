"""GRPO rewarded by a pairwise preference model: each completion's reward is its win probability.

`PairwiseRewardFunction` reads the prompt and two responses and returns P(completion ≻ other), averaged over both
orders. The other response is a reference solution from a dataset column (`--reference reference`, the default here:
the synthetic problems' correct worked solution), or the best completion of the group (`--reference best_of_group`),
or every other completion of the group (`--reference group_mean`).

On CPU with tiny models built from configs (a Llama-style policy, a BERT-style pairwise model, random weights), a few
seconds:

    python examples/grpo_with_pairwise_reward.py

With real models (a pairwise model trained by `trl-rewards train pairwise --config examples/pairwise_hh_rlhf.yaml`;
every GRPOConfig flag works):

    python examples/grpo_with_pairwise_reward.py --policy Qwen/Qwen2.5-0.5B-Instruct --pairwise_model runs/pair-pm \
        --reference best_of_group --num_generations 8 --per_device_train_batch_size 8 --max_steps 200 \
        --output_dir runs/grpo_pairwise --bf16 true --use_cpu false
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, TrlParser

from trl_rewards.data.synthetic import build_synthetic_datasets
from trl_rewards.rewards.pairwise_rewards import PairwiseRewardFunction
from trl_rewards.testing import tiny_bert_reward_model, tiny_llama_config, tiny_llama_tokenizer

# Small enough for a CPU in seconds; every one is overridden by the matching flag.
CPU_DEFAULTS = dict(
    output_dir="runs/grpo_pairwise",
    per_device_train_batch_size=4,
    num_generations=2,
    max_completion_length=16,
    max_steps=2,
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
    pairwise_model: str | None = field(
        default=None, metadata={"help": "Pairwise preference model folder or Hub id; default: a tiny BERT."}
    )
    reference: str = field(
        default="reference",
        metadata={
            "help": "A dataset column with a reference response ('reference'), 'best_of_group' or 'group_mean'."
        },
    )
    reward_device: str | None = field(default=None, metadata={"help": "Device of the pairwise model."})
    num_problems: int = field(default=64, metadata={"help": "Synthetic training problems."})


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
    # prompts with a reference solution (the correct worked solution of each synthetic problem)
    pairs = build_synthetic_datasets(n_train=example.num_problems, n_test=1)["preference_train"]
    prompts = pairs.map(lambda row: {"reference": row["chosen"]}, remove_columns=["chosen", "rejected"])
    group = example.reference in ("best_of_group", "group_mean")
    source = (example.pairwise_model,) if example.pairwise_model else tiny_bert_reward_model(seed=2)
    reward = PairwiseRewardFunction(
        *source,  # a folder (the tokenizer is loaded from it), or a loaded (model, tokenizer)
        reference=example.reference,
        num_generations=args.num_generations if group else None,
        name="pairwise",
        device=example.reward_device,
    )
    trainer = GRPOTrainer(
        model=policy, reward_funcs=reward, args=args, train_dataset=prompts, processing_class=tokenizer
    )
    trainer.train()
    for entry in trainer.state.log_history:
        if "rewards/pairwise/mean" in entry:
            print(f"step {entry['step']}: mean win probability {entry['rewards/pairwise/mean']:.4f}")
    return trainer


if __name__ == "__main__":
    main()
