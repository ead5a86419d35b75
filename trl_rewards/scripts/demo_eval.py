"""The demo's evaluation stage: both reward models on the held-out problems, each figure beside its trivial baseline.

Baselines (a model at or below one has learned nothing usable):

- BT pairwise accuracy: the length rule "the longer solution wins", ties (equal token counts, almost every pair of
  the synthetic data) counted as coin flips, its tie rate beside it; a coin flip is 0.5;
- PRM steps: the majority class for accuracy, "every step bad" (the best constant rule) for the bad-step F1, 0.5 for
  the step AUROC (P(bad) from the model's step probability);
- PRM solutions: 0.5 for the AUROC, a random pick among each problem's solutions for best-of-N.

With an `error_type` column (the synthetic data has one) every figure is also reported per error type: the corrupted
solutions of that type with the correct solutions of the same problems.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from .demo_stages import PRM_AGGREGATIONS, scoring_device

ERROR_TYPE = "error_type"


def evaluate_bradley_terry(args, model_path: str, test_dataset, output_dir: str) -> dict[str, Any]:
    """`evaluate_preferences` on the held-out pairs, its plots and `report.md` in `output_dir`; returns the summary
    (overall and, with an `error_type` column, per error type)."""
    from ..evaluation.plots import plot_evaluation
    from ..evaluation.report import write_report
    from ..evaluation.runner import evaluate_preferences
    from ..inference.sequence_scoring import RewardScorer
    from ..modeling import load_reward_model

    model, tokenizer = load_reward_model(model_path, partition_under_zero3=False)
    device = scoring_device(args)
    scorer = RewardScorer(
        model.to(device), tokenizer, batch_size=64, max_length=args.size("max_length"), device=device
    )
    subset = ERROR_TYPE if ERROR_TYPE in test_dataset.column_names else None
    results = evaluate_preferences(
        scorer, test_dataset, subset_column=subset, bootstrap=args.bootstrap, seed=args.seed
    )
    results["config"].update(model=model_path, dataset="held-out preference pairs")
    figures = plot_evaluation(results, output_dir)
    paths = write_report(results, output_dir, figures)
    keys = (
        "count",
        "accuracy",
        "accuracy_ci",
        "length_baseline_accuracy",
        "length_tie_rate",
        "win_probability",
        "ece",
        "brier",
    )
    pick = lambda report: {key: report[key] for key in keys if key in report}  # noqa: E731
    summary = {**pick(results["overall"]), "report": paths["report"]}
    if results["subsets"]:
        summary["by_error_type"] = {name: pick(report) for name, report in results["subsets"].items()}
    return summary


def _group_by_prompt(prompts: Sequence[str]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    return list(groups.values())


def prm_report(probabilities, labels, prompts, indices: Sequence[int]) -> dict[str, Any]:
    """
    Step and solution metrics of the solutions `indices`, each beside its baseline.

    Args:
        probabilities (`list[list[float]]`): P(step correct) of every step of every solution.
        labels (`list[list[bool]]`): the true step labels.
        prompts (`list[str]`): the prompt of each solution (best-of-N compares the solutions of one prompt).
        indices (`Sequence[int]`): the solutions to report on.

    Returns:
        `dict`: `"step_metrics"` (`verifier_metrics.step_metrics` plus `step_auroc`, `majority_accuracy`,
        `all_bad_f1`) and `"solutions"`: for each aggregation in `PRM_AGGREGATIONS`, `solution_accuracy`, `auroc`
        and best-of-N (`best_of_n`, `random_pick`, `oracle`, `n_problems`) when two solutions share a prompt.
    """
    from ..evaluation.best_of_n import best_of_n_report
    from ..evaluation.verifier_metrics import binary_auroc, step_metrics
    from ..inference.aggregation import aggregate_step_scores

    probabilities = [probabilities[i] for i in indices]
    labels = [labels[i] for i in indices]
    prompts = [prompts[i] for i in indices]
    correct = [all(row) for row in labels]
    steps = step_metrics(probabilities, labels)
    bad_rate = steps["bad_step_rate"]
    steps["majority_accuracy"] = max(bad_rate, 1 - bad_rate)
    steps["all_bad_f1"] = 2 * bad_rate / (1 + bad_rate)
    flat_p = [p for row in probabilities for p in row]
    flat_bad = [not label for row in labels for label in row]
    steps["step_auroc"] = binary_auroc([1 - p for p in flat_p], flat_bad)
    groups = [group for group in _group_by_prompt(prompts) if len(group) >= 2]
    solutions = {}
    for method in PRM_AGGREGATIONS:
        scores = [aggregate_step_scores(p, method) for p in probabilities]
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
                )
            )
        solutions[method] = report
    return {"step_metrics": steps, "solutions": solutions}


def evaluate_process_reward(args, model_path: str, test_dataset, output_dir: str) -> dict[str, Any]:
    """
    Scores every held-out solution step by step with [`ProcessRewardScorer`] and reports [`prm_report`] on all of
    them and, with an `error_type` column, on each error type's corrupted solutions with the correct solutions of the
    same problems (`"by_error_type"`). Step probabilities and labels go to `output_dir/results.json`.
    """
    from ..inference.step_scoring import ProcessRewardScorer
    from ..modeling import load_process_reward_model

    model, tokenizer = load_process_reward_model(model_path)
    device = scoring_device(args)
    scorer = ProcessRewardScorer(
        model.to(device), tokenizer, batch_size=64, max_length=args.size("max_length"), device=device
    )
    columns = ["prompt", "completions", "labels"]
    rows = test_dataset.select_columns(columns + [c for c in (ERROR_TYPE,) if c in test_dataset.column_names])
    rows = rows.to_dict()
    probabilities = scorer.step_probabilities(rows["prompt"], rows["completions"])
    labels = [[bool(label) for label in row] for row in rows["labels"]]
    results = {"model": model_path, **prm_report(probabilities, labels, rows["prompt"], range(len(labels)))}
    if ERROR_TYPE in rows:
        by_type: dict[str, list[int]] = {}
        for i, kind in enumerate(rows[ERROR_TYPE]):
            if not all(labels[i]):
                by_type.setdefault(str(kind), []).append(i)
        results["by_error_type"] = {}
        for kind, wrong in sorted(by_type.items()):
            prompts = {rows["prompt"][i] for i in wrong}
            good = [i for i, row in enumerate(labels) if all(row) and rows["prompt"][i] in prompts]
            results["by_error_type"][kind] = prm_report(probabilities, labels, rows["prompt"], sorted(wrong + good))
    results["n_truncated"] = scorer.n_truncated
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({**results, "step_probabilities": probabilities, "labels": labels}, f, indent=2, default=float)
    return results
