"""The demo's GRPO stage: a policy trained with a reward ensemble of the demo's reward models and the answer check."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from .demo_stages import (
    EXAMPLE_PROBLEM,
    EXAMPLE_SOLUTION,
    INSTRUCTION,
    StageProgress,
    load_policy,
    plain_chat_template,
    quiet,
    scoring_device,
)


def grpo_prompts(dataset, tokenizer):
    """
    GRPO rows: a text `prompt` becomes a chat when the policy has a chat template (the instruction with a worked
    example, its solution as the assistant's turn, then the question as the next user turn), else the same contents
    as one text; conversational prompts are kept. Other columns (`answer`) are kept.
    """
    if "prompt" not in dataset.column_names:
        raise ValueError(f"the GRPO prompts need a 'prompt' column; columns are {dataset.column_names}")
    chat = bool(getattr(tokenizer, "chat_template", None))

    def convert(row):
        prompt = row["prompt"]
        if not isinstance(prompt, str):
            return {"prompt": prompt}
        question = prompt.strip()
        if not chat:
            return {"prompt": f"{INSTRUCTION}\n{EXAMPLE_PROBLEM}\n{EXAMPLE_SOLUTION}\n\n{question}\n"}
        return {
            "prompt": [
                {"role": "user", "content": f"{INSTRUCTION}\n{EXAMPLE_PROBLEM}"},
                {"role": "assistant", "content": EXAMPLE_SOLUTION},
                {"role": "user", "content": question},
            ]
        }

    return dataset.map(convert)


def build_ensemble(args, bt_path: str, prm_path: str, has_answers: bool, bt_text_rows: bool):
    """
    The `RewardEnsemble` of the BT model, the PRM and (when the prompts have answers) the answer check.

    `bt_text_rows`: the BT model was trained on text rows, so the chats of GRPO are scored in that layout
    ([`plain_chat_template`]) rather than with its tokenizer's own template; otherwise the plain template is used only
    when the tokenizer has none. The PRM reward function joins a chat's contents with newlines itself.
    """
    from transformers import AutoTokenizer

    from ..rewards.ensemble import RewardEnsemble
    from ..rewards.model_rewards import ProcessRewardFunction, RewardModelFunction
    from ..rewards.rule_rewards import AnswerCorrectnessReward

    device = scoring_device(args)
    bt_tokenizer = AutoTokenizer.from_pretrained(bt_path)
    if bt_text_rows or not getattr(bt_tokenizer, "chat_template", None):
        bt_tokenizer.chat_template = plain_chat_template(bt_tokenizer)
    members = [
        RewardModelFunction(
            bt_path, tokenizer=bt_tokenizer, name="bt", device=device, max_length=args.size("max_length")
        ),
        ProcessRewardFunction(
            prm_path, name="prm", device=device, aggregation=args.prm_aggregation, max_length=args.size("max_length")
        ),
    ]
    if has_answers:
        members.append(AnswerCorrectnessReward())
    return RewardEnsemble(
        members,
        aggregation=args.aggregation,
        normalization=args.normalization,
        num_generations=args.num_generations if args.normalization == "group" else None,
        name="ensemble",
    )


def run_grpo(args, prompts, bt_path: str, prm_path: str, output_dir: str, bt_text_rows: bool) -> dict[str, Any]:
    """
    A short GRPO run of the policy against the ensemble. GRPO's own `scale_rewards` is `"none"`: the ensemble has
    z-scored each member already, and dividing the combined reward by its std again would normalize twice (checked by
    `RewardEnsemble.check_trainer_args`). Returns the per-step history of the members' rewards.
    """
    from trl import GRPOConfig, GRPOTrainer

    from ..evaluation.plots import plot_reward_trajectory

    policy, tokenizer = load_policy(args)
    dataset = grpo_prompts(prompts, tokenizer)
    ensemble = build_ensemble(args, bt_path, prm_path, "answer" in dataset.column_names, bt_text_rows)
    peft_config = None
    if args.policy_lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=args.policy_lora_r, lora_alpha=2 * args.policy_lora_r, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    learning_rate = args.grpo_learning_rate
    if learning_rate is None:
        learning_rate = 1e-4 if peft_config is not None else 1e-5
    config = GRPOConfig(
        output_dir=output_dir,
        max_steps=args.size("grpo_steps"),
        per_device_train_batch_size=args.num_generations * args.prompts_per_step,
        num_generations=args.num_generations,
        max_completion_length=args.size("max_completion_length"),
        temperature=args.grpo_temperature,
        learning_rate=learning_rate,
        scale_rewards="none",
        beta=0.0,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=args.use_cpu,
        bf16=False,
        activation_checkpointing=False,
        seed=args.seed,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    warnings = ensemble.check_trainer_args(config)
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=ensemble,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    members = list(ensemble.members)
    keys = [f"ensemble/{m}/raw_mean" for m in members] + ["ensemble/disagreement", "completions/mean_length"]
    quiet(trainer, StageProgress("grpo", keys, labels=[*members, "disagreement", "length"]))
    trainer.train()
    history = []
    for entry in trainer.state.log_history:
        if f"ensemble/{members[0]}/raw_mean" in entry:
            record = {"step": entry["step"], "reward": entry.get("reward"), "loss": entry.get("loss")}
            for member in members:
                for stat in ("raw_mean", "normalized_mean"):
                    record[f"{member}/{stat}"] = entry.get(f"ensemble/{member}/{stat}")
            record["disagreement"] = entry.get("ensemble/disagreement")
            record["completion_length"] = entry.get("completions/mean_length")
            record["clipped_ratio"] = entry.get("completions/clipped_ratio")
            history.append(record)
    plot = plot_reward_trajectory(
        history,
        os.path.join(output_dir, "reward_trajectory.png"),
        keys=[f"{m}/raw_mean" for m in members],
        title=f"GRPO: mean raw reward of each ensemble member ({args.normalization} z-score before averaging)",
    )
    policy_dir = os.path.join(output_dir, "policy")
    trainer.save_model(policy_dir)
    clipped = [r["clipped_ratio"] for r in history if isinstance(r.get("clipped_ratio"), int | float)]
    return {
        "members": members,
        "max_completion_length": config.max_completion_length,
        "completions_per_step": config.per_device_train_batch_size,
        "truncated_share": sum(clipped) / len(clipped) if clipped else None,
        "reward_slopes": {member: reward_slope(history, f"{member}/raw_mean") for member in members},
        "normalization": args.normalization,
        "aggregation": args.aggregation,
        "double_normalization_warnings": warnings,
        "lora_r": args.policy_lora_r,
        "learning_rate": learning_rate,
        "steps": trainer.state.global_step,
        "history": history,
        "plot": plot,
        "policy": policy_dir,
    }


def trajectory_line(history: Sequence[dict[str, Any]], key: str) -> str:
    """`first -> last (mean of the last half)` of one metric of the GRPO history, for the summary."""
    values = [record[key] for record in history if isinstance(record.get(key), int | float)]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    late = values[len(values) // 2 :]
    return f"{values[0]:.3f} -> {values[-1]:.3f} (last half mean {sum(late) / len(late):.3f})"


def reward_slope(history: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """
    Least-squares slope of one metric over the GRPO steps with its 95% interval (`slope +- t * stderr`, Student t with
    `n - 2` degrees of freedom; `scipy.stats.linregress`): a trend with its uncertainty, not a claim of improvement.
    `None` with fewer than 3 finite points.
    """
    from scipy import stats

    points = [(r["step"], r[key]) for r in history if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    if len(points) < 3:
        return None
    steps, values = zip(*points, strict=True)
    if len(set(values)) == 1:  # a constant (e.g. an answer check that never passes): no trend, no uncertainty
        slope, half = 0.0, 0.0
    else:
        fit = stats.linregress(steps, values)
        slope, half = float(fit.slope), float(stats.t.ppf(0.975, len(points) - 2) * fit.stderr)
    return {
        "slope": slope,
        "slope_ci": [slope - half, slope + half],
        "first": float(values[0]),
        "last": float(values[-1]),
        "n": len(points),
    }
