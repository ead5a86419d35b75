"""`trl-rewards eval-steps`: a process reward model on ProcessBench or PRMBench, written as results.json + report.md.

Every step of every solution gets P(step correct) from [`ProcessRewardScorer`]; the benchmark's own metric follows
(`evaluation.step_benchmarks`): ProcessBench's F1 of first-error accuracy on erroneous solutions and accuracy on
correct ones, per subset and averaged; PRMBench's PRMScore per error type and overall. Options, the output folder and
every data row are checked before the model loads.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.step_benchmarks import BENCHMARK_FORMATS, load_prmbench, load_processbench
from ..evaluation.report import fmt, strict_json
from ..evaluation.step_benchmarks import evaluate_step_benchmark
from ..step_format import PRM_STYLES
from ..trainers.base_config import check_choice
from .inputs import check_output_dir, check_rows, read_split

logger = logging.getLogger(__name__)


@dataclass
class EvalStepsArguments:
    """
    Options of `trl-rewards eval-steps`.

    Parameters:
        model (`str`): process reward model folder or Hub id (a plain model or a PRM adapter).
        dataset (`str`): the benchmark's rows: a local file (`.jsonl`, `.parquet`, ...) or a saved dataset folder.
        format (`str`): `"processbench"` or `"prmbench"` (see `trl_rewards.data.step_benchmarks`).
        output_dir (`str`): where `results.json` and `report.md` go.
        threshold (`float`, *optional*, defaults to `0.5`): a step is flagged wrong when P(correct) is below it.
        subset (`str`, *optional*): ProcessBench subset of rows without a `subset` field (default: the file's stem).
        max_samples (`int`, *optional*): evaluate only the first N rows.
        bootstrap (`int`, *optional*, defaults to `1000`): resamples for 95% intervals over solutions (0: none).
        seed (`int`, *optional*, defaults to `0`): bootstrap seed.
        model_style (`str`, *optional*): `"classifier"` or `"lm"`; default: the layout saved with the model.
        batch_size (`int`, *optional*, defaults to `16`): most solutions per forward pass.
        max_tokens_per_batch (`int`, *optional*): most padded tokens per forward pass.
        max_length (`int`, *optional*): most tokens per solution (the prompt is cut first); default: the model's
            position limit.
        device (`str`, *optional*): default: `"cuda"` when available, else `"cpu"`.
    """

    model: str | None = field(default=None, metadata={"help": "Process reward model folder or Hub id."})
    dataset: str | None = field(default=None, metadata={"help": "Benchmark rows: .jsonl/.parquet file or folder."})
    format: str | None = field(
        default=None, metadata={"help": "Benchmark format.", "choices": list(BENCHMARK_FORMATS)}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where results.json and report.md go."})
    threshold: float = field(default=0.5, metadata={"help": "A step is flagged wrong when P(correct) < threshold."})
    subset: str | None = field(
        default=None, metadata={"help": "ProcessBench subset of rows without a `subset` field (default: file stem)."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N rows."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples for 95 percent intervals (0: none)."})
    seed: int = field(default=0, metadata={"help": "Bootstrap seed."})
    model_style: str | None = field(
        default=None,
        metadata={"help": "PRM style (default: the layout saved with the model).", "choices": list(PRM_STYLES)},
    )
    batch_size: int = field(default=16, metadata={"help": "Most solutions per forward pass."})
    max_tokens_per_batch: int | None = field(default=None, metadata={"help": "Most padded tokens per forward pass."})
    max_length: int | None = field(
        default=None, metadata={"help": "Most tokens per solution (default: the model's position limit)."}
    )
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda when available, else cpu)."})

    def __post_init__(self):
        if self.format is not None:
            check_choice("format", self.format, BENCHMARK_FORMATS)
        if self.model_style is not None:
            check_choice("model_style", self.model_style, PRM_STYLES)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("max_tokens_per_batch", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"{name} must be >= 2 or unset, got {value}")


def _ci(value: Any) -> str:
    return f" [{value[0]:.3f}, {value[1]:.3f}]" if value else ""


def render_step_report(results: dict[str, Any]) -> str:
    """The Markdown report of a `run_eval_steps` result: the headline, one row per subset, then overall."""
    config, headline = results["config"], results["headline"]
    lines = [
        f"# {config['format']} evaluation: {config['model']}",
        "",
        f"Dataset: `{config['dataset']}`, {results['n_solutions']} solutions, threshold {config['threshold']}"
        + (f", 95% bootstrap intervals over {config['bootstrap']} resamples" if config["bootstrap"] else "")
        + ".",
        "",
        f"**{headline['name']}: {fmt(headline['value'])}**",
        "",
    ]
    if config["format"] == "processbench":
        lines += [
            "| subset | solutions | erroneous | correct | acc. erroneous | acc. correct | F1 |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = [*results["subsets"].items(), ("overall (pooled)", results["overall"])]
        for name, s in rows:
            lines.append(
                f"| {name} | {s['n']} | {s['n_erroneous']} | {s['n_correct']} | {fmt(s['erroneous_accuracy'])} | "
                f"{fmt(s['correct_accuracy'])} | {fmt(s['f1'])}{_ci(s.get('f1_ci'))} |"
            )
        lines += ["", f"Average F1 over subsets: {fmt(results['average_f1'])}."]
    else:
        lines += [
            "| subset | solutions | steps | step accuracy | F1 (right steps) | F1 (wrong steps) | PRMScore |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = [*results["subsets"].items(), ("overall (pooled)", results["overall"])]
        for name, s in rows:
            lines.append(
                f"| {name} | {s['n_solutions']} | {s['n_steps']} | {fmt(s['accuracy'])} | {fmt(s['f1'])} | "
                f"{fmt(s['negative_f1'])} | {fmt(s['prmscore'])}{_ci(s.get('prmscore_ci'))} |"
            )
        lines += ["", f"Mean PRMScore over subsets: {fmt(results['subset_mean'])}."]
    return "\n".join(lines) + "\n"


def run_eval_steps(args: EvalStepsArguments) -> dict[str, Any]:
    """`trl-rewards eval-steps`: scores every step, writes `results.json` and `report.md`; returns the results."""
    for name in ("model", "dataset", "format", "output_dir"):
        if not getattr(args, name):
            raise ValueError(f"--{name} is required")
    check_output_dir(args.output_dir)
    table = read_split(args.dataset, "train", None, args.max_samples, "eval data")
    if args.format == "processbench":
        subset = args.subset or Path(args.dataset).name.split(".")[0]
        load = lambda t: load_processbench(t, subset=subset, source="dataset")  # noqa: E731
    else:
        load = lambda t: load_prmbench(t, source="dataset")  # noqa: E731
    rows = check_rows(load, table, "eval data", args.dataset)

    import torch

    from ..inference.step_scoring import ProcessRewardScorer

    scorer = ProcessRewardScorer.from_pretrained(
        args.model,
        model_style=args.model_style,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        max_length=args.max_length,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
    probabilities = scorer.step_probabilities([r["prompt"] for r in rows], [r["steps"] for r in rows])
    results = evaluate_step_benchmark(rows, probabilities, args.format, args.threshold, args.bootstrap, args.seed)
    results["n_solutions"] = len(rows)
    results["n_truncated"] = scorer.n_truncated
    results["config"] = {
        "model": args.model,
        "dataset": args.dataset,
        "format": args.format,
        "threshold": args.threshold,
        "max_samples": args.max_samples,
        "bootstrap": args.bootstrap,
        "seed": args.seed,
        "step_layout": scorer.format,
    }
    results["predictions"] = [
        {"id": r["id"], "subset": r["subset"], "step_probabilities": p}
        for r, p in zip(rows, probabilities, strict=True)
    ]
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(strict_json(results), f, indent=2, allow_nan=False, default=str)
    report = os.path.join(args.output_dir, "report.md")
    with open(report, "w") as f:
        f.write(render_step_report(results))
    logger.info(
        "%s %s %.4f on %d solutions (threshold %.2f); report: %s",
        args.format,
        results["headline"]["name"],
        results["headline"]["value"],
        len(rows),
        args.threshold,
        report,
    )
    return results


def eval_steps(argv: list[str]) -> dict[str, Any]:
    """`trl-rewards eval-steps`: ProcessBench / PRMBench metrics of a process reward model."""
    from trl import TrlParser

    parser = TrlParser((EvalStepsArguments,), prog="trl-rewards eval-steps", allow_abbrev=False)
    (args,) = parser.parse_args_and_config(argv)
    return run_eval_steps(args)
