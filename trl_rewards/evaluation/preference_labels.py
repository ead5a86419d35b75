"""Pairwise metrics against per-pair preference labels: a soft `label` p = P(chosen is better), or a flipped pair.

`evaluation.metrics` scores a pair as if `chosen` always won (label 1). With a `label` column the outcome of a pair is
its label p, and the metrics here reduce exactly to those of `evaluation.metrics` when every label is 1:

- **accuracy**: the hard outcome is "chosen wins" when p > 0.5 and "rejected wins" when p < 0.5; the model is right
  when it scores the winning side higher. p == 0.5 (the annotators are split) makes the pair a tie, counted by the
  tie policy like a model tie: 0 under `"loss"`, 0.5 under `"half"`, left out under `"exclude"`.
- **calibration**: the model's q = sigmoid(chosen - rejected) predicts "chosen" when q > 0.5, with confidence
  max(q, 1 - q), binned as in `evaluation.metrics`; a prediction's correctness is the probability that it matches the
  outcome: p when q > 0.5, 1 - p when q < 0.5, 0 when q == 0.5 (a model tie, as in `evaluation.metrics`). For p in
  {0, 1} this is the ECE of q against the binary outcome p.
- **Brier score**: mean (q - p)^2; **win probability**: mean(p q + (1 - p)(1 - q)), the probability that the model's
  Bradley-Terry preference and the annotator's agree.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from scipy.special import expit

from .metrics import bin_by_confidence, pairwise_accuracy, to_array
from .pairwise_report import bootstrap_ci


def check_labels(labels: Any, n: int) -> np.ndarray:
    """`labels` as a float vector of `n` values in `[0, 1]`, or a `ValueError` naming the first bad one."""
    p = to_array(labels, "labels")
    if p.size != n:
        raise ValueError(f"labels must have one value per pair ({n}), got {p.size}")
    outside = np.flatnonzero((p < 0) | (p > 1))
    if outside.size:
        raise ValueError(f"labels[{outside[0]}] is {p[outside[0]]}, outside [0, 1]")
    return p


def oriented_pairs(chosen: Any, rejected: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """`(winner, loser)` scores: each pair ordered by its hard outcome; a pair labelled 0.5 becomes `(0, 0)`, a tie."""
    a, b = to_array(chosen, "chosen"), to_array(rejected, "rejected")
    p = check_labels(labels, a.size)
    winner = np.where(p > 0.5, a, np.where(p < 0.5, b, 0.0))
    loser = np.where(p > 0.5, b, np.where(p < 0.5, a, 0.0))
    return winner, loser


def labelled_accuracy(chosen: Any, rejected: Any, labels: Any, *, ties: str = "loss") -> float:
    """Accuracy against the hard outcome of each label (module docstring); `ties` as in `pairwise_accuracy`."""
    return pairwise_accuracy(*oriented_pairs(chosen, rejected, labels), ties=ties)


def _bins(chosen: Any, rejected: Any, labels: Any, n_bins: int) -> tuple[np.ndarray, ...]:
    a, b = to_array(chosen, "chosen"), to_array(rejected, "rejected")
    p = check_labels(labels, a.size)
    q = expit(a - b)
    correct = np.where(q > 0.5, p, np.where(q < 0.5, 1 - p, 0.0))
    return bin_by_confidence(np.maximum(q, 1 - q), correct, n_bins)


def labelled_calibration_error(chosen: Any, rejected: Any, labels: Any, *, n_bins: int = 10) -> float:
    """ECE of `sigmoid(chosen - rejected)` against the soft outcomes `labels` (module docstring), in `[0, 1]`."""
    _, confidence_sum, correct_sum, count = _bins(chosen, rejected, labels, n_bins)
    return float(np.sum(np.abs(correct_sum - confidence_sum)) / np.sum(count))


def labelled_calibration_curve(chosen: Any, rejected: Any, labels: Any, *, n_bins: int = 10) -> dict[str, list]:
    """Reliability-diagram data of `labelled_calibration_error`, in the layout of `metrics.calibration_curve`."""
    edges, confidence_sum, correct_sum, count = _bins(chosen, rejected, labels, n_bins)
    used = np.flatnonzero(count)
    return {
        "bin_lower": edges[used].tolist(),
        "bin_upper": edges[used + 1].tolist(),
        "confidence": (confidence_sum[used] / count[used]).tolist(),
        "accuracy": (correct_sum[used] / count[used]).tolist(),
        "count": count[used].tolist(),
    }


def labelled_brier(chosen: Any, rejected: Any, labels: Any) -> float:
    a, b = to_array(chosen, "chosen"), to_array(rejected, "rejected")
    return float(np.mean((expit(a - b) - check_labels(labels, a.size)) ** 2))


def labelled_win_probability(chosen: Any, rejected: Any, labels: Any) -> float:
    a, b = to_array(chosen, "chosen"), to_array(rejected, "rejected")
    q, p = expit(a - b), check_labels(labels, a.size)
    return float(np.mean(p * q + (1 - p) * (1 - q)))


def labelled_pairwise_metrics(
    chosen: Any, rejected: Any, labels: Any, *, ties: str = "loss", n_bins: int = 10, bootstrap: int = 0, seed: int = 0
) -> dict[str, Any]:
    """
    The label-dependent entries of `pairwise_report` (`"accuracy"`, `"win_probability"`, `"ece"`, `"brier"` and,
    with `bootstrap` resamples, their `"*_ci"`) against per-pair labels. Under `ties="exclude"` the accuracy is
    resampled over the pairs that are not ties (by score or by label), as in `pairwise_report`.
    """
    a, b = to_array(chosen, "chosen"), to_array(rejected, "rejected")
    p = check_labels(labels, a.size)
    statistics = {
        "accuracy": partial(labelled_accuracy, ties=ties),
        "win_probability": labelled_win_probability,
        "ece": partial(labelled_calibration_error, n_bins=n_bins),
        "brier": labelled_brier,
    }
    report = {name: statistic(a, b, p) for name, statistic in statistics.items()}
    if bootstrap:
        winner, loser = oriented_pairs(a, b, p)
        for name, statistic in statistics.items():
            rows = winner != loser if name == "accuracy" and ties == "exclude" else slice(None)
            report[f"{name}_ci"] = list(
                bootstrap_ci(statistic, a[rows], b[rows], p[rows], n_resamples=bootstrap, seed=seed)
            )
    return report
