"""`trl-rewards eval` and `trl-rewards score`: build a scorer from the command line, then evaluate or score a file."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from ..data.loading import FILE_BUILDERS
from ..data.preference import validate_preference_rows
from ..evaluation.report import write_report
from ..evaluation.runner import evaluate_preferences
from .arguments import EvalArguments, ScoreArguments, ScorerArguments
from .inputs import check_output_dir, check_output_file, check_rows, read_split

logger = logging.getLogger(__name__)


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

    from ..inference.sequence_scoring import RewardScorer
    from ..modeling import load_reward_model

    load_kwargs = {}
    if args.dtype is not None:
        load_kwargs["dtype"] = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = resolve_model_kind(model_name_or_path, args.model_kind)
    if kind != "reward":
        if args.cache_path is not None:
            raise ValueError(f"--cache_path caches one score per text; a {kind} model is not cached")
        options = dict(batch_size=args.batch_size, max_tokens_per_batch=args.max_tokens_per_batch,
                       max_length=args.max_length, device=device, **load_kwargs)  # fmt: skip
        if kind == "pairwise":
            from ..inference.pairwise_scoring import PairwiseScorer

            return PairwiseScorer.from_pretrained(model_name_or_path, **options)
        from ..inference.attribute_scoring import AttributeScorer

        return AttributeScorer.from_pretrained(model_name_or_path, normalize=args.normalize, **options)
    model, tokenizer = load_reward_model(model_name_or_path, require_trained_head=True, **load_kwargs)
    scorer = RewardScorer(  # moves the model to `device`; max_length None: the model's position limit
        model,
        tokenizer,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        max_length=args.max_length,
        device=device,
        normalize=args.normalize,
    )
    if args.cache_path is not None:
        from ..evaluation.cache import CachedScorer

        scorer = CachedScorer(scorer, args.cache_path, path=model_name_or_path)
    return scorer


def resolve_model_kind(model_name_or_path: str, kind: str) -> str:
    """`--model_kind`, with `"auto"` resolved: `"attributes"` when the saved model names its attributes."""
    if kind != "auto":
        return kind
    from transformers import AutoConfig

    from ..modeling import is_adapter_path

    if is_adapter_path(model_name_or_path):
        from ..inference.attribute_scoring import saved_num_attributes

        try:
            saved_num_attributes(model_name_or_path)  # raises for an adapter that records no attribute names
        except ValueError:
            return "reward"
        return "attributes"
    try:
        config = AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError):
        return "reward"  # the loader gives the clear error
    return "attributes" if getattr(config, "attribute_names", None) else "reward"


def _resolve_split(name: str, split: str | None) -> str:
    if split is not None:
        return split
    if any(name.endswith(suffix) for suffix in FILE_BUILDERS):
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
    for name in ("model", "dataset", "output_dir"):
        if not getattr(eval_args, name):
            raise ValueError(f"--{name} is required")
    if len(eval_args.model) > 1:
        raise ValueError(
            f"--model got {len(eval_args.model)} models: ensembles are not wired to the CLI yet; evaluate one from "
            "Python with evaluate_preferences(as_scorer(ensemble), dataset)"
        )
    # Everything that can fail without a model fails before it loads: options, output folder, every data row.
    if eval_args.protocol == "pairs" and scorer_args.model_kind == "pairwise":
        raise ValueError(
            "--model_kind pairwise: a pair-PM gives win probabilities, not one score per text; evaluate it with "
            "--protocol rewardbench|rewardbench2 or pairwise_preference_metrics from Python"
        )
    category_weights = load_category_weights(eval_args.category_weights)
    split = _resolve_split(eval_args.dataset, eval_args.split)
    check_output_dir(eval_args.output_dir)
    if eval_args.plots:
        from ..evaluation.plots import _figure

        _figure()  # fail on a missing matplotlib before scoring, not after
    dataset = read_split(eval_args.dataset, split, eval_args.dataset_config, eval_args.max_samples, "eval data")
    if eval_args.protocol != "pairs":
        return run_rewardbench(eval_args, scorer_args, dataset, split)
    check_rows(validate_preference_rows, dataset, "eval data", eval_args.dataset)
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
        from ..evaluation.plots import plot_evaluation

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


def run_rewardbench(eval_args, scorer_args, dataset, split: str) -> dict[str, Any]:
    """`trl-rewards eval --protocol rewardbench|rewardbench2`: RewardBench's scoring; results.json, report.md."""
    from ..evaluation import rewardbench
    from ..evaluation.report import strict_json

    version = "v1" if eval_args.protocol == "rewardbench" else "v2"
    rows = dataset.to_list()
    try:  # every row is checked before the model loads
        (rewardbench.v1_rows if version == "v1" else rewardbench.v2_rows)(rows)
    except ValueError as error:
        raise ValueError(f"eval data {eval_args.dataset!r} ({eval_args.protocol} layout): {error}") from None
    scorer = load_scorer(eval_args.model[0], scorer_args)
    results = rewardbench.evaluate_rewardbench(
        scorer, rows, version, eval_args.prompt_template, eval_args.bootstrap, eval_args.seed
    )
    results["config"] = {"model": eval_args.model[0], "dataset": eval_args.dataset, "split": split,
                         "protocol": eval_args.protocol, "max_samples": eval_args.max_samples}  # fmt: skip
    os.makedirs(eval_args.output_dir, exist_ok=True)
    paths = {name: os.path.join(eval_args.output_dir, name) for name in ("results.json", "report.md")}
    with open(paths["results.json"], "w") as f:
        json.dump(strict_json(results), f, indent=2, allow_nan=False)
    with open(paths["report.md"], "w") as f:
        f.write(rewardbench.render_markdown(results))
    ci = results["score_ci"]
    logger.info(
        "RewardBench %s score %.4f%s on %d rows; report: %s",
        version,
        results["score"],
        f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "",
        results["n_rows"],
        paths["report.md"],
    )
    return results


def score_file(score_args, scorer_args) -> str:
    """`trl-rewards score`: writes every input row plus its `score` to `score_args.output` (JSON lines)."""
    for name in ("model", "input", "output"):
        if not getattr(score_args, name):
            raise ValueError(f"--{name} is required")
    check_output_file(score_args.output)
    table = read_split(score_args.input, "train", None, None, "--input")
    if "completion" not in table.column_names:
        raise ValueError(f"{score_args.input!r} needs a 'completion' column; columns are {table.column_names}")
    if "score" in table.column_names:
        raise ValueError(f"{score_args.input!r} already has a 'score' column; it would be overwritten")
    rows = table.to_list()
    for i, row in enumerate(rows):
        if row["completion"] is None:
            raise ValueError(f'row {i}: "completion" is missing (None)')
    if scorer_args.model_kind == "pairwise":
        raise ValueError("--model_kind pairwise: a pair-PM compares two responses; it has no score per row")
    scorer = load_scorer(score_args.model, scorer_args)
    scores = scorer.score([row.get("prompt") for row in rows], [row["completion"] for row in rows])
    os.makedirs(os.path.dirname(os.path.abspath(score_args.output)), exist_ok=True)
    with open(score_args.output, "w") as f:
        for row, score in zip(rows, scores, strict=True):
            f.write(json.dumps({**row, "score": float(score)}, ensure_ascii=False) + "\n")
    logger.info("scored %d rows into %s", len(rows), score_args.output)
    return score_args.output


def evaluate(argv: list[str]) -> dict:
    """`trl-rewards eval`: categorized evaluation of a reward model, written as results.json, report.md and PNGs."""
    from trl import TrlParser

    parser = TrlParser((EvalArguments, ScorerArguments), prog="trl-rewards eval", allow_abbrev=False)
    eval_args, scorer_args = parser.parse_args_and_config(argv)
    return run_eval(eval_args, scorer_args)


def score(argv: list[str]) -> str:
    """`trl-rewards score`: adds a `score` to every (prompt, completion) row of a file."""
    from trl import TrlParser

    parser = TrlParser((ScoreArguments, ScorerArguments), prog="trl-rewards score", allow_abbrev=False)
    score_args, scorer_args = parser.parse_args_and_config(argv)
    return score_file(score_args, scorer_args)
