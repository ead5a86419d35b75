"""Does a verifier-weighted vote beat the plain majority vote on GSM8K? (issue #13, item 3 and its acceptance).

Data: `gsm8k-verifier/model_solutions.train.jsonl` (1,000 questions x 4 labelled model solutions), split by question
into three disjoint sets (`data.outcome.split_by_question`, `--split_seed`): **test** (20%, the only split reported),
**validation** (100 questions, used to choose between the ORM settings) and the training pool, from which
`--train_questions` questions train the ORM. Nothing about the test questions is looked at before the choice.

Verifier: `OutcomeRewardTrainer` on `--base minilm` (the MiniLM encoder, bottom `--freeze_layers` layers frozen, the
rest trained fully) or `--base smollm2` (the SmolLM2-135M-Instruct decoder, LoRA r=`--lora_r` on the attention and MLP
projections, score head trained fully), length-grouped batches, `--epochs`. Each arm (base x `--supervision`) runs in
its own process: it trains one ORM per rate of `--learning_rates`, keeps the one with the best validation BoN@4, and
scores the test questions with that one only. `--summarize` picks, per base, the supervision arm with the higher
validation BoN@4 and reports, on the test questions: pass@4, maj@4, BoN@4 and the verifier-weighted vote (weights
σ(logit), `best_of_n_report(score_kind="logit")`), each with its 95% bootstrap interval over questions, and paired
differences (weighted vote minus majority vote; decoder minus encoder).

    nice -n 10 python benchmarks/verifier_vote.py --supervision all_tokens &
    nice -n 10 python benchmarks/verifier_vote.py --supervision final_token &
    wait; python benchmarks/verifier_vote.py --summarize

Decoder vs encoder (issue #13 item 4; the sizes that fit a loaded 2-core CPU, see docs/benchmarks_orm_prm.md), one
process per grid point, then `--summarize` (it chooses each base's rate on validation):

    Q="--supervision all_tokens --train_questions 32 --validation_questions 30 --test_questions 80 --max_length 256"
    nice -n 10 python benchmarks/verifier_vote.py --base smollm2 --lora_layers 8 --learning_rates 3e-4 $Q &
    nice -n 10 python benchmarks/verifier_vote.py --base smollm2 --lora_layers 8 --learning_rates 1e-3 $Q &
    nice -n 10 python benchmarks/verifier_vote.py --base minilm --learning_rates 1e-4 $Q &
    nice -n 10 python benchmarks/verifier_vote.py --base minilm --learning_rates 3e-4 $Q &
    wait; python benchmarks/verifier_vote.py --summarize
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orm_prm_real import GSM8K, _common, add_base_arguments, load_base  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARMS = ("all_tokens", "final_token")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supervision", choices=ARMS, help="train and score one arm")
    parser.add_argument("--summarize", action="store_true", help="choose on validation, report the test split")
    parser.add_argument("--model", default=None, help="base folder (default: the --base package's)")
    add_base_arguments(parser)
    parser.add_argument("--output_dir", default=str(REPO / "runs" / "verifier_vote"))
    parser.add_argument("--split_seed", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_questions", type=int, default=400)
    parser.add_argument("--validation_questions", type=int, default=100)
    parser.add_argument(
        "--test_questions", type=int, default=0, help="score a seeded subset of the 200 test questions (0: all)"
    )
    parser.add_argument("--freeze_layers", type=int, default=4, help="minilm: bottom encoder layers kept frozen")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--learning_rates",
        type=float,
        nargs="+",
        default=[2e-4],
        help="the grid: one ORM per rate, the one with the best validation BoN@4 is scored on the test split",
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max_length", type=int, default=224)
    parser.add_argument("--score_batch_size", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def splits(args):
    from trl_rewards.data.outcome import load_gsm8k_verifier, split_by_question

    rows = load_gsm8k_verifier(GSM8K)
    pool, test = split_by_question(rows, test_size=0.2, seed=args.split_seed)
    n_pool = len(set(pool["question_id"]))
    pool, validation = split_by_question(pool, test_size=args.validation_questions / n_pool, seed=args.split_seed)
    questions = sorted(set(pool["question_id"]))
    keep = set(random.Random(args.seed).sample(questions, min(args.train_questions, len(questions))))
    train = pool.filter(lambda row: row["question_id"] in keep)
    if args.test_questions:
        questions = sorted(set(test["question_id"]))
        keep_test = set(random.Random(args.seed).sample(questions, min(args.test_questions, len(questions))))
        test = test.filter(lambda row: row["question_id"] in keep_test)
    sets = [set(d["question_id"]) for d in (train, validation, test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), "splits share a question"
    return train, validation, test


def grouped(dataset, scores) -> dict:
    from trl_rewards.data.outcome import extract_numeric_answer

    by_question = defaultdict(lambda: {"answers": [], "scores": []})
    for row, score in zip(dataset, scores, strict=True):
        group = by_question[row["question_id"]]
        group["gold"] = row["gold_answer"]
        group["answers"].append(extract_numeric_answer(row["completion"]))
        group["scores"].append(float(score))
    return {str(q): by_question[q] for q in sorted(by_question)}


def arm_name(args) -> str:
    """`<base>_<supervision>_lr<rates>`: several processes may share a grid, one rate each."""
    return f"{args.base}_{args.supervision}_lr" + "_".join(f"{rate:g}" for rate in args.learning_rates)


def run_arm(args) -> None:
    """Trains one ORM per learning rate, keeps the one with the best validation BoN@4 (then weighted vote), scores
    the test split with it only, and writes `<base>_<supervision>.json`."""
    import torch
    from transformers import set_seed

    from trl_rewards.evaluation.verifier_metrics import outcome_metrics
    from trl_rewards.inference.sequence_scoring import RewardScorer
    from trl_rewards.trainers.orm_config import OutcomeRewardConfig
    from trl_rewards.trainers.orm_trainer import OutcomeRewardTrainer

    torch.set_num_threads(args.threads)
    start = time.time()
    train, validation, test = splits(args)
    grid, best = [], None
    for learning_rate in args.learning_rates:
        tick = time.time()
        set_seed(args.seed)  # the same head initialization and batch order for every rate
        model, tokenizer, peft_config = load_base(args, "sequence")
        config = OutcomeRewardConfig(
            **_common(args, f"{args.output_dir}/{arm_name(args)}/lr{learning_rate:g}", args.epochs, learning_rate),
            max_length=args.max_length,
            too_long="truncate",
            supervision=args.supervision,
        )
        trainer = OutcomeRewardTrainer(
            model=model.train(),
            args=config,
            train_dataset=train,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        trainer.train()
        train_seconds = time.time() - tick
        scorer = RewardScorer(
            trainer.model.eval(), tokenizer, batch_size=args.score_batch_size, max_length=args.max_length
        )
        groups = grouped(validation, scorer.score(validation["prompt"], validation["completion"]))
        r = report(groups, 0, args.seed)
        grid.append(
            {
                "learning_rate": learning_rate,
                "train_seconds": train_seconds,
                "seconds": time.time() - tick,
                "n_train_truncated": trainer.length_reports["train"].n_too_long,
                "val_bon": r["bon@n"],
                "val_weighted_vote": r["weighted_vote@n"],
                "val_maj": r["maj@n"],
            }
        )
        print(f"{arm_name(args)} lr {learning_rate:g}: {grid[-1]}", flush=True)
        if best is None or (r["bon@n"], r["weighted_vote@n"]) > best[0]:
            best = ((r["bon@n"], r["weighted_vote@n"]), learning_rate, scorer, groups)
        del trainer, model, scorer
    _, chosen_lr, scorer, validation_groups = best
    test_scores = scorer.score(test["prompt"], test["completion"])
    out = {
        "base": args.base,
        "supervision": args.supervision,
        "chosen_learning_rate": chosen_lr,
        "grid": grid,
        "n_train_rows": len(train),
        "n_train_questions": len(set(train["question_id"])),
        "max_length": args.max_length,
        "lora": None if args.base == "minilm" else {"r": args.lora_r, "layers": args.lora_layers or "all"},
        "validation": validation_groups,
        "test": grouped(test, test_scores),
        "test_solution_auroc": outcome_metrics(test_scores, test["label"])["auroc"],
        "seconds": time.time() - start,
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "command": "python benchmarks/verifier_vote.py " + shlex.join(sys.argv[1:]),
    }
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, f"{arm_name(args)}.json"), "w") as f:
        json.dump(out, f)
    print(f"{arm_name(args)}: chose lr {chosen_lr:g} on validation; total {out['seconds']:.0f} s")


def report(groups: dict, bootstrap: int, seed: int) -> dict:
    from trl_rewards.evaluation.best_of_n import best_of_n_report

    values = list(groups.values())
    return best_of_n_report(
        [g["answers"] for g in values],
        [g["gold"] for g in values],
        [g["scores"] for g in values],
        score_kind="logit",
        bootstrap=bootstrap,
        seed=seed,
    )


RATES = (
    ("pass@n", "pass@4 (oracle)"),
    ("maj@n", "maj@4"),
    ("bon@n", "BoN@4 by the ORM"),
    ("weighted_vote@n", "verifier-weighted maj@4"),
    ("random_pick", "random pick"),
)


def _paired(a: list[float], b: list[float], args) -> str:
    import numpy as np

    from trl_rewards.evaluation.pairwise_report import bootstrap_ci

    difference = np.asarray(a) - np.asarray(b)
    low, high = bootstrap_ci(np.mean, difference, n_resamples=args.bootstrap, seed=args.seed)
    verdict = "higher" if low > 0 else "lower" if high < 0 else "not distinguishable"
    return f"{difference.mean():+.3f} (paired 95% CI [{low:+.3f}, {high:+.3f}]: {verdict})"


def _per_question(groups: dict, rule: str) -> list[float]:
    from trl_rewards.evaluation.best_of_n import (
        best_of_n_solve_rate,
        majority_vote_solve_rate,
        weighted_vote_solve_rate,
    )

    out = []
    for g in groups.values():
        one = ([g["answers"]], [g["gold"]])
        if rule == "maj":
            out.append(majority_vote_solve_rate(*one))
        elif rule == "bon":
            out.append(best_of_n_solve_rate(*one, [g["scores"]]))
        else:
            out.append(weighted_vote_solve_rate(*one, [g["scores"]], score_kind="logit"))
    return out


def summarize(args) -> None:
    """Per base: the supervision arm with the best validation BoN@4 (each arm already chose its learning rate on
    validation), then its test rates with 95% bootstrap intervals over questions, and paired differences."""
    import glob

    arms = {}
    for path in sorted(glob.glob(os.path.join(args.output_dir, "*_*.json"))):
        with open(path) as f:
            result = json.load(f)
        if "base" in result:
            arms[(result["base"], result["supervision"], result["chosen_learning_rate"])] = result
    if not arms:
        raise SystemExit(f"no arm results in {args.output_dir}: run the arms first (see --help)")
    validation = {key: report(r["validation"], 0, args.seed) for key, r in arms.items()}
    chosen = {}
    for base in sorted({key[0] for key in arms}):
        keys = [key for key in arms if key[0] == base]
        # Ties on validation go to the lower learning rate (the smaller change to the base).
        chosen[base] = max(keys, key=lambda k: (validation[k]["bon@n"], validation[k]["weighted_vote@n"], -k[2]))
    print("```")
    for r in arms.values():
        print(f"nice -n 10 {r['command']}")
    print("python benchmarks/verifier_vote.py " + shlex.join(sys.argv[1:]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, load average {load:.1f} at summary")
    print("```\n")
    print("Validation grid (the only figures the choices read):\n")
    print("| base | supervision | lr | train rows (truncated) | train s | val BoN@4 | val weighted maj@4 | chosen |")
    print("|---|---|---|---|---|---|---|---|")
    for (base, supervision, _), r in arms.items():
        for point in r["grid"]:
            mark = "yes" if chosen[base] == (base, supervision, point["learning_rate"]) else ""
            print(f"| {base} | {supervision} | {point['learning_rate']:g} | {r['n_train_rows']} "
                  f"({point['n_train_truncated']}) | {point['train_seconds']:.0f} | {point['val_bon']:.3f} | "
                  f"{point['val_weighted_vote']:.3f} | {mark} |")  # fmt: skip
    tests = {base: report(arms[key]["test"], args.bootstrap, args.seed) for base, key in chosen.items()}
    n = {t["n_problems"] for t in tests.values()}
    print(f"\nTest ({'/'.join(map(str, sorted(n)))} questions x 4 candidates), solve rate [95% CI over questions]:\n")
    heads = [f"{base} ({chosen[base][1]}, lr {arms[chosen[base]]['chosen_learning_rate']:g})" for base in tests]
    print("| selection | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(tests))
    for key, name in RATES:
        cells = [f"{t[key]:.3f} [{t[f'{key}_ci'][0]:.3f}, {t[f'{key}_ci'][1]:.3f}]" for t in tests.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    aurocs = [f"{arms[chosen[base]]['test_solution_auroc']:.3f}" for base in tests]
    print("| AUROC over test solutions | " + " | ".join(aurocs) + " |")
    print()
    for base, key in chosen.items():
        groups = arms[key]["test"]
        maj = _per_question(groups, "maj")
        print(f"- {base}: weighted maj@4 minus maj@4 {_paired(_per_question(groups, 'weighted'), maj, args)}; "
              f"BoN@4 minus maj@4 {_paired(_per_question(groups, 'bon'), maj, args)}")  # fmt: skip
    if len(chosen) == 2 and len(n) == 1:
        (a, ka), (b, kb) = sorted(chosen.items(), key=lambda item: item[0] != "smollm2")
        if arms[ka]["test"].keys() == arms[kb]["test"].keys():
            for rule, name in (("bon", "BoN@4"), ("weighted", "weighted maj@4")):
                diff = _paired(_per_question(arms[ka]["test"], rule), _per_question(arms[kb]["test"], rule), args)
                print(f"- {name}, {a} minus {b}: {diff}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if not GSM8K.is_file():
        print(f"skipped: {GSM8K} is absent (needs ../shared/data)")
        return
    if args.summarize:
        summarize(args)
    elif args.supervision:
        run_arm(args)
    else:
        raise SystemExit("pass --supervision ARM or --summarize (see --help)")


if __name__ == "__main__":
    main()
