"""Process reward model on PRM800K phase 1, decoder (SmolLM2-135M) vs encoder (MiniLM) base (issue #13, item 4).

Data: the PRM800K phase-1 stepwise-critic parquet (each row: a problem, the accepted steps so far, one human-rated
next step; rating >= 0 counts as good), read with `data.stepwise.from_prm800k_stepwise_critic` for its first
`--max_problems` problems. The problems are shuffled (`--split_seed`) and split into three disjoint sets: **test**
(20%, the only split reported), **validation** (`--validation_problems`, used for every choice) and training; rows
are then sampled from each (`--train_rows`, `--validation_rows`, `--test_rows`). No problem is in two splits.

PRM: `ProcessRewardTrainer`, classifier style, trained and evaluated on the last (human-rated) step of each row only
(`train_on_last_step_only`, `eval_on_last_step_only`: a row's earlier steps are good by construction and repeat across
rows). `--base minilm`: the MiniLM encoder, bottom `--freeze_layers` layers frozen, `[SEP]` after each step;
`--base smollm2`: the SmolLM2-135M-Instruct decoder with LoRA r=`--lora_r` on its attention and MLP projections and
the token head trained fully, `"\\n"` after each step. One PRM per rate of `--learning_rates`; the one with the best
validation AUROC of P(bad) is kept and scores the test rows, once.

`--summarize` reports per base, on the test rows: step bad-F1 (bad = positive) at P(good) < 0.5 and at the threshold
that maximizes F1 on validation, and the step AUROC of P(bad), each with a 95% bootstrap interval that resamples test
*problems* (rows of one problem are not independent); beside the baselines "every step bad" and "step position alone"
(the number of earlier steps as the score, its direction and F1 threshold chosen on validation).

    P="--max_problems 300 --validation_problems 40 --train_rows 96 --validation_rows 60 --test_rows 150"
    nice -n 10 python benchmarks/prm_real.py --base minilm --learning_rates 1e-4 $P &   # one process per rate, or
    nice -n 10 python benchmarks/prm_real.py --base minilm --learning_rates 3e-4 $P &   # one process for the grid
    nice -n 10 python benchmarks/prm_real.py --base smollm2 --lora_layers 8 --learning_rates 3e-4 $P &
    nice -n 10 python benchmarks/prm_real.py --base smollm2 --lora_layers 8 --learning_rates 1e-3 $P &
    wait; python benchmarks/prm_real.py --summarize
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orm_prm_real import PRM800K, _common, add_base_arguments, load_base  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summarize", action="store_true", help="report the test split of every base run")
    parser.add_argument("--model", default=None, help="base folder (default: the --base package's)")
    add_base_arguments(parser)
    parser.add_argument("--output_dir", default=str(REPO / "runs" / "prm_real"))
    parser.add_argument("--split_seed", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_problems", type=int, default=300, help="the first N problems of the parquet")
    parser.add_argument("--validation_problems", type=int, default=40)
    parser.add_argument("--train_rows", type=int, default=400)
    parser.add_argument("--validation_rows", type=int, default=150)
    parser.add_argument("--test_rows", type=int, default=300)
    parser.add_argument("--freeze_layers", type=int, default=4, help="minilm: bottom encoder layers kept frozen")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rates", type=float, nargs="+", default=[1e-4])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def splits(args):
    """`(train, validation, test)` row datasets from disjoint problem sets."""
    from trl_rewards.data.stepwise import from_prm800k_stepwise_critic

    rows = from_prm800k_stepwise_critic(PRM800K, max_problems=args.max_problems)
    problems = sorted(set(rows["prompt"]))
    random.Random(args.split_seed).shuffle(problems)
    n_test = max(1, round(0.2 * len(problems)))
    test_problems = set(problems[:n_test])
    validation_problems = set(problems[n_test : n_test + args.validation_problems])
    rng = random.Random(args.seed)
    out = []
    for name, size in (("train", args.train_rows), ("validation", args.validation_rows), ("test", args.test_rows)):
        if name == "test":
            index = [i for i, p in enumerate(rows["prompt"]) if p in test_problems]
        elif name == "validation":
            index = [i for i, p in enumerate(rows["prompt"]) if p in validation_problems]
        else:
            index = [i for i, p in enumerate(rows["prompt"]) if p not in test_problems | validation_problems]
        out.append(rows.select(sorted(rng.sample(index, min(size, len(index))))))
    sets = [set(d["prompt"]) for d in out]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), "splits share a problem"
    return tuple(out)


def _last_step(trainer, dataset) -> tuple[list[float], list[bool]]:
    """P(good) of each row's rated (last) step and its label, in row order."""
    probs = trainer.predict(dataset).predictions[:, 0].tolist()
    labels = [max(row) == 1 for row in dataset["labels"]]
    return probs, labels


def _describe(raw, probs, labels) -> dict:
    return {
        "problem": list(raw["prompt"]),
        "position": [len(steps) - 1 for steps in raw["completions"]],
        "p_good": probs,
        "good": labels,
    }


def run_base(args) -> None:
    """Trains one PRM per learning rate, keeps the best by validation AUROC, scores the test rows, writes JSON."""
    import torch
    from transformers import set_seed

    from trl_rewards.evaluation.verifier_metrics import binary_auroc
    from trl_rewards.scripts.demo_stages import prm_step_separator
    from trl_rewards.trainers.prm_config import ProcessRewardConfig
    from trl_rewards.trainers.prm_trainer import ProcessRewardTrainer

    torch.set_num_threads(args.threads)
    start = time.time()
    train, validation, test = splits(args)
    grid, best = [], None
    for learning_rate in args.learning_rates:
        tick = time.time()
        set_seed(args.seed)
        model, tokenizer, peft_config = load_base(args, "token")
        config = ProcessRewardConfig(
            **_common(args, f"{args.output_dir}/{args.base}/lr{learning_rate:g}", args.epochs, learning_rate),
            model_style="classifier",
            step_separator=tokenizer.sep_token if args.base == "minilm" else prm_step_separator(tokenizer),
            max_length=args.max_length,
            too_long="truncate",
            train_on_last_step_only=True,
            eval_on_last_step_only=True,
        )
        trainer = ProcessRewardTrainer(
            model=model.train(),
            args=config,
            train_dataset=train,
            eval_dataset={"validation": validation, "test": test},
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        trainer.train()
        train_seconds = time.time() - tick
        probs, labels = _last_step(trainer, trainer.eval_dataset["validation"])
        auroc = binary_auroc([-p for p in probs], [not y for y in labels])
        grid.append(
            {
                "learning_rate": learning_rate,
                "train_seconds": train_seconds,
                "seconds": time.time() - tick,
                "val_auroc": auroc,
                "length_reports": {k: r.message(k) for k, r in trainer.length_reports.items()},
            }
        )
        print(f"{args.base} lr {learning_rate:g}: {grid[-1]}", flush=True)
        if best is None or auroc > best[0]:
            best = (auroc, learning_rate, trainer, _describe(validation, probs, labels))
        del trainer, model
    _, chosen_lr, trainer, validation_rows = best
    probs, labels = _last_step(trainer, trainer.eval_dataset["test"])
    out = {
        "base": args.base,
        "chosen_learning_rate": chosen_lr,
        "grid": grid,
        "n_train_rows": len(train),
        "n_problems": {"train": len(set(train["prompt"])), "validation": len(set(validation["prompt"]))},
        "max_length": args.max_length,
        "lora": None if args.base == "minilm" else {"r": args.lora_r, "layers": args.lora_layers or "all"},
        "validation": validation_rows,
        "test": _describe(test, probs, labels),
        "seconds": time.time() - start,
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "command": "python benchmarks/prm_real.py " + shlex.join(sys.argv[1:]),
    }
    os.makedirs(args.output_dir, exist_ok=True)
    name = f"{args.base}_lr" + "_".join(f"{rate:g}" for rate in args.learning_rates)  # one rate per process is fine
    with open(os.path.join(args.output_dir, f"{name}.json"), "w") as f:
        json.dump(out, f)
    print(f"{args.base}: chose lr {chosen_lr:g} on validation; total {out['seconds']:.0f} s")


def bad_f1(predicted_bad, good) -> float:
    """Step F1 on bad steps of a hard prediction, through `step_metrics` (a predicted-bad step gets P(good) 0)."""
    from trl_rewards.evaluation.verifier_metrics import step_metrics

    return step_metrics([[0.0 if b else 1.0] for b in predicted_bad], [[bool(y)] for y in good])["bad_f1"]


def best_cut(bad_scores, good) -> float:
    """The cut `c` that maximizes the bad-F1 of `bad_score >= c` (chosen on validation)."""
    cuts = sorted(set(bad_scores))
    return max(cuts, key=lambda c: (bad_f1([s >= c for s in bad_scores], good), -c))


def _problem_bootstrap(metric, rows: dict, n: int, seed: int) -> list[float]:
    """95% percentile interval of `metric(row_indices)` over resamples of the test problems."""
    import numpy as np

    by_problem: dict[str, list[int]] = {}
    for i, problem in enumerate(rows["problem"]):
        by_problem.setdefault(problem, []).append(i)
    groups = list(by_problem.values())
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        picked = rng.integers(0, len(groups), len(groups))
        values.append(metric([i for g in picked for i in groups[g]]))
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values.size else [None, None]


def _rules(result: dict) -> dict:
    """Per rule (the PRM, step position): its bad score of every test row, its F1 cut and direction (validation)."""
    rules = {}
    for name, key in (("prm", "p_good"), ("position", "position")):
        val, test = result["validation"], result["test"]
        if key == "p_good":
            sign = 1.0
            val_scores = [1.0 - p for p in val[key]]
            test_scores = [1.0 - p for p in test[key]]
        else:  # the direction of the position rule is chosen on validation
            from trl_rewards.evaluation.verifier_metrics import binary_auroc

            bad = [not y for y in val["good"]]
            sign = 1.0 if binary_auroc(val[key], bad) >= 0.5 else -1.0
            val_scores = [sign * p for p in val[key]]
            test_scores = [sign * p for p in test[key]]
        rules[name] = {"test": test_scores, "cut": best_cut(val_scores, val["good"]), "sign": sign}
    return rules


def _val_auroc(result: dict) -> float:
    return next(p["val_auroc"] for p in result["grid"] if p["learning_rate"] == result["chosen_learning_rate"])


def summarize(args) -> None:
    from trl_rewards.evaluation.verifier_metrics import binary_auroc

    results, grids = {}, []
    for path in sorted(glob.glob(os.path.join(args.output_dir, "*.json"))):
        with open(path) as f:
            result = json.load(f)
        base = result.get("base")
        best = results.get(base)
        # The choice reads validation only; a tie goes to the lower learning rate.
        key = (_val_auroc(result), -result["chosen_learning_rate"])
        if base and (best is None or key > (_val_auroc(best), -best["chosen_learning_rate"])):
            results[base] = result
        if base:
            grids.extend(
                (base, point, point["learning_rate"] == result["chosen_learning_rate"]) for point in result["grid"]
            )
    if not results:
        raise SystemExit(f"no base results in {args.output_dir}: run the bases first (see --help)")
    print("```")
    for r in results.values():
        print(f"nice -n 10 {r['command']}")
    print("python benchmarks/prm_real.py " + shlex.join(sys.argv[1:]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, load average {load:.1f} at summary")
    print("```\n")
    print("Validation grid (the only figures the choice reads):\n")
    print("| base | lr | train rows | train s | val AUROC of P(bad) | chosen |")
    print("|---|---|---|---|---|---|")
    for base, point, best_in_file in grids:
        mark = "yes" if best_in_file and point["learning_rate"] == results[base]["chosen_learning_rate"] else ""
        rows = results[base]["n_train_rows"]
        print(f"| {base} | {point['learning_rate']:g} | {rows} | {point['train_seconds']:.0f} | "
              f"{point['val_auroc']:.3f} | {mark} |")  # fmt: skip
    first = next(iter(results.values()))["test"]
    good = first["good"]
    bad = [not y for y in good]
    n_bad = sum(bad)
    print(
        f"\nTest: {len(good)} rated steps from {len(set(first['problem']))} problems, {n_bad} bad "
        f"({n_bad / len(good):.3f}); 95% intervals resample test problems:\n"
    )
    print("| rule | bad-F1 at P(good) < 0.5 | bad-F1 at the validation threshold | step AUROC of P(bad) |")
    print("|---|---|---|---|")

    def cell(metric, rows) -> str:
        value = metric(list(range(len(rows["good"]))))
        low, high = _problem_bootstrap(metric, rows, args.bootstrap, args.seed)
        return f"{value:.3f} [{low:.3f}, {high:.3f}]" if low is not None else f"{value:.3f}"

    for base, r in results.items():
        test = r["test"]
        if test["good"] != good or test["problem"] != first["problem"]:
            raise SystemExit(f"{base}: its test rows differ from the other base's; run both with the same split")
        rule = _rules(r)["prm"]
        at_half = cell(lambda idx, t=test: bad_f1([t["p_good"][i] < 0.5 for i in idx], [good[i] for i in idx]), test)
        at_cut = cell(
            lambda idx, s=rule: bad_f1([s["test"][i] >= s["cut"] for i in idx], [good[i] for i in idx]), test
        )
        auroc = cell(lambda idx, s=rule: binary_auroc([s["test"][i] for i in idx], [bad[i] for i in idx]), test)
        print(f"| PRM, {base} (lr {r['chosen_learning_rate']:g}) | {at_half} | {at_cut} | {auroc} |")
    every = cell(lambda idx: bad_f1([True] * len(idx), [good[i] for i in idx]), first)
    print(f"| every step bad | {every} | {every} | 0.500 |")
    rule = _rules(next(iter(results.values())))["position"]
    direction = "later" if rule["sign"] > 0 else "earlier"
    at_cut = cell(lambda idx: bad_f1([rule["test"][i] >= rule["cut"] for i in idx], [good[i] for i in idx]), first)
    auroc = cell(lambda idx: binary_auroc([rule["test"][i] for i in idx], [bad[i] for i in idx]), first)
    print(f"| step position alone ({direction} = worse, from validation) | - | {at_cut} | {auroc} |")


def main(argv=None) -> None:
    args = parse_args(argv)
    if not PRM800K.is_file():
        print(f"skipped: {PRM800K} is absent (needs ../shared/data)")
        return
    if args.summarize:
        summarize(args)
    else:
        run_base(args)


if __name__ == "__main__":
    main()
