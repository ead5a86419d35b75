"""The evaluation report: `results.json` and a Markdown `report.md` from the results of `evaluate_preferences`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any


def strict_json(value: Any) -> Any:
    """NaN and infinities (an undefined metric) as `null`: `results.json` stays strict JSON for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_ci(report: Mapping[str, Any], key: str) -> str:
    ci = report.get(f"{key}_ci")
    return fmt(report[key]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


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
        f"**Final score: {fmt(results['final_score'])}** ({config['aggregation']}).",
        "",
        f"| metric (all {overall['count']} pairs{ci_note}) | value |",
        "|---|---|",
        f"| accuracy (ties count as `{config['ties']}`) | {_with_ci(overall, 'accuracy')} |",
        f"| length baseline accuracy (the longer completion wins, in {config['length_unit']}) | "
        f"{fmt(overall['length_baseline_accuracy'])} |",
        f"| tie rate (scores / lengths) | {fmt(overall['tie_rate'])} / {fmt(overall['length_tie_rate'])} |",
        f"| win probability mean σ(chosen − rejected) | {_with_ci(overall, 'win_probability')} |",
        f"| mean margin | {fmt(overall['mean_margin'])} |",
        f"| ECE ({config['n_bins']} bins) | {_with_ci(overall, 'ece')} |",
        f"| Brier score | {_with_ci(overall, 'brier')} |",
    ]
    if results.get("n_truncated"):
        lines.append(f"| sequences truncated by the scorer | {results['n_truncated']} |")
    if results["categories"]:
        lines += ["", "## Categories", "", "| category | score | pairs | subset weights |", "|---|---|---|---|"]
        for name, category in results["categories"].items():
            weights = ", ".join(f"{s}: {fmt(w, 2)}" for s, w in category["weights"].items())
            lines.append(f"| {name} | {fmt(category['score'])} | {category['count']} | {weights} |")
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
                f"{fmt(report['length_baseline_accuracy'])} | {fmt(report['tie_rate'])} | "
                f"{fmt(report['mean_margin'])} |"
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
        json.dump(strict_json({**results, "figures": relative}), f, indent=2, allow_nan=False)
    with open(paths["report"], "w") as f:
        f.write(render_markdown(results, relative))
    return paths
