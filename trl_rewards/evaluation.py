"""Categorized evaluation of a reward model (or an ensemble, or any TRL reward function) on preference pairs.

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
at `max_length` (two long answers would tie) and counts truncations.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import metrics

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


def _subset_report(chosen, rejected, chosen_len, rejected_len, name: str, **kwargs) -> dict[str, Any]:
    try:
        report = metrics.pairwise_report(
            chosen, rejected, chosen_lengths=chosen_len, rejected_lengths=rejected_len, **kwargs
        )
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
            conversational (pre-tokenized rows are rejected: scorers take text).
        subset_column (`str`, *optional*): column naming each row's subset (RewardBench's `"subset"`).
        category_weights (`Mapping`, *optional*): categories, see `aggregate_categories`; needs `subset_column`.
        ties (`str`, *optional*, defaults to `"loss"`): tie policy of every accuracy, one of `metrics.TIE_POLICIES`.
        n_bins (`int`, *optional*, defaults to `10`): calibration bins.
        bootstrap (`int`, *optional*, defaults to `0`): bootstrap resamples for 95% intervals (0: none).
        seed (`int`, *optional*, defaults to `0`): bootstrap seed.

    Returns:
        `dict`: `"overall"` (`metrics.pairwise_report` plus `"length_tie_rate"` and `"calibration_curve"`),
        `"subsets"` (name to its report), `"categories"`, `"final_score"`, `"uncategorized"`, `"config"`,
        `"n_truncated"` (sequences the scorer truncated, when it counts them; a [`CachedScorer`] counts only those
        it computed) and `"scores"` (per row: chosen and rejected scores and lengths, subset).

    A single pair, all ties or constant scores give documented values (e.g. accuracy 0 under `ties="loss"`, a
    `(value, value)` interval for one pair); under `ties="exclude"` a set of only ties raises a `ValueError` naming
    it.
    """
    from datasets import Dataset
    from trl.data_utils import maybe_extract_prompt

    from .data.preference import PRETOKENIZED, validate_preference_rows

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

    options = {"ties": ties, "n_bins": n_bins, "bootstrap": bootstrap, "seed": seed}
    overall = _subset_report(chosen, rejected, chosen_len, rejected_len, "all pairs", **options)
    probabilities = metrics.pairwise_probabilities(chosen, rejected)
    overall["calibration_curve"] = metrics.calibration_curve(probabilities, np.ones_like(probabilities), n_bins=n_bins)

    subsets: dict[str, Any] = {}
    aggregated = {"categories": {}, "final_score": overall["accuracy"], "uncategorized": []}
    if subset_column is not None:
        for name, index in sorted(groups.items()):
            pick = lambda values, index=index: [values[i] for i in index]  # noqa: E731
            subsets[name] = _subset_report(
                pick(chosen), pick(rejected), pick(chosen_len), pick(rejected_len), f"subset {name!r}", **options
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
        },
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_ci(report: Mapping[str, Any], key: str) -> str:
    ci = report.get(f"{key}_ci")
    return _fmt(report[key]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def render_markdown(results: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> str:
    """The Markdown report of `evaluate_preferences` results; `figures` maps titles to image paths (relative)."""
    overall, config = results["overall"], results["config"]
    title = config.get("model") or "reward model"
    lines = [f"# Reward-model evaluation: {title}", ""]
    if config.get("dataset"):
        lines += [
            f"Dataset: `{config['dataset']}`" + (f" (split `{config['split']}`)" if config.get("split") else ""),
            "",
        ]
    ci_note = f", 95% bootstrap interval over {config['bootstrap']} resamples" if config.get("bootstrap") else ""
    lines += [
        f"**Final score: {_fmt(results['final_score'])}** ({config['aggregation']}).",
        "",
        f"| metric (all {overall['count']} pairs{ci_note}) | value |",
        "|---|---|",
        f"| accuracy (ties count as `{config['ties']}`) | {_with_ci(overall, 'accuracy')} |",
        f"| length baseline accuracy (the longer completion wins, in {config['length_unit']}) | "
        f"{_fmt(overall['length_baseline_accuracy'])} |",
        f"| tie rate (scores / lengths) | {_fmt(overall['tie_rate'])} / {_fmt(overall['length_tie_rate'])} |",
        f"| win probability mean σ(chosen − rejected) | {_with_ci(overall, 'win_probability')} |",
        f"| mean margin | {_fmt(overall['mean_margin'])} |",
        f"| ECE ({config['n_bins']} bins) | {_with_ci(overall, 'ece')} |",
        f"| Brier score | {_with_ci(overall, 'brier')} |",
    ]
    if results.get("n_truncated"):
        lines.append(f"| sequences truncated by the scorer | {results['n_truncated']} |")
    if results["categories"]:
        lines += ["", "## Categories", "", "| category | score | pairs | subset weights |", "|---|---|---|---|"]
        for name, category in results["categories"].items():
            weights = ", ".join(f"{s}: {_fmt(w, 2)}" for s, w in category["weights"].items())
            lines.append(f"| {name} | {_fmt(category['score'])} | {category['count']} | {weights} |")
    if results["subsets"]:
        lines += [
            "",
            "## Subsets",
            "",
            "| subset | pairs | accuracy | length baseline | tie rate | mean margin |",
            "|---|---|---|---|---|---|",
        ]
        for name, report in results["subsets"].items():
            lines.append(
                f"| {name} | {report['count']} | {_with_ci(report, 'accuracy')} | "
                f"{_fmt(report['length_baseline_accuracy'])} | {_fmt(report['tie_rate'])} | "
                f"{_fmt(report['mean_margin'])} |"
            )
    if results["uncategorized"]:
        lines += ["", f"Subsets in no category (not in the final score): {', '.join(results['uncategorized'])}."]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({path})\n" for name, path in figures.items()]
    return "\n".join(lines) + "\n"


def write_report(
    results: Mapping[str, Any], output_dir: str | os.PathLike, figures: Mapping[str, str] | None = None
) -> dict[str, str]:
    """
    Writes `results.json` (everything, per-row scores included) and `report.md` into `output_dir`.

    Args:
        results (`Mapping`): the output of `evaluate_preferences`.
        output_dir (`str`): created if missing.
        figures (`Mapping[str, str]`, *optional*): title to PNG path, embedded in the report (paths inside
            `output_dir` are written relative to it).

    Returns:
        `dict[str, str]`: `{"results": path, "report": path}`.
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    relative = {name: os.path.relpath(path, output_dir) for name, path in (figures or {}).items()}
    paths = {"results": os.path.join(output_dir, "results.json"), "report": os.path.join(output_dir, "report.md")}
    with open(paths["results"], "w") as f:
        json.dump({**results, "figures": relative}, f, indent=2)
    with open(paths["report"], "w") as f:
        f.write(render_markdown(results, relative))
    return paths


def load_category_weights(value: str | None) -> dict[str, Any] | None:
    """`category_weights` from a YAML/JSON file path or an inline YAML/JSON mapping (`None` stays `None`)."""
    if value is None:
        return None
    import yaml

    if os.path.isfile(value):
        with open(value) as f:
            loaded = yaml.safe_load(f)
    else:
        loaded = yaml.safe_load(value)
    if not isinstance(loaded, dict):
        raise ValueError(
            f"category_weights must be a mapping {{category: [subsets] or {{subset: weight}}}} (a file or inline), "
            f"got {value!r}"
        )
    return loaded


def load_scorer(model_name_or_path: str, args) -> Any:
    """
    A [`RewardScorer`] (wrapped in a [`CachedScorer`] when `args.cache_path` is set) built from `ScorerArguments`.
    """
    import torch

    from .modeling import load_reward_model
    from .scoring import RewardScorer

    load_kwargs = {}
    if args.dtype is not None:
        load_kwargs["dtype"] = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model, tokenizer = load_reward_model(model_name_or_path, **load_kwargs)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    max_length = args.max_length
    if max_length is None and tokenizer.model_max_length < 1_000_000:  # transformers' "unset" is ~1e30
        max_length = int(tokenizer.model_max_length)
    scorer = RewardScorer(
        model,
        tokenizer,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        max_length=max_length,
        device=device,
        normalize=args.normalize,
    )
    if args.cache_path is not None:
        from .cache import CachedScorer

        scorer = CachedScorer(scorer, args.cache_path, path=model_name_or_path)
    return scorer


def _resolve_split(name: str, split: str | None) -> str:
    from .data.loading import _FILE_BUILDERS

    if split is not None:
        return split
    if any(name.endswith(suffix) for suffix in _FILE_BUILDERS):
        return "train"  # a single file is one split
    dict_file = os.path.join(name, "dataset_dict.json")
    if os.path.isfile(dict_file):
        with open(dict_file) as f:
            splits = json.load(f).get("splits", [])
        if len(splits) == 1:
            return splits[0]
        raise ValueError(f"{name!r} holds the splits {splits}: pass --split")
    if os.path.isdir(name):
        return "train"  # a saved single Dataset
    raise ValueError(f"pass --split for the Hub dataset {name!r} (e.g. test): evaluating on train by default misleads")


def run_eval(eval_args, scorer_args) -> dict[str, Any]:
    """`trl-rewards eval`: scores the dataset, writes `results.json`, `report.md` and the plots; returns results."""
    from .data.loading import load_table

    for name in ("model", "dataset", "output_dir"):
        if not getattr(eval_args, name):
            raise ValueError(f"--{name} is required")
    if len(eval_args.model) > 1:
        raise ValueError(
            f"--model got {len(eval_args.model)} models: ensembles are not wired to the CLI yet; evaluate one from "
            "Python with evaluate_preferences(as_scorer(ensemble), dataset)"
        )
    category_weights = load_category_weights(eval_args.category_weights)
    split = _resolve_split(eval_args.dataset, eval_args.split)
    if eval_args.plots:
        from .plots import _figure

        _figure()  # fail on a missing matplotlib before scoring, not after
    dataset = load_table(eval_args.dataset, split, eval_args.dataset_config, eval_args.max_samples)
    scorer = load_scorer(eval_args.model[0], scorer_args)
    results = evaluate_preferences(
        scorer,
        dataset,
        subset_column=eval_args.subset_column,
        category_weights=category_weights,
        ties=eval_args.ties,
        n_bins=eval_args.n_bins,
        bootstrap=eval_args.bootstrap,
        seed=eval_args.seed,
    )
    single_file = eval_args.split is None and os.path.isfile(eval_args.dataset)  # a file is one split: say none
    results["config"].update(
        model=eval_args.model[0],
        dataset=eval_args.dataset,
        split=None if single_file else split,
        max_samples=eval_args.max_samples,
    )
    if scorer_args.cache_path is not None:
        results["cache"] = {"path": scorer.cache.path, "hits": scorer.hits, "misses": scorer.misses}
    figures = None
    if eval_args.plots:
        from .plots import plot_evaluation

        figures = plot_evaluation(results, eval_args.output_dir)
    paths = write_report(results, eval_args.output_dir, figures)
    logger.info(
        "final score %.4f, accuracy %.4f (length baseline %.4f) on %d pairs; report: %s",
        results["final_score"],
        results["overall"]["accuracy"],
        results["overall"]["length_baseline_accuracy"],
        results["overall"]["count"],
        paths["report"],
    )
    return results


def score_file(score_args, scorer_args) -> str:
    """`trl-rewards score`: writes every input row plus its `score` to `score_args.output` (JSON lines)."""
    from .data.loading import load_table

    for name in ("model", "input", "output"):
        if not getattr(score_args, name):
            raise ValueError(f"--{name} is required")
    table = load_table(score_args.input)
    if "completion" not in table.column_names:
        raise ValueError(f"{score_args.input!r} needs a 'completion' column; columns are {table.column_names}")
    if "score" in table.column_names:
        raise ValueError(f"{score_args.input!r} already has a 'score' column; it would be overwritten")
    rows = table.to_list()
    for i, row in enumerate(rows):
        if row["completion"] is None:
            raise ValueError(f'row {i}: "completion" is missing (None)')
    scorer = load_scorer(score_args.model, scorer_args)
    scores = scorer.score([row.get("prompt") for row in rows], [row["completion"] for row in rows])
    os.makedirs(os.path.dirname(os.path.abspath(score_args.output)), exist_ok=True)
    with open(score_args.output, "w") as f:
        for row, score in zip(rows, scores, strict=True):
            f.write(json.dumps({**row, "score": float(score)}, ensure_ascii=False) + "\n")
    logger.info("scored %d rows into %s", len(rows), score_args.output)
    return score_args.output
