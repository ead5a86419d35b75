"""Metrics of verifiers: process reward models (per step) and outcome reward models (per solution).

Pure functions of plain lists / arrays, computed exactly over everything they are given (the trainers buffer every
prediction of an evaluation and call them once).

Process (PRM) conventions: a step's prediction is P(step correct); it is predicted *bad* when that probability is
below `threshold`. "Bad" is the positive class of precision, recall and F1, because finding errors is the job. The
first-error step of a solution is the index of its first bad step, `None` when every step is good; a solution counts
as right when the predicted and the true first-error steps are equal, `None == None` included.

Outcome (ORM) conventions: the score is a logit, P(correct) = σ(score); a solution is predicted correct when
`score > 0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import rankdata

from ..data.stepwise import first_error_step
from . import metrics


def _check_threshold(threshold: float) -> float:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    return float(threshold)


def _flat_steps(step_probs: Sequence[Sequence[float]], step_labels: Sequence[Sequence[bool]]):
    if len(step_probs) != len(step_labels):
        raise ValueError(f"got {len(step_probs)} solutions of probabilities but {len(step_labels)} of labels")
    if not step_probs:
        raise ValueError("no solution to evaluate")
    for i, (probs, labels) in enumerate(zip(step_probs, step_labels, strict=True)):
        if len(probs) != len(labels):
            raise ValueError(f"solution {i}: {len(probs)} probabilities but {len(labels)} labels")
        if len(probs) == 0:
            raise ValueError(f"solution {i} has no step")
    p = np.concatenate([np.asarray(s, dtype=np.float64) for s in step_probs])
    y = np.concatenate([np.asarray(s, dtype=bool) for s in step_labels])
    bad = np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))
    if bad.size:
        raise ValueError(f"step probability {p[bad[0]]} (flat index {bad[0]}) is not a probability")
    return p, y


def predicted_first_error(probs: Sequence[float], threshold: float = 0.5) -> int | None:
    """Index of the first step predicted bad (P(correct) < `threshold`), `None` when none is."""
    threshold = _check_threshold(threshold)
    return next((i for i, p in enumerate(probs) if p < threshold), None)


def step_metrics(
    step_probs: Sequence[Sequence[float]], step_labels: Sequence[Sequence[bool]], threshold: float = 0.5
) -> dict[str, float]:
    """
    Step-level and solution-level metrics of a process reward model.

    Args:
        step_probs (`Sequence[Sequence[float]]`): per solution, P(step correct) of each scored step.
        step_labels (`Sequence[Sequence[bool]]`): per solution, the true labels of the same steps (`True` = good).
        threshold (`float`, *optional*, defaults to `0.5`): a step is predicted bad below this probability.

    Returns:
        `dict[str, float]` with `step_accuracy`, `bad_precision`, `bad_recall`, `bad_f1` (bad = positive class;
        NaN when undefined: no predicted bad step for precision, no true bad step for recall, neither for F1),
        `first_error_accuracy`, `bad_step_rate` (true), `n_steps`, `n_solutions`.
    """
    threshold = _check_threshold(threshold)
    p, y = _flat_steps(step_probs, step_labels)
    predicted_bad, true_bad = p < threshold, ~y
    tp = int(np.sum(predicted_bad & true_bad))
    fp = int(np.sum(predicted_bad & ~true_bad))
    fn = int(np.sum(~predicted_bad & true_bad))
    first_right = [
        predicted_first_error(probs, threshold) == first_error_step(labels)
        for probs, labels in zip(step_probs, step_labels, strict=True)
    ]
    return {
        "step_accuracy": float(np.mean(predicted_bad == true_bad)),
        "bad_precision": tp / (tp + fp) if tp + fp else math.nan,
        "bad_recall": tp / (tp + fn) if tp + fn else math.nan,
        "bad_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
        "first_error_accuracy": float(np.mean(first_right)),
        "bad_step_rate": float(np.mean(true_bad)),
        "n_steps": int(p.size),
        "n_solutions": len(first_right),
    }


def binary_auroc(scores: Any, labels: Any) -> float:
    """
    Area under the ROC curve: the probability that a random positive outscores a random negative, ties counting
    half (Mann-Whitney U with average ranks). NaN when only one class is present.

    Args:
        scores (array-like of shape `(n,)`): any monotone score.
        labels (array-like of shape `(n,)`): 1 / `True` for positives.

    Returns:
        `float`
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of the same length, got {s.shape} and {y.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def outcome_metrics(scores: Any, labels: Any, n_bins: int = 10) -> dict[str, float]:
    """
    Metrics of an outcome reward model whose scores are logits of P(correct).

    Args:
        scores (array-like of shape `(n,)`): the scores (logits).
        labels (array-like of shape `(n,)`): 1 / `True` for a correct solution.
        n_bins (`int`, *optional*, defaults to `10`): bins of the expected calibration error.

    Returns:
        `dict[str, float]` with `accuracy` (predicted correct when `score > 0`), `auroc`, `ece` and `brier` (of
        σ(score) against the labels), `mean_score`, `positive_rate` (true).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    probabilities = expit(s)
    return {
        "accuracy": float(np.mean((s > 0) == (y > 0.5))),
        "auroc": binary_auroc(s, y > 0.5),
        "ece": metrics.expected_calibration_error(probabilities, y, n_bins=n_bins),
        "brier": metrics.brier_score(probabilities, y),
        "mean_score": float(np.mean(s)),
        "positive_rate": float(np.mean(y)),
    }
