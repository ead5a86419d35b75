"""Bootstrap confidence intervals and the pairwise report: every pairwise metric of a preference set, with intervals.

The point metrics and their conventions (ties, calibration bins) are defined in `evaluation.metrics`.
"""

import inspect
import math
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import expit

from .metrics import (
    TIE_POLICIES,
    brier_score,
    check_choice,
    check_positive_int,
    length_baseline_accuracy,
    paired,
    pairwise_accuracy,
    pairwise_calibration_error,
    tie_rate,
    to_array,
    win_probability,
)

__all__ = ["bootstrap_ci", "pairwise_report"]

_BOOTSTRAP_METHODS = ("percentile", "basic", "bca")
# scipy 1.15 renamed `random_state` to `rng`; the floor in pyproject is 1.11.
_BOOTSTRAP_RNG_ARG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def bootstrap_ci(
    statistic: Callable[..., float],
    *samples: Any,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """
    Paired bootstrap confidence interval: rows are resampled together across `samples` (`scipy.stats.bootstrap` with
    `paired=True`), so `statistic(chosen, rejected)` sees matching pairs.

    Args:
        statistic (`Callable[..., float]`):
            Called as `statistic(*resampled_samples)`; must be defined on every resample.
        *samples (`array-like` of shape `(n,)`):
            One or more equal-length vectors.
        n_resamples (`int`, *optional*, defaults to `1000`):
            Number of bootstrap resamples.
        confidence_level (`float`, *optional*, defaults to `0.95`):
            Confidence level in `(0, 1)`.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the resampling generator.
        method (`str`, *optional*, defaults to `"percentile"`):
            `"percentile"`, `"basic"` or `"bca"`.

    Returns:
        `tuple[float, float]`: `(low, high)`. When every resample gives the same value (a single row, constant data)
        the interval is `(value, value)`; where BCa is otherwise undefined, the percentile interval is returned with a
        `RuntimeWarning`.
    """
    if not callable(statistic):
        raise ValueError(f"statistic must be callable, got {type(statistic).__name__}")
    if not samples:
        raise ValueError("samples is empty: pass at least one array after statistic")
    n_resamples = check_positive_int(n_resamples, "n_resamples")
    if not (isinstance(confidence_level, int | float) and 0 < confidence_level < 1):
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level!r}")
    method = check_choice(method.lower() if isinstance(method, str) else method, "method", _BOOTSTRAP_METHODS)
    arrays = [to_array(sample, f"samples[{i}]") for i, sample in enumerate(samples)]
    if any(array.size != arrays[0].size for array in arrays):
        raise ValueError(f"samples must have the same length, got {[array.size for array in arrays]}")
    value = float(statistic(*arrays))
    if not math.isfinite(value):
        raise ValueError(f"statistic returned {value} on the full samples")
    if arrays[0].size == 1:  # scipy needs two rows; one row can only resample to itself
        return value, value
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # handled below
        result = stats.bootstrap(
            arrays,
            statistic,
            n_resamples=n_resamples,
            vectorized=False,
            paired=True,
            confidence_level=confidence_level,
            method=method,
            **{_BOOTSTRAP_RNG_ARG: np.random.default_rng(seed)},
        )
    distribution = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    if not np.all(np.isfinite(distribution)):
        raise ValueError("statistic returned a non-finite value on some bootstrap resamples")
    if np.ptp(distribution) <= 1e-12 * max(1.0, abs(value)):  # degenerate: BCa would be NaN
        return value, value
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        warnings.warn(
            "the BCa interval is undefined for this statistic; returning the percentile interval",
            RuntimeWarning,
            stacklevel=2,
        )
        alpha = (1 - confidence_level) / 2
        low, high = np.quantile(distribution, [alpha, 1 - alpha])
    return float(low), float(high)


def pairwise_report(
    chosen: Any,
    rejected: Any,
    *,
    chosen_lengths: Any = None,
    rejected_lengths: Any = None,
    ties: str = "loss",
    length_ties: str = "half",
    n_bins: int = 10,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """
    All pairwise metrics of a reward model on a preference set, for logging or a JSON report.

    Args:
        chosen (`array-like` of shape `(n,)`):
            Rewards of the chosen completions.
        rejected (`array-like` of shape `(n,)`):
            Rewards of the rejected completions.
        chosen_lengths (`array-like` of shape `(n,)` or `None`, *optional*, defaults to `None`):
            Lengths of the chosen completions; with `rejected_lengths`, adds `"length_baseline_accuracy"`.
        rejected_lengths (`array-like` of shape `(n,)` or `None`, *optional*, defaults to `None`):
            Lengths of the rejected completions.
        ties (`str`, *optional*, defaults to `"loss"`):
            Tie policy of the model's accuracy, one of `TIE_POLICIES`.
        length_ties (`str`, *optional*, defaults to `"half"`):
            Tie policy of the length baseline: equal lengths are coin flips by default (see
            [`length_baseline_accuracy`]); its tie rate is reported as `"length_tie_rate"`.
        n_bins (`int`, *optional*, defaults to `10`):
            Number of calibration bins.
        bootstrap (`int`, *optional*, defaults to `0`):
            Number of bootstrap resamples; when > 0, adds `"<metric>_ci"` = `[low, high]` (95% percentile) for
            `accuracy`, `win_probability`, `ece` and `brier`. Under `ties="exclude"` the accuracy is resampled over
            the non-tied pairs only, so that no resample is undefined.
        seed (`int`, *optional*, defaults to `0`):
            Bootstrap seed; every metric uses the same resamples.

    Returns:
        `dict[str, Any]`: `"count"`, `"accuracy"`, `"tie_rate"`, `"mean_margin"` (mean of `chosen - rejected`),
        `"win_probability"`, `"ece"`, `"brier"` (of `sigmoid(chosen - rejected)` against 1), optional
        `"length_baseline_accuracy"` with `"length_tie_rate"`, and the optional `"*_ci"` entries.
    """
    a, b = paired(chosen, rejected, ("chosen", "rejected"))
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("chosen_lengths and rejected_lengths must be given together")
    check_choice(length_ties, "length_ties", TIE_POLICIES)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative integer (number of resamples), got {bootstrap!r}")
    metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "accuracy": partial(pairwise_accuracy, ties=ties),
        "win_probability": win_probability,
        "ece": partial(pairwise_calibration_error, n_bins=n_bins),
        "brier": lambda x, y: brier_score(expit(x - y), np.ones_like(x)),
    }
    report: dict[str, Any] = {"count": a.size, "tie_rate": tie_rate(a, b), "mean_margin": float(np.mean(a - b))}
    report.update({name: metric(a, b) for name, metric in metrics.items()})
    if chosen_lengths is not None:
        if to_array(chosen_lengths, "chosen_lengths").size != a.size:
            raise ValueError(f"chosen_lengths must have one length per pair ({a.size})")
        report["length_baseline_accuracy"] = length_baseline_accuracy(
            chosen_lengths, rejected_lengths, ties=length_ties
        )
        report["length_tie_rate"] = tie_rate(chosen_lengths, rejected_lengths)
    if bootstrap:
        for name, metric in metrics.items():
            rows = a != b if name == "accuracy" and ties == "exclude" else slice(None)  # no all-tie resample
            report[f"{name}_ci"] = list(bootstrap_ci(metric, a[rows], b[rows], n_resamples=bootstrap, seed=seed))
    return report
