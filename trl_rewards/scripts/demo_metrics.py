"""The demo's process-reward evaluation: figures, each beside the baseline it must beat, with bootstrap intervals.

- Step level: F1 on bad steps (baselines: the majority class "every step is good", F1 0, and "every step is bad",
  F1 `2p / (1 + p)` for a bad-step rate `p`) and AUROC of the step probabilities (baselines: chance, 0.5, and the
  step's position alone, which is informative because every step after the first error is labelled bad).
- Solution level, for each aggregation of the step probabilities: accuracy, AUROC, and best-of-N over the solutions of
  each problem next to a random pick.
- Per error kind of the synthetic data (`error_type`): how often the first wrong step is caught (probability < 0.5),
  the AUROC of correct solutions against that kind, and how often the correct solution outscores its corrupted twin
  (best-of-2; random 0.5).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..evaluation.verifier_metrics import binary_auroc, step_metrics
from .demo_stages import PRM_AGGREGATIONS, REPORT_COLUMN, scoring_device


def _interval(statistic: Callable[[np.ndarray], float], n: int, bootstrap: int, seed: int) -> list[float] | None:
    """95% percentile interval of `statistic(indices)` over `bootstrap` resamples of `range(n)`; `None` if 0."""
    if bootstrap <= 0 or n == 0:
        return None
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(bootstrap)]
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def _flatten(probabilities: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]], rows: Sequence[int]):
    p = np.array([value for i in rows for value in probabilities[i]], dtype=np.float64)
    good = np.array([label for i in rows for label in labels[i]], dtype=bool)
    position = np.array([j for i in rows for j in range(len(labels[i]))], dtype=np.float64)
    return p, good, position


def step_figures(
    probabilities: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]], *, bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """
    Step-level figures and their baselines (module docstring), intervals by resampling whole solutions.

    Args:
        probabilities (`Sequence[Sequence[float]]`): per solution, the probability that each step is good.
        labels (`Sequence[Sequence[bool]]`): per solution, each step's label (`True`: good).
        bootstrap (`int`, *optional*, defaults to `1000`): resamples for the intervals (0: none).
        seed (`int`, *optional*, defaults to `0`): resampling seed.

    Returns:
        `dict`: `step_metrics`'s figures plus `step_auroc`, `position_auroc` (the baseline), `all_bad_f1`,
        `majority_f1` (0.0), `majority_accuracy`, and `bad_f1_ci`, `step_auroc_ci` when `bootstrap > 0`.
    """
    figures = step_metrics(probabilities, labels)
    every = range(len(labels))
    p, good, position = _flatten(probabilities, labels, every)
    bad_rate = float(np.mean(~good))

    def f1(rows) -> float:
        p, good, _ = _flatten(probabilities, labels, rows)
        predicted_bad, bad = p < 0.5, ~good
        tp = float(np.sum(predicted_bad & bad))
        wrong = float(np.sum(predicted_bad != bad))
        return 2 * tp / (2 * tp + wrong) if tp + wrong else float("nan")

    def auroc(rows) -> float:
        p, good, _ = _flatten(probabilities, labels, rows)
        return binary_auroc(p, good)

    figures.update(
        step_auroc=binary_auroc(p, good),
        position_auroc=binary_auroc(-position, good),
        majority_accuracy=1 - bad_rate,
        majority_f1=0.0,
        all_bad_f1=2 * bad_rate / (1 + bad_rate),
        bad_f1_ci=_interval(f1, len(labels), bootstrap, seed),
        step_auroc_ci=_interval(auroc, len(labels), bootstrap, seed),
    )
    return figures


def pair_figures(correct_scores: Sequence[float], wrong_scores: Sequence[float], *, bootstrap: int, seed: int) -> dict:
    """How often a correct solution outscores the corrupted one of its problem (ties 0.5), with its interval."""
    correct, wrong = np.asarray(correct_scores, dtype=np.float64), np.asarray(wrong_scores, dtype=np.float64)
    wins = (correct > wrong) + 0.5 * (correct == wrong)
    return {
        "best_of_2": float(np.mean(wins)) if wins.size else float("nan"),
        "best_of_2_ci": _interval(lambda rows: float(np.mean(wins[rows])), wins.size, bootstrap, seed),
        "random_pick": 0.5,
        "n_problems": int(wins.size),
    }


def kind_figures(
    probabilities: Sequence[Sequence[float]],
    labels: Sequence[Sequence[bool]],
    kinds: Sequence[str],
    scores: Sequence[float],
    pairs: Sequence[tuple[int, int]],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """
    Per error kind: `first_error_caught` (share of its solutions whose first wrong step scores < 0.5), `auroc`
    (correct solutions against that kind's, by `scores`) and `pair_figures` over the problems of that kind.

    Args:
        probabilities, labels: as in [`step_figures`].
        kinds (`Sequence[str]`): per solution, its error kind, `"none"` for a correct one.
        scores (`Sequence[float]`): per solution, its aggregated score.
        pairs (`Sequence[tuple[int, int]]`): (correct, corrupted) solution indices of each problem.
    """
    correct_scores = [scores[i] for i, kind in enumerate(kinds) if kind == "none"]
    report = {}
    for kind in sorted(set(kinds) - {"none"}):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        caught = [probabilities[i][labels[i].index(False)] < 0.5 for i in rows]
        kind_pairs = [(good, bad) for good, bad in pairs if kinds[bad] == kind]
        report[kind] = {
            "n_solutions": len(rows),
            "first_error_caught": float(np.mean(caught)),
            "auroc": binary_auroc(
                [scores[i] for i in rows] + correct_scores, [False] * len(rows) + [True] * len(correct_scores)
            ),
            **pair_figures(
                [scores[good] for good, _ in kind_pairs],
                [scores[bad] for _, bad in kind_pairs],
                bootstrap=bootstrap,
                seed=seed,
            ),
        }
    return report


def _group_by_prompt(prompts: Sequence[str]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    return list(groups.values())


def evaluate_process_reward(args, model_path: str, test_dataset, output_dir: str) -> dict[str, Any]:
    """
    Scores every held-out solution step by step with [`ProcessRewardScorer`] and reports, each beside its baseline
    (module docstring):

    - step level: accuracy, F1 on bad steps and AUROC, first-error accuracy;
    - solution level, for each aggregation of the step probabilities: accuracy of "score > 0.5 means every step is
      right", AUROC, and best-of-N over the solutions of each problem (a candidate is correct when all its steps
      are labelled good), next to a random pick and the oracle;
    - per error kind (when the rows have `error_type`), with `--prm_aggregation` as the solution score.
    """
    from ..evaluation.best_of_n import best_of_n_report
    from ..inference.aggregation import aggregate_step_scores
    from ..inference.step_scoring import ProcessRewardScorer
    from ..modeling import load_process_reward_model

    model, tokenizer = load_process_reward_model(model_path)
    device = scoring_device(args)
    scorer = ProcessRewardScorer(
        model.to(device), tokenizer, batch_size=64, max_length=args.size("max_length"), device=device
    )
    rows = test_dataset.select_columns(["prompt", "completions", "labels"]).to_dict()
    probabilities = scorer.step_probabilities(rows["prompt"], rows["completions"])
    labels = [[bool(label) for label in row] for row in rows["labels"]]
    correct = [all(row) for row in labels]
    steps = step_figures(probabilities, labels, bootstrap=args.bootstrap, seed=args.seed)
    groups = [group for group in _group_by_prompt(rows["prompt"]) if len(group) >= 2]
    # (correct, corrupted) of each problem with exactly one of each, as the synthetic data have
    pairs = [
        (next(i for i in group if correct[i]), next(i for i in group if not correct[i]))
        for group in groups
        if len(group) == 2 and sum(correct[i] for i in group) == 1
    ]
    solutions, all_scores = {}, {}
    for method in PRM_AGGREGATIONS:
        scores = all_scores[method] = [aggregate_step_scores(p, method) for p in probabilities]
        report: dict[str, Any] = {
            "solution_accuracy": float(
                sum((s > 0.5) == c for s, c in zip(scores, correct, strict=True)) / len(scores)
            ),
            "auroc": binary_auroc(scores, correct),
        }
        if groups:
            report.update(
                best_of_n_report(
                    [[correct[i] for i in group] for group in groups],
                    [True] * len(groups),
                    [[scores[i] for i in group] for group in groups],
                    bootstrap=args.bootstrap,
                    seed=args.seed,
                )
            )
        solutions[method] = report
    results = {
        "model": model_path,
        "step_metrics": steps,
        "solutions": solutions,
        "n_truncated": scorer.n_truncated,
    }
    if REPORT_COLUMN in test_dataset.column_names and pairs:
        chosen = all_scores[args.prm_aggregation]
        results["pairs"] = pair_figures(
            [chosen[i] for i, _ in pairs], [chosen[j] for _, j in pairs], bootstrap=args.bootstrap, seed=args.seed
        )
        results["kinds"] = kind_figures(
            probabilities,
            labels,
            list(test_dataset[REPORT_COLUMN]),
            chosen,
            pairs,
            bootstrap=args.bootstrap,
            seed=args.seed,
        )
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({**results, "step_probabilities": probabilities, "labels": labels}, f, indent=2, default=float)
    return results
