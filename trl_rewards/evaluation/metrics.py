"""Metrics for evaluating reward models: pairwise accuracy, win rate, calibration, rank correlation, statistics.

Every function is pure: it takes scores as lists, NumPy arrays or tensors (moved to CPU and detached), validates them
and returns plain Python floats, tuples or dicts. A score vector is 1-D, one value per row; a `(n, 1)` column (the
output of a `num_labels=1` head) is accepted and flattened. Empty inputs, mismatched lengths and non-finite values
raise `ValueError` naming the argument and the first offending index, e.g. `"chosen[3] is nan"`.

**Ties.** A pair is a tie when `|chosen - rejected| <= tie_tolerance`. Reward models trained with a Bradley-Terry loss
output ties mostly when they are degenerate (a collapsed head, identical inputs), so the default policy is strict:

- `"loss"` (default): a tie counts as a failure. A constant model scores 0.0, so it can never look good.
- `"half"`: a tie counts 0.5, the expected accuracy of breaking it with a coin flip. A constant model scores 0.5.
- `"exclude"`: ties are dropped from numerator and denominator; report `tie_rate` next to it, since a model that ties
  on 99% of pairs can reach 1.0. If every pair is a tie the accuracy is undefined and a `ValueError` is raised.

**Calibration.** A preference probability `p = P(chosen is better)` is read as a binary classifier: it predicts 1 when
`p > 0.5`, with confidence `max(p, 1 - p)`, and is correct when the prediction equals the outcome. `p == 0.5` is a
tie: confidence 0.5 and always counted incorrect (consistent with `ties="loss"`). Confidences fall in `[0.5, 1]`,
which is split into `n_bins` equal-width bins `[0.5, e_1], (e_1, e_2], ..., (e_{n-1}, 1]`. The expected calibration
error is `ECE = sum_b (n_b / n) * |accuracy_b - confidence_b|` (Guo et al., 2017); it lies in `[0, 1]`: 0 when
every bin's accuracy equals its confidence, up to 1 when predictions of confidence ~1 are all wrong. For a reward
model the probability is `sigmoid(chosen - rejected)` (the Bradley-Terry model) and the outcome is 1 for every pair.
"""

import math
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import expit

__all__ = [
    "TIE_POLICIES",
    "brier_score",
    "calibration_curve",
    "expected_calibration_error",
    "length_baseline_accuracy",
    "pairwise_accuracy",
    "pairwise_calibration_error",
    "pairwise_probabilities",
    "rank_correlation",
    "reward_statistics",
    "tie_rate",
    "win_probability",
    "win_rate",
]

TIE_POLICIES = ("loss", "half", "exclude")
_RANK_METHODS = ("spearman", "kendall")


def to_array(values: Any, name: str) -> np.ndarray:
    """Converts `values` to a finite, non-empty float64 vector of shape `(n,)` or raises a `ValueError`."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch; double() also widens bf16
        values = values.detach().cpu().double().numpy()
    raw = np.asarray(values)
    if raw.dtype.kind not in "biufO":
        raise ValueError(f"{name} must be numeric, got dtype {raw.dtype}")
    try:
        array = raw.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric: {error}") from error
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per row), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is {array[bad[0]]}; every value must be finite")
    return array


def paired(first: Any, second: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_array(first, names[0]), to_array(second, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {a.size} and {b.size}")
    return a, b


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_probabilities(probabilities: Any, outcomes: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = paired(probabilities, outcomes, ("probabilities", "outcomes"))
    outside = np.flatnonzero((p < 0) | (p > 1))
    if outside.size:
        raise ValueError(f"probabilities[{outside[0]}] is {p[outside[0]]}, outside [0, 1]")
    not_binary = np.flatnonzero((y != 0) & (y != 1))
    if not_binary.size:
        raise ValueError(f"outcomes[{not_binary[0]}] is {y[not_binary[0]]}; outcomes must be 0 or 1")
    return p, y


def _check_tie_tolerance(tie_tolerance: Any) -> float:
    number = isinstance(tie_tolerance, int | float | np.number) and not isinstance(tie_tolerance, bool)
    if not (number and math.isfinite(tie_tolerance) and tie_tolerance >= 0):
        raise ValueError(f"tie_tolerance must be a finite number >= 0, got {tie_tolerance!r}")
    return float(tie_tolerance)


def _accuracy(first: Any, second: Any, names: tuple[str, str], ties: str, tie_tolerance: Any) -> float:
    """Shared by `pairwise_accuracy`, `win_rate` and `length_baseline_accuracy`."""
    check_choice(ties, "ties", TIE_POLICIES)
    tie_tolerance = _check_tie_tolerance(tie_tolerance)
    a, b = paired(first, second, names)
    margin = a - b
    wins = np.count_nonzero(margin > tie_tolerance)
    n_ties = np.count_nonzero(np.abs(margin) <= tie_tolerance)
    if ties == "loss":
        return wins / a.size
    if ties == "half":
        return (wins + 0.5 * n_ties) / a.size
    if n_ties == a.size:
        raise ValueError(
            f"every pair of {names[0]} and {names[1]} is a tie (|difference| <= tie_tolerance={tie_tolerance}), so "
            "the accuracy is undefined under ties='exclude'; use ties='loss' or ties='half'"
        )
    return wins / (a.size - n_ties)


def pairwise_accuracy(chosen: Any, rejected: Any, *, ties: str = "loss", tie_tolerance: float = 0.0) -> float:
    """
    Fraction of preference pairs where the reward model scores the chosen completion above the rejected one.

    Args:
        chosen (`array-like` of shape `(n,)`):
            Rewards of the chosen completions.
        rejected (`array-like` of shape `(n,)`):
            Rewards of the rejected completions.
        ties (`str`, *optional*, defaults to `"loss"`):
            Tie policy, one of `TIE_POLICIES` (see the module docstring): a tie counts 0 (`"loss"`), 0.5 (`"half"`)
            or is left out (`"exclude"`, which raises a `ValueError` when every pair is a tie).
        tie_tolerance (`float`, *optional*, defaults to `0.0`):
            A pair is a tie when `|chosen - rejected| <= tie_tolerance`.

    Returns:
        `float`: Accuracy in `[0, 1]`.
    """
    return _accuracy(chosen, rejected, ("chosen", "rejected"), ties, tie_tolerance)


def win_rate(model_scores: Any, reference_scores: Any, *, ties: str = "loss", tie_tolerance: float = 0.0) -> float:
    """
    Fraction of prompts where a judge (reward model) prefers the model's completion over the reference completion.
    The same computation as `pairwise_accuracy`, with `model_scores` as "chosen".

    Args:
        model_scores (`array-like` of shape `(n,)`):
            Judge scores of the evaluated model's completions, one per prompt.
        reference_scores (`array-like` of shape `(n,)`):
            Judge scores of the reference completions for the same prompts.
        ties (`str`, *optional*, defaults to `"loss"`):
            Tie policy, one of `TIE_POLICIES`.
        tie_tolerance (`float`, *optional*, defaults to `0.0`):
            A pair is a tie when `|model - reference| <= tie_tolerance`.

    Returns:
        `float`: Win rate in `[0, 1]`.
    """
    return _accuracy(model_scores, reference_scores, ("model_scores", "reference_scores"), ties, tie_tolerance)


def length_baseline_accuracy(chosen_lengths: Any, rejected_lengths: Any, *, ties: str = "half") -> float:
    """
    Accuracy of the "longer completion wins" baseline. A reward model that does not beat it may have learned length.

    Equal lengths are coin flips by default (`ties="half"`): the baseline has no preference there, and counting them
    as losses would print 0.0 on data whose pairs all have the same length, a baseline any model "beats". Report
    `tie_rate(chosen_lengths, rejected_lengths)` beside it.

    Args:
        chosen_lengths (`array-like` of shape `(n,)`):
            Lengths (tokens or characters, non-negative) of the chosen completions.
        rejected_lengths (`array-like` of shape `(n,)`):
            Lengths of the rejected completions.
        ties (`str`, *optional*, defaults to `"half"`):
            Tie policy for equal lengths, one of `TIE_POLICIES`.

    Returns:
        `float`: Baseline accuracy in `[0, 1]`.
    """
    names = ("chosen_lengths", "rejected_lengths")
    for lengths, name in zip(paired(chosen_lengths, rejected_lengths, names), names, strict=True):
        negative = np.flatnonzero(lengths < 0)
        if negative.size:
            raise ValueError(f"{name}[{negative[0]}] is {lengths[negative[0]]}; lengths must be >= 0")
    return _accuracy(chosen_lengths, rejected_lengths, names, ties, 0.0)


def tie_rate(chosen: Any, rejected: Any, *, tie_tolerance: float = 0.0) -> float:
    """
    Fraction of pairs with `|chosen - rejected| <= tie_tolerance`.

    Args:
        chosen (`array-like` of shape `(n,)`):
            Rewards of the chosen completions.
        rejected (`array-like` of shape `(n,)`):
            Rewards of the rejected completions.
        tie_tolerance (`float`, *optional*, defaults to `0.0`):
            Largest absolute difference counted as a tie.

    Returns:
        `float`: Tie rate in `[0, 1]`.
    """
    tie_tolerance = _check_tie_tolerance(tie_tolerance)
    a, b = paired(chosen, rejected, ("chosen", "rejected"))
    return float(np.mean(np.abs(a - b) <= tie_tolerance))


def pairwise_probabilities(chosen: Any, rejected: Any) -> np.ndarray:
    """
    Bradley-Terry preference probabilities `sigmoid(chosen - rejected)`, computed without overflow.

    Args:
        chosen (`array-like` of shape `(n,)`):
            Rewards of the chosen completions.
        rejected (`array-like` of shape `(n,)`):
            Rewards of the rejected completions.

    Returns:
        `np.ndarray` of shape `(n,)`: `P(chosen is better)` for each pair.
    """
    a, b = paired(chosen, rejected, ("chosen", "rejected"))
    return expit(a - b)


def win_probability(model_scores: Any, reference_scores: Any) -> float:
    """
    Mean Bradley-Terry probability that the model's completion beats the reference: `mean(sigmoid(model - ref))`.
    Unlike `win_rate` it is smooth: a tie contributes 0.5 and a narrow loss almost as much.

    Args:
        model_scores (`array-like` of shape `(n,)`):
            Reward-model scores of the evaluated model's completions.
        reference_scores (`array-like` of shape `(n,)`):
            Scores of the reference completions for the same prompts.

    Returns:
        `float`: Win probability in `[0, 1]`.
    """
    a, b = paired(model_scores, reference_scores, ("model_scores", "reference_scores"))
    return float(np.mean(expit(a - b)))


def _calibration_bins(probabilities: Any, outcomes: Any, n_bins: int) -> tuple[np.ndarray, ...]:
    """Returns per-bin `(edges, confidence_sum, correct_sum, count)` for the definition in the module docstring."""
    p, y = _check_probabilities(probabilities, outcomes)
    correct = ((p > 0.5) == (y == 1)) & (p != 0.5)
    return bin_by_confidence(np.maximum(p, 1 - p), correct.astype(np.float64), n_bins)


def bin_by_confidence(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    """
    The binning of the module docstring: per-bin `(edges, confidence_sum, correct_sum, count)` of confidences in
    `[0.5, 1]` and their (possibly fractional) correctness, over `n_bins` equal-width right-closed bins.
    """
    n_bins = check_positive_int(n_bins, "n_bins")
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")  # right-closed bins, the first one closed
    count = np.bincount(index, minlength=n_bins)
    confidence_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(index, weights=correct, minlength=n_bins)
    return edges, confidence_sum, correct_sum, count


def expected_calibration_error(probabilities: Any, outcomes: Any, *, n_bins: int = 10) -> float:
    """
    Expected calibration error of binary probabilities, as defined in the module docstring.

    Args:
        probabilities (`array-like` of shape `(n,)`):
            Predicted `P(outcome = 1)`, each in `[0, 1]`.
        outcomes (`array-like` of shape `(n,)`):
            True outcomes, each 0 or 1.
        n_bins (`int`, *optional*, defaults to `10`):
            Number of equal-width confidence bins over `[0.5, 1]`.

    Returns:
        `float`: ECE in `[0, 1]`; 0 is perfectly calibrated. It exceeds 0.5 when confident predictions are wrong
        (confidence near 1, accuracy near 0 gives an ECE near 1).
    """
    _, confidence_sum, correct_sum, count = _calibration_bins(probabilities, outcomes, n_bins)
    return float(np.sum(np.abs(correct_sum - confidence_sum)) / np.sum(count))


def pairwise_calibration_error(chosen: Any, rejected: Any, *, n_bins: int = 10) -> float:
    """
    ECE of the Bradley-Terry probabilities `sigmoid(chosen - rejected)` against the outcome "chosen is better" (1).

    Args:
        chosen (`array-like` of shape `(n,)`):
            Rewards of the chosen completions.
        rejected (`array-like` of shape `(n,)`):
            Rewards of the rejected completions.
        n_bins (`int`, *optional*, defaults to `10`):
            Number of equal-width confidence bins over `[0.5, 1]`.

    Returns:
        `float`: ECE in `[0, 1]` (near 1 when `rejected` is confidently scored higher on every pair).
    """
    probabilities = pairwise_probabilities(chosen, rejected)
    return expected_calibration_error(probabilities, np.ones_like(probabilities), n_bins=n_bins)


def calibration_curve(probabilities: Any, outcomes: Any, *, n_bins: int = 10) -> dict[str, list]:
    """
    Reliability-diagram data for the binning of `expected_calibration_error`.

    Args:
        probabilities (`array-like` of shape `(n,)`):
            Predicted `P(outcome = 1)`, each in `[0, 1]`.
        outcomes (`array-like` of shape `(n,)`):
            True outcomes, each 0 or 1.
        n_bins (`int`, *optional*, defaults to `10`):
            Number of equal-width confidence bins over `[0.5, 1]`.

    Returns:
        `dict[str, list]`: Lists with one entry per non-empty bin, in increasing confidence: `"bin_lower"`,
        `"bin_upper"` (edges), `"confidence"` (mean confidence), `"accuracy"` (fraction correct) and `"count"`.
    """
    edges, confidence_sum, correct_sum, count = _calibration_bins(probabilities, outcomes, n_bins)
    used = np.flatnonzero(count)
    return {
        "bin_lower": edges[used].tolist(),
        "bin_upper": edges[used + 1].tolist(),
        "confidence": (confidence_sum[used] / count[used]).tolist(),
        "accuracy": (correct_sum[used] / count[used]).tolist(),
        "count": count[used].tolist(),
    }


def brier_score(probabilities: Any, outcomes: Any) -> float:
    """
    Brier score `mean((probability - outcome) ** 2)`.

    Args:
        probabilities (`array-like` of shape `(n,)`):
            Predicted `P(outcome = 1)`, each in `[0, 1]`.
        outcomes (`array-like` of shape `(n,)`):
            True outcomes, each 0 or 1.

    Returns:
        `float`: Brier score in `[0, 1]`; a constant 0.5 scores 0.25.
    """
    p, y = _check_probabilities(probabilities, outcomes)
    return float(np.mean((p - y) ** 2))


def rank_correlation(scores: Any, ranks: Any, groups: Any = None, *, method: str = "spearman") -> dict[str, Any]:
    """
    Rank correlation between reward-model scores and gold ranks or ratings, per prompt group and averaged.

    Args:
        scores (`array-like` of shape `(n,)`):
            Reward-model scores, one per response.
        ranks (`array-like` of shape `(n,)`):
            Gold ratings or ranks where **larger is better**; negate ranks where 1 is the best.
        groups (`array-like` of shape `(n,)` or `None`, *optional*, defaults to `None`):
            Prompt ids (any hashable). The correlation is computed within each group and the groups are averaged with
            equal weight. `None` computes one correlation over all responses.
        method (`str`, *optional*, defaults to `"spearman"`):
            `"spearman"` (`scipy.stats.spearmanr`) or `"kendall"` (`scipy.stats.kendalltau`, tau-b).

    Returns:
        `dict[str, Any]`: `"correlation"` (mean over used groups), `"n_groups"` (groups used) and `"n_skipped"` (groups
        with fewer than 2 responses or constant scores or ranks, where the correlation is undefined).
    """
    check_choice(method, "method", _RANK_METHODS)
    x, y = paired(scores, ranks, ("scores", "ranks"))
    if groups is None:
        members = [np.arange(x.size)]
    else:
        if hasattr(groups, "detach"):
            groups = groups.detach().cpu().numpy()
        keys = np.asarray(groups)
        if keys.ndim != 1 or keys.size != x.size:
            raise ValueError(f"groups must be 1-D with one id per score ({x.size}), got shape {keys.shape}")
        if keys.dtype.kind == "f" and not np.all(np.isfinite(keys)):
            bad = np.flatnonzero(~np.isfinite(keys))[0]
            raise ValueError(f"groups[{bad}] is {keys[bad]}; group ids must be finite")
        index: dict[Any, list[int]] = {}
        for i, key in enumerate(keys.tolist()):
            index.setdefault(key, []).append(i)
        members = [np.asarray(rows) for rows in index.values()]
    correlate = stats.spearmanr if method == "spearman" else stats.kendalltau
    values = [
        float(correlate(x[rows], y[rows]).statistic)
        for rows in members
        if rows.size >= 2 and np.ptp(x[rows]) > 0 and np.ptp(y[rows]) > 0
    ]
    if not values:
        raise ValueError(
            f"rank correlation is undefined for all {len(members)} group(s): each has fewer than 2 responses or "
            "constant scores or ranks"
        )
    return {"correlation": float(np.mean(values)), "n_groups": len(values), "n_skipped": len(members) - len(values)}


def reward_statistics(scores: Any) -> dict[str, float | int]:
    """
    Summary statistics of a reward distribution.

    Args:
        scores (`array-like` of shape `(n,)`):
            Rewards.

    Returns:
        `dict[str, float | int]`: `"mean"`, `"std"` (population, `ddof=0`, so a single score has std 0),
        `"min"`, `"max"` and `"count"`.
    """
    x = to_array(scores, "scores")
    return {"count": x.size, **{key: float(getattr(x, key)()) for key in ("mean", "std", "min", "max")}}
