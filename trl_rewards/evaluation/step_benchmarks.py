"""The metrics that ProcessBench and PRMBench report for process reward models, per subset and overall.

A step's prediction is P(step correct); the step is flagged wrong when it is below `threshold` (the convention of
`verifier_metrics`). All rates are fractions in `[0, 1]` (the papers print percentages).

**ProcessBench** (Zheng et al., 2024). The predicted first error of a solution is its first flagged step (none when
no step is). On the erroneous solutions (a first error annotated) the accuracy is the fraction whose predicted first
error is exactly the annotated one; on the correct solutions, the fraction with no step flagged. The subset's "F1" is
the harmonic mean of the two accuracies, `2 a b / (a + b)` (0 when both are 0, NaN when the subset lacks one of the
two kinds); the headline is the mean F1 over subsets (the paper's "Avg. F1"). `overall` pools every solution.

**PRMBench** (Song et al., 2025). Every step is labelled (right = positive). Pooled over the steps of a subset:
`f1 = 2 TP / (2 TP + FP + FN)` on the right steps, `negative_f1 = 2 TN / (2 TN + FN + FP)` on the wrong steps
(TN: a wrong step flagged), `prmscore = (f1 + negative_f1) / 2`; `overall` pools the steps of every subset, as
PRMBench's own total does. An F1 is NaN only when its class is absent from labels and predictions; where precision
and recall are both 0, PRMBench's code writes a sentinel -1 and we write the true value, 0.

Bootstrap intervals (`bootstrap > 0`) are 95% percentile intervals over solutions: ProcessBench resamples the
erroneous and the correct solutions separately (their counts are fixed by the benchmark's design, and every
resample keeps both accuracies defined); PRMBench resamples solutions with all their steps (steps of one solution are
not independent). Resamples where a value is undefined are left out of its interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .verifier_metrics import _check_threshold, predicted_first_error

_ALPHA = 0.025  # 95% intervals


def _subsets(subsets: Sequence[str] | None, n: int) -> list[str]:
    if subsets is None:
        return ["all"] * n
    if len(subsets) != n:
        raise ValueError(f"got {len(subsets)} subsets for {n} solutions")
    return [str(s) for s in subsets]


def _check_probs(step_probs: Sequence[Sequence[float]]) -> list[np.ndarray]:
    if not step_probs:
        raise ValueError("no solution to evaluate")
    out = []
    for i, probs in enumerate(step_probs):
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 1 or p.size == 0:
            raise ValueError(f"solution {i} has no step probability")
        bad = np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))
        if bad.size:
            raise ValueError(f"solution {i}: step probability {p[bad[0]]} (step {bad[0]}) is not a probability")
        out.append(p)
    return out


def _interval(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    return None if values.size == 0 else [float(v) for v in np.quantile(values, [_ALPHA, 1 - _ALPHA])]


def harmonic_f1(a: float, b: float) -> float:
    """`2 a b / (a + b)`: 0 when both are 0, NaN when either is NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 2 * a * b / (a + b) if a + b else 0.0


def _processbench_subset(matches: np.ndarray, erroneous: np.ndarray) -> dict[str, Any]:
    err, ok = matches[erroneous], matches[~erroneous]
    a = float(err.mean()) if err.size else math.nan
    b = float(ok.mean()) if ok.size else math.nan
    return {
        "n": int(matches.size),
        "n_erroneous": int(err.size),
        "n_correct": int(ok.size),
        "erroneous_accuracy": a,
        "correct_accuracy": b,
        "f1": harmonic_f1(a, b),
    }


def _processbench_f1_ci(matches: np.ndarray, erroneous: np.ndarray, n_resamples: int, rng) -> list[float] | None:
    err, ok = matches[erroneous].astype(np.float64), matches[~erroneous].astype(np.float64)
    if not err.size or not ok.size:
        return None
    a = err[rng.integers(0, err.size, (n_resamples, err.size))].mean(axis=1)
    b = ok[rng.integers(0, ok.size, (n_resamples, ok.size))].mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(a + b > 0, 2 * a * b / (a + b), 0.0)
    return _interval(f1)


def processbench_metrics(
    step_probs: Sequence[Sequence[float]],
    first_errors: Sequence[int | None],
    subsets: Sequence[str] | None = None,
    threshold: float = 0.5,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """
    ProcessBench's metric (see the module docstring).

    Args:
        step_probs (`Sequence[Sequence[float]]`): per solution, P(step correct) of every step.
        first_errors (`Sequence[int | None]`): per solution, the 0-based index of the first wrong step; `None` or
            `-1` when every step is right.
        subsets (`Sequence[str]`, *optional*): per solution, its subset (default: one subset, `"all"`).
        threshold (`float`, *optional*, defaults to `0.5`): a step is flagged wrong below this probability.
        bootstrap (`int`, *optional*, defaults to `0`): resamples for the `"f1_ci"` of every subset and of overall.
        seed (`int`, *optional*, defaults to `0`): bootstrap seed.

    Returns:
        `dict` with `subsets` (`{name: {n, n_erroneous, n_correct, erroneous_accuracy, correct_accuracy, f1}}`),
        `overall` (the same, pooled), `average_f1` (mean F1 over subsets) and `threshold`.
    """
    threshold = _check_threshold(threshold)
    probs = _check_probs(step_probs)
    if len(first_errors) != len(probs):
        raise ValueError(f"got {len(first_errors)} first errors for {len(probs)} solutions")
    truth = []
    for i, (p, label) in enumerate(zip(probs, first_errors, strict=True)):
        label = None if label is None or label == -1 else label
        if label is not None and not 0 <= label < p.size:
            raise ValueError(f"solution {i}: first error {label} is not one of its {p.size} steps (or -1 / None)")
        truth.append(label)
    names = _subsets(subsets, len(probs))
    predicted = [predicted_first_error(p, threshold) for p in probs]
    matches = np.array([pred == true for pred, true in zip(predicted, truth, strict=True)])
    erroneous = np.array([true is not None for true in truth])
    rng = np.random.default_rng(seed)
    groups = {name: np.array([n == name for n in names]) for name in sorted(set(names))}
    per_subset = {}
    for name, mask in groups.items():
        per_subset[name] = _processbench_subset(matches[mask], erroneous[mask])
        if bootstrap:
            per_subset[name]["f1_ci"] = _processbench_f1_ci(matches[mask], erroneous[mask], bootstrap, rng)
    overall = _processbench_subset(matches, erroneous)
    if bootstrap:
        overall["f1_ci"] = _processbench_f1_ci(matches, erroneous, bootstrap, rng)
    return {
        "subsets": per_subset,
        "overall": overall,
        "average_f1": float(np.mean([s["f1"] for s in per_subset.values()])),
        "threshold": threshold,
    }


def _counts(predicted_right: np.ndarray, right: np.ndarray) -> np.ndarray:
    """`[TP, FP, FN, TN]` with right steps positive."""
    return np.array(
        [
            np.sum(predicted_right & right),
            np.sum(predicted_right & ~right),
            np.sum(~predicted_right & right),
            np.sum(~predicted_right & ~right),
        ]
    )


def _prmscore_from_counts(counts: np.ndarray) -> dict[str, float]:
    tp, fp, fn, tn = (int(c) for c in counts)
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else math.nan
    negative_f1 = 2 * tn / (2 * tn + fn + fp) if 2 * tn + fn + fp else math.nan
    total = tp + fp + fn + tn
    return {
        "n_steps": total,
        "accuracy": (tp + tn) / total if total else math.nan,
        "f1": f1,
        "negative_f1": negative_f1,
        "prmscore": (f1 + negative_f1) / 2,
    }


def _prmscore_ci(per_solution: np.ndarray, n_resamples: int, rng) -> list[float] | None:
    """`per_solution` of shape `(n_solutions, 4)`: each solution's counts; a resample sums its solutions' counts."""
    if per_solution.shape[0] < 2:
        return None
    picks = rng.integers(0, per_solution.shape[0], (n_resamples, per_solution.shape[0]))
    scores = np.array([_prmscore_from_counts(per_solution[idx].sum(axis=0))["prmscore"] for idx in picks])
    return _interval(scores)


def prmscore(
    step_probs: Sequence[Sequence[float]],
    step_labels: Sequence[Sequence[bool]],
    subsets: Sequence[str] | None = None,
    threshold: float = 0.5,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """
    PRMBench's PRMScore (see the module docstring).

    Args:
        step_probs (`Sequence[Sequence[float]]`): per solution, P(step correct) of every step.
        step_labels (`Sequence[Sequence[bool]]`): per solution, `True` for a right step.
        subsets (`Sequence[str]`, *optional*): per solution, its subset (PRMBench's `classification`).
        threshold (`float`, *optional*, defaults to `0.5`): a step is flagged wrong below this probability.
        bootstrap (`int`, *optional*, defaults to `0`): resamples for the `"prmscore_ci"` of every subset and overall.
        seed (`int`, *optional*, defaults to `0`): bootstrap seed.

    Returns:
        `dict` with `subsets` (`{name: {n_solutions, n_steps, accuracy, f1, negative_f1, prmscore}}`), `overall` (the
        same over all steps), `subset_mean` (mean PRMScore over subsets) and `threshold`.
    """
    threshold = _check_threshold(threshold)
    probs = _check_probs(step_probs)
    if len(step_labels) != len(probs):
        raise ValueError(f"got labels for {len(step_labels)} solutions but probabilities for {len(probs)}")
    counts = []
    for i, (p, labels) in enumerate(zip(probs, step_labels, strict=True)):
        if len(labels) != p.size:
            raise ValueError(f"solution {i}: {p.size} probabilities but {len(labels)} labels")
        counts.append(_counts(p >= threshold, np.asarray(labels, dtype=bool)))
    per_solution = np.stack(counts)
    names = _subsets(subsets, len(probs))
    rng = np.random.default_rng(seed)

    def summary(mask: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"n_solutions": int(mask.sum()), **_prmscore_from_counts(per_solution[mask].sum(0))}
        if bootstrap:
            out["prmscore_ci"] = _prmscore_ci(per_solution[mask], bootstrap, rng)
        return out

    per_subset = {name: summary(np.array([n == name for n in names])) for name in sorted(set(names))}
    return {
        "subsets": per_subset,
        "overall": summary(np.ones(len(names), dtype=bool)),
        "subset_mean": float(np.mean([s["prmscore"] for s in per_subset.values()])),
        "threshold": threshold,
    }


def evaluate_step_benchmark(
    rows: Sequence[dict[str, Any]],
    step_probs: Sequence[Sequence[float]],
    benchmark: str,
    threshold: float = 0.5,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """The benchmark's metrics for rows of `data.step_benchmarks` (`"processbench"`: `first_error`; `"prmbench"`:
    `labels`), with `headline` (name and value of the figure the benchmark ranks by)."""
    subsets = [row["subset"] for row in rows]
    if benchmark == "processbench":
        result = processbench_metrics(
            step_probs, [row["first_error"] for row in rows], subsets, threshold, bootstrap, seed
        )
        result["headline"] = {"name": "average F1", "value": result["average_f1"]}
    elif benchmark == "prmbench":
        result = prmscore(step_probs, [row["labels"] for row in rows], subsets, threshold, bootstrap, seed)
        result["headline"] = {"name": "PRMScore", "value": result["overall"]["prmscore"]}
    else:
        raise ValueError(f"benchmark must be 'processbench' or 'prmbench', got {benchmark!r}")
    return result
