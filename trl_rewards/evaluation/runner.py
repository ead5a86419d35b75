"""Runs a categorized evaluation of a reward model (or an ensemble, or any TRL reward function) on preference pairs.

**What is scored.** Each row's chosen and rejected completion, with the row's prompt. Rows without a `prompt` column
(HH-RLHF: the dialogue up to the answer is shared) are split with TRL's `maybe_extract_prompt`; the scorer sees the
same `prompt + completion` either way. Any object with `score(prompts, completions) -> list[float]` can be evaluated
([`RewardScorer`], [`CachedScorer`]); `as_scorer` wraps a TRL reward function `fn(prompts, completions, **kw)`.

**Aggregation** (the scheme of RewardBench, Lambert et al. 2024):

1. per subset (the values of `subset_column`): pairwise accuracy under the tie policy, with the length baseline;
2. per category: the weighted mean of its subsets' accuracies, `sum_s w_s acc_s / sum_s w_s`. The weights are the
   subsets' example counts when a category lists its subsets (`{"chat": ["a", "b"]}`, which equals the accuracy over
   the category's pooled pairs), or the given numbers (`{"safety": {"c": 1.0, "d": 2.0}}`);
3. final score: the unweighted mean of the categories.

Without `category_weights` every subset is its own category, so the final score is the macro-average over subsets;
without `subset_column` the final score is the overall accuracy. Subsets that no category lists are reported and
left out of the final score.

**Length baseline.** "The longer completion wins", with lengths of the completion alone (the prompt is shared):
tokens of the scorer's `tokenizer` when it has one, characters otherwise. Not `RewardScorer.encode`, which truncates
at `max_length` (two long answers would tie) and counts truncations. Equal lengths count as coin flips (0.5),
whatever `ties` says for the model, and `length_tie_rate` is reported beside the baseline.

**Labels.** Rows may carry a soft `label` p = P(chosen is better) (TRL's format; a flipped pair has label 0). The
accuracy, calibration, Brier score, win probability and length baseline are then measured against each pair's label,
as defined in `evaluation.preference_labels` (a pair labelled 0.5 counts as a tie); without the column every label
is 1, "chosen wins".
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..data.preference import PRETOKENIZED, validate_preference_rows
from ..rewards.reward_calls import run_blocking
from . import metrics
from .pairwise_report import pairwise_report
from .preference_labels import labelled_calibration_curve, labelled_pairwise_metrics, oriented_pairs

logger = logging.getLogger(__name__)

AGGREGATION = (
    "per-subset accuracy; category score = mean of its subsets' accuracies weighted by example counts unless "
    "weights are given; final score = mean of the categories"
)
NO_SUBSETS = "no subsets: final score = accuracy over all pairs"


class RewardFunctionScorer:
    """
    Adapter from TRL's reward-function contract, `fn(prompts, completions, **kwargs) -> list[float | None]`, to the
    scorer interface `score(prompts, completions) -> list[float]`.

    Args:
        reward_function (`Callable`): e.g. a `RewardEnsemble` or any function GRPO accepts as a reward.

    A `None` (TRL's "not applicable") or non-finite reward is an error naming the row, since every evaluated pair
    needs both scores. A [`RewardEnsemble`] with `normalization="group"` is rejected: it z-scores runs of
    consecutive completions (GRPO's groups), which a set of pairs does not have.
    """

    def __init__(self, reward_function):
        if not callable(reward_function):
            raise TypeError(f"reward_function must be callable, got {type(reward_function).__name__}")
        if getattr(reward_function, "normalization", None) == "group":
            raise ValueError(
                f"{reward_function!r} z-scores groups of consecutive completions; evaluate it with "
                "normalization='batch' (statistics of the whole call) or 'none'"
            )
        self.reward_function = reward_function
        self.__name__ = getattr(reward_function, "__name__", type(reward_function).__name__)

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        rewards = self.reward_function(prompts=list(prompts), completions=list(completions))
        if inspect.isawaitable(rewards):  # an async reward function (a remote one, an ensemble holding one)
            rewards = run_blocking(rewards)
        if len(rewards) != len(completions):
            raise ValueError(f"reward function {self.__name__!r} returned {len(rewards)} rewards for {len(prompts)}")
        out = []
        for row, reward in enumerate(rewards):
            if reward is None:
                error = ValueError(
                    f"reward function {self.__name__!r} returned None for row {row} (completion "
                    f"{_text(completions[row])[:60]!r}); every evaluated completion needs a score"
                )
                error.row = row
                raise error
            if (
                isinstance(reward, bool)
                or not isinstance(reward, int | float | np.number)
                or not math.isfinite(reward)
            ):
                raise ValueError(f"reward function {self.__name__!r} returned {reward!r} for row {row}")
            out.append(float(reward))
        return out

    def __repr__(self) -> str:
        return f"RewardFunctionScorer({self.__name__})"


def as_scorer(obj):
    """
    Returns `obj` if it has a `score(prompts, completions)` method, else wraps a TRL reward function
    (a callable) in a [`RewardFunctionScorer`].
    """
    if callable(getattr(obj, "score", None)):
        return obj
    if callable(obj):
        return RewardFunctionScorer(obj)
    raise TypeError(
        f"{type(obj).__name__} is neither a scorer (no score(prompts, completions) method) nor a reward function"
    )


def _text(value: Any) -> str:
    """The text of a completion: a string, or the concatenated contents of a list of chat messages."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return "".join(str(message.get("content", "")) for message in value)


def completion_lengths(scorer, completions: Sequence[Any]) -> tuple[list[int], str]:
    """Lengths for the length baseline: `(lengths, unit)`, in tokens of `scorer.tokenizer` or else characters."""
    texts = [_text(c) for c in completions]
    tokenizer = getattr(scorer, "tokenizer", None)
    if callable(tokenizer):
        # verbose=False: lengths beyond the model's limit are the point here, not a problem to warn about
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [len(i) for i in ids], "tokens"
    return [len(t) for t in texts], "characters"


def aggregate_categories(
    subsets: Mapping[str, Mapping[str, Any]], category_weights: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """
    Category scores and the final score from per-subset reports (module docstring, "Aggregation").

    Args:
        subsets (`Mapping[str, Mapping]`): subset name to a report with `"accuracy"` and `"count"`.
        category_weights (`Mapping[str, Sequence[str] | Mapping[str, float]]`, *optional*): category name to its
            subsets (weights = example counts) or to `{subset: weight}`. `None`: each subset is its own category.

    Returns:
        `dict`: `"categories"` (name to `{"score", "weights", "count"}`), `"final_score"` and
        `"uncategorized"` (subsets no category lists).
    """
    if not subsets:
        raise ValueError("no subsets to aggregate")
    if category_weights is None:
        category_weights = {name: [name] for name in subsets}
    if not isinstance(category_weights, Mapping) or not category_weights:
        raise ValueError(
            f"category_weights must be a non-empty mapping of category to subsets, got {category_weights!r}"
        )
    categories: dict[str, Any] = {}
    listed: set[str] = set()
    for category, members in category_weights.items():
        if isinstance(members, str):
            raise ValueError(f"category {category!r}: list its subsets (e.g. [{members!r}]), not a bare string")
        if isinstance(members, Mapping):
            weights = {str(s): w for s, w in members.items()}
        elif isinstance(members, Sequence):
            weights = {str(s): subsets[s]["count"] if s in subsets else None for s in members}
        else:
            raise ValueError(f"category {category!r}: expected a list of subsets or a {{subset: weight}} mapping")
        if not weights:
            raise ValueError(f"category {category!r} lists no subsets")
        missing = sorted(s for s in weights if s not in subsets)
        if missing:
            raise ValueError(
                f"category {category!r} lists subsets absent from the data: {missing}; have {sorted(subsets)}"
            )
        for subset, weight in weights.items():
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not math.isfinite(weight)
                or weight < 0
            ):
                raise ValueError(
                    f"category {category!r}: weight of {subset!r} must be a finite number >= 0, got {weight!r}"
                )
        total = sum(weights.values())
        if total <= 0:
            raise ValueError(f"category {category!r}: its weights sum to 0")
        score = sum(w * subsets[s]["accuracy"] for s, w in weights.items()) / total
        count = sum(subsets[s]["count"] for s in weights)
        categories[str(category)] = {"score": float(score), "weights": weights, "count": count}
        listed.update(weights)
    final = float(np.mean([c["score"] for c in categories.values()]))
    return {"categories": categories, "final_score": final, "uncategorized": sorted(set(subsets) - listed)}


def _length_baseline(chosen_len, rejected_len) -> float:
    """`length_baseline_accuracy` with ties as coin flips (0.5), whatever the model's tie policy: a trivial rule
    that cannot tell two equal lengths apart guesses; counted as losses, equal-length data would print 0.000 and
    read as if "prefer the longer" were always wrong. Its tie rate is reported beside it."""
    return metrics.length_baseline_accuracy(chosen_len, rejected_len, ties="half")


def _subset_report(chosen, rejected, chosen_len, rejected_len, labels, name: str, **kwargs) -> dict[str, Any]:
    try:
        report = pairwise_report(chosen, rejected, **kwargs)
        if labels is not None:
            report.update(labelled_pairwise_metrics(chosen, rejected, labels, **kwargs))
            chosen_len, rejected_len = (v.tolist() for v in oriented_pairs(chosen_len, rejected_len, labels))
        report["length_baseline_accuracy"] = _length_baseline(chosen_len, rejected_len)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error
    report["length_tie_rate"] = metrics.tie_rate(chosen_len, rejected_len)
    return report


def scores_depend_on_batch(scorer) -> bool:
    """
    Whether the score of one text depends on the other texts of the same call: true for a [`RewardEnsemble`] that
    normalizes (`"batch"` z-scores each call, `"running"` updates its statistics). Such scores are only comparable
    within one call, so they are never cached and the pairs they compare are scored together.
    """
    function = getattr(scorer, "reward_function", scorer)
    return getattr(function, "normalization", "none") != "none"


def _score_pairs(scorer, prompts: list, chosen: list, rejected: list) -> tuple[list[float], list[float]]:
    """Both sides in one call (2n texts), so that a batch-normalizing scorer puts them on one scale."""
    n = len(prompts)
    try:
        scores = scorer.score(prompts * 2, chosen + rejected)
    except ValueError as error:
        row = getattr(error, "row", None)
        where = "" if row is None else f" (the {'chosen' if row < n else 'rejected'} completion of row {row % n})"
        raise ValueError(f"scoring the pairs{where}: {error}") from error
    if len(scores) != 2 * n:
        raise ValueError(f"the scorer returned {len(scores)} scores for {2 * n} completions")
    scores = [float(s) for s in scores]
    return scores[:n], scores[n:]


def evaluate_preferences(
    scorer,
    dataset,
    *,
    subset_column: str | None = None,
    category_weights: Mapping[str, Any] | None = None,
    ties: str = "loss",
    n_bins: int = 10,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """
    Evaluates a scorer on preference pairs: overall metrics, per-subset accuracy, category averages.

    Args:
        scorer: anything with `score(prompts, completions) -> list[float]`, or a TRL reward function (see `as_scorer`).
        dataset ([`~datasets.Dataset`] or `list[dict]`): preference rows, implicit or explicit prompt, standard or
            conversational (pre-tokenized rows are rejected: scorers take text), optionally with a soft `label`
            (module docstring, "Labels").
        subset_column (`str`, *optional*): column naming each row's subset (RewardBench's `"subset"`).
        category_weights (`Mapping`, *optional*): categories, see `aggregate_categories`; needs `subset_column`.
        ties (`str`, *optional*, defaults to `"loss"`): tie policy of every accuracy, one of `metrics.TIE_POLICIES`.
        n_bins (`int`, *optional*, defaults to `10`): calibration bins.
        bootstrap (`int`, *optional*, defaults to `0`): bootstrap resamples for 95% intervals (0: none).
        seed (`int`, *optional*, defaults to `0`): bootstrap seed.

    Returns:
        `dict`: `"overall"` (`pairwise_report.pairwise_report` plus `"length_tie_rate"` and `"calibration_curve"`),
        `"subsets"` (name to its report), `"categories"`, `"final_score"`, `"uncategorized"`, `"config"`,
        `"n_truncated"` (sequences the scorer truncated, when it counts them; a [`CachedScorer`] counts only those
        it computed) and `"scores"` (per row: chosen and rejected scores and lengths, subset, label or `None`).

    A single pair, all ties or constant scores give documented values (e.g. accuracy 0 under `ties="loss"`, a
    `(value, value)` interval for one pair); under `ties="exclude"` a set whose scores all tie raises a `ValueError`
    naming it, while a set whose lengths all tie gets a NaN `length_baseline_accuracy`.
    """
    from datasets import Dataset
    from trl.data_utils import maybe_extract_prompt

    if ties not in metrics.TIE_POLICIES:
        raise ValueError(f"ties must be one of {metrics.TIE_POLICIES}, got {ties!r}")
    if isinstance(dataset, list):
        dataset = Dataset.from_list(dataset)
    if subset_column is not None and subset_column not in dataset.column_names:
        raise ValueError(f"subset_column {subset_column!r} is not a column; columns are {dataset.column_names}")
    if category_weights is not None and subset_column is None:
        raise ValueError("category_weights groups subsets, so it needs subset_column")
    if validate_preference_rows(dataset) == PRETOKENIZED:
        raise ValueError("pre-tokenized rows (chosen_ids/rejected_ids) cannot be evaluated: scorers take text")
    subset_names: list[str] | None = None
    groups: dict[str, list[int]] = {}
    if subset_column is not None:  # checked before any scoring, categories included
        subset_names = []
        for row, value in enumerate(dataset[subset_column]):
            if value is None or (isinstance(value, str) and not value):
                raise ValueError(f'row {row}: "{subset_column}" is empty; every row needs a subset')
            subset_names.append(str(value))
            groups.setdefault(subset_names[-1], []).append(row)
        aggregate_categories(
            {name: {"accuracy": 0.0, "count": len(i)} for name, i in groups.items()}, category_weights
        )
    scorer = as_scorer(scorer)
    columns = ["chosen", "rejected"] + (["prompt"] if "prompt" in dataset.column_names else [])
    data = dataset.select_columns(columns).to_dict()
    rows = [maybe_extract_prompt({k: data[k][i] for k in columns}) for i in range(len(dataset))]
    prompts = [row.get("prompt") for row in rows]
    truncated_before = getattr(scorer, "n_truncated", None)
    chosen, rejected = _score_pairs(
        scorer, prompts, [row["chosen"] for row in rows], [row["rejected"] for row in rows]
    )
    chosen_len, unit = completion_lengths(scorer, [row["chosen"] for row in rows])
    rejected_len, _ = completion_lengths(scorer, [row["rejected"] for row in rows])
    labels = [float(p) for p in dataset["label"]] if "label" in dataset.column_names else None

    options = {"ties": ties, "n_bins": n_bins, "bootstrap": bootstrap, "seed": seed}
    overall = _subset_report(chosen, rejected, chosen_len, rejected_len, labels, "all pairs", **options)
    if labels is None:
        probabilities = metrics.pairwise_probabilities(chosen, rejected)
        curve = metrics.calibration_curve(probabilities, np.ones_like(probabilities), n_bins=n_bins)
    else:
        curve = labelled_calibration_curve(chosen, rejected, labels, n_bins=n_bins)
    overall["calibration_curve"] = curve

    subsets: dict[str, Any] = {}
    aggregated = {"categories": {}, "final_score": overall["accuracy"], "uncategorized": []}
    if subset_column is not None:
        for name, index in sorted(groups.items()):
            pick = lambda values, index=index: [values[i] for i in index]  # noqa: E731
            subset_labels = None if labels is None else pick(labels)
            subsets[name] = _subset_report(
                pick(chosen),
                pick(rejected),
                pick(chosen_len),
                pick(rejected_len),
                subset_labels,
                f"subset {name!r}",
                **options,
            )
        aggregated = aggregate_categories(subsets, category_weights)
        if aggregated["uncategorized"]:
            logger.warning("subsets in no category (left out of the final score): %s", aggregated["uncategorized"])

    n_truncated = None
    if truncated_before is not None:
        n_truncated = scorer.n_truncated - truncated_before
    return {
        "final_score": aggregated["final_score"],
        "overall": overall,
        "categories": aggregated["categories"],
        "subsets": subsets,
        "uncategorized": aggregated["uncategorized"],
        "n_truncated": n_truncated,
        "config": {
            **options,
            "subset_column": subset_column,
            "length_unit": unit,
            "aggregation": AGGREGATION if subsets else NO_SUBSETS,
        },
        "scores": {
            "chosen": chosen,
            "rejected": rejected,
            "chosen_length": chosen_len,
            "rejected_length": rejected_len,
            "subset": subset_names,
            "label": labels,
        },
    }
