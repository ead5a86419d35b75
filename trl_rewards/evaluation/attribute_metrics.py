"""Metrics of multi-attribute regression reward models: per-attribute error and correlation, and the pairwise accuracy
of the combined reward.

Each attribute is measured on its observed ratings only (NaN marks a missing rating, as in training): MAE, Pearson's
r (linear agreement with the rating scale) and Spearman's ρ (agreement in order, what a reward is used for). A
correlation is NaN when it is undefined (fewer than 2 observed ratings, or a constant side).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def _correlation(kind, x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(kind(x, y)[0])


def attribute_metrics(predictions, ratings, attributes: Sequence[str]) -> dict[str, float]:
    """
    Per-attribute MAE, Pearson and Spearman over the observed ratings, their means over attributes, and the MSE
    over every observed rating (the training loss).

    Args:
        predictions (array-like of shape `(n, num_attributes)`): the model's attribute scores.
        ratings (array-like of shape `(n, num_attributes)`): the ratings, NaN where missing.
        attributes (`Sequence[str]`): the attribute names, in column order.

    Returns:
        `dict[str, float]`: `"{name}/mae"`, `"{name}/pearson"`, `"{name}/spearman"`, `"{name}/count"` per attribute,
        `"mae"`, `"pearson"`, `"spearman"` (means over the attributes where defined) and `"mse"`.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    ratings = np.asarray(ratings, dtype=np.float64)
    if predictions.shape != ratings.shape or predictions.ndim != 2 or predictions.shape[1] != len(attributes):
        raise ValueError(
            f"predictions {predictions.shape} and ratings {ratings.shape} must both be (n, {len(attributes)})"
        )
    observed = ~np.isnan(ratings)
    out: dict[str, float] = {}
    for k, name in enumerate(attributes):
        x, y = predictions[observed[:, k], k], ratings[observed[:, k], k]
        out[f"{name}/count"] = float(len(x))
        out[f"{name}/mae"] = float(np.mean(np.abs(x - y))) if len(x) else math.nan
        out[f"{name}/pearson"] = _correlation(stats.pearsonr, x, y)
        out[f"{name}/spearman"] = _correlation(stats.spearmanr, x, y)
    for metric in ("mae", "pearson", "spearman"):
        values = [out[f"{name}/{metric}"] for name in attributes if not math.isnan(out[f"{name}/{metric}"])]
        out[metric] = float(np.mean(values)) if values else math.nan
    errors = (predictions - ratings)[observed]
    out["mse"] = float(np.mean(errors**2)) if errors.size else math.nan
    return out


def combine_attributes(scores, weights: Sequence[float]) -> np.ndarray:
    """`scores @ weights`: the `(n,)` combined rewards of `(n, num_attributes)` attribute scores."""
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(weights):
        raise ValueError(f"scores {scores.shape} must be (n, {len(weights)}) for {len(weights)} weights")
    return scores @ weights


def combined_pairwise_accuracy(chosen_scores, rejected_scores, weights: Sequence[float]) -> dict[str, float]:
    """
    Accuracy of the combined reward on preference pairs: the fraction of pairs whose chosen response gets the
    higher `Σ w_k s_k`, a tie counting as half (neither order is preferred).

    Args:
        chosen_scores, rejected_scores (array-like of shape `(n, num_attributes)`): attribute scores of each side.
        weights (`Sequence[float]`): one weight per attribute.

    Returns:
        `dict[str, float]`: `"pairwise_accuracy"`, `"pairwise_margin"` (mean combined chosen - rejected) and
        `"pairwise_count"`.
    """
    chosen = combine_attributes(chosen_scores, weights)
    rejected = combine_attributes(rejected_scores, weights)
    if len(chosen) != len(rejected) or len(chosen) == 0:
        raise ValueError(f"need as many chosen as rejected rows, at least one; got {len(chosen)} and {len(rejected)}")
    wins = (chosen > rejected) + 0.5 * (chosen == rejected)
    return {
        "pairwise_accuracy": float(np.mean(wins)),
        "pairwise_margin": float(np.mean(chosen - rejected)),
        "pairwise_count": float(len(chosen)),
    }
