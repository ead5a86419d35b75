"""Worker for the multi-process tests: trains a Bradley-Terry (`--kind bt`) or process reward model (`--kind prm`,
token-classifier style) from a saved tiny model, logs the loss of every step, saves the model, then every rank reloads
it in plain transformers and scores fixed texts (for the PRM: the step probabilities of fixed solutions).

Launched by tests/distributed/test_deepspeed.py, either as a plain process (the single-process reference) or with
`accelerate launch --num_processes 2 --use_deepspeed --deepspeed_config_file ...`.
"""

import argparse
import json
import os

import torch
import torch.distributed as dist
from datasets import Dataset

TEXTS = ["Q: 2+2? 4", "Q: capital of France? Paris", "Tell me a joke. No.", "x" * 40]


SOLUTIONS = [("Q: 2+2? ", ["2+2=4", "so 4"]), ("Q: 3*3? ", ["3*3=6", "so 6", "done"]), ("Q: 1? ", ["1"])]


def steps(n: int) -> Dataset:
    """Rows with 1 to 3 steps, so the processes see different numbers of labelled steps in a global batch."""
    rows = []
    for i in range(n):
        completions = [f"{i}+1={i + 1}", f"x{i % 3}", "done"][: 1 + i % 3]
        labels = [True, i % 2 == 0, i % 4 == 0][: len(completions)]
        rows.append({"prompt": f"Q{i}: ", "completions": completions, "labels": labels})
    return Dataset.from_list(rows)


def pairs(n: int) -> Dataset:
    rows = [
        {"prompt": f"Q{i}: ", "chosen": "good answer " * (1 + i % 3), "rejected": "bad " * (1 + i % 5)}
        for i in range(n)
    ]
    return Dataset.from_list(rows)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["bt", "prm"], default="bt")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--n_rows", type=int, default=32)
    parser.add_argument("--deepspeed", default=None, help="DeepSpeed JSON config (the TrainingArguments way)")
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from trl_rewards.inference.sequence_scoring import RewardScorer
    from trl_rewards.inference.step_scoring import ProcessRewardScorer
    from trl_rewards.trainers.bt_config import BradleyTerryConfig
    from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer
    from trl_rewards.trainers.prm_config import ProcessRewardConfig
    from trl_rewards.trainers.prm_trainer import ProcessRewardTrainer

    common = dict(
        output_dir=os.path.join(args.out, "run"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        bf16=False,
        gradient_checkpointing=False,
        train_sampling_strategy="sequential",
        dataloader_pin_memory=False,
        disable_tqdm=True,
        deepspeed=args.deepspeed,
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.kind == "bt":
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
        trainer = BradleyTerryTrainer(
            model=model,
            args=BradleyTerryConfig(**common, store_reward_stats=True),
            train_dataset=pairs(args.n_rows),
            eval_dataset=pairs(8),
            processing_class=tokenizer,
        )
    else:
        model = AutoModelForTokenClassification.from_pretrained(args.model, num_labels=2)
        trainer = ProcessRewardTrainer(
            model=model,
            args=ProcessRewardConfig(**common),
            train_dataset=steps(args.n_rows),
            processing_class=tokenizer,
        )
    trainer.train()
    saved = os.path.join(args.out, "model")
    trainer.save_model(saved)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if dist.is_initialized():
        dist.barrier()
    # The whole model on this rank even though ZeRO-3 is active.
    if args.kind == "bt":
        scorer = RewardScorer.from_pretrained(saved)
        scores = scorer.score([None] * len(TEXTS), TEXTS)
        reward_mean = scorer.model.config.reward_mean
    else:
        scorer = ProcessRewardScorer.from_pretrained(saved)
        scores = scorer.step_probabilities(*zip(*SOLUTIONS, strict=True))
        reward_mean = None
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "losses": losses,
                "scores": scores,
                "reward_mean": reward_mean,
                "world_size": dist.get_world_size() if dist.is_initialized() else 1,
                "deepspeed": trainer.is_deepspeed_enabled,
            },
            f,
        )
    torch.set_num_threads(1)


if __name__ == "__main__":
    main()
