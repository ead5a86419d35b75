"""PNG figures for reward-model evaluation and policy training (matplotlib, the optional `plots` extra).

Figures are drawn on a `matplotlib.figure.Figure` with the Agg canvas, never through `pyplot`: no global backend is
switched, no window opens, and plotting from a training callback or a thread is safe. matplotlib is imported only
when a figure is drawn. Every function writes one PNG and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CHOSEN_COLOR, REJECTED_COLOR, BASELINE_COLOR, LENGTH_COLOR = "#1f77b4", "#d62728", "#7f7f7f", "#ff7f0e"


def _figure(width: float = 6.4, height: float = 4.2):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'trl_rewards[plots]'") from error
    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def _finite(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty: nothing to plot")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is {array[bad[0]]}; every value must be finite")
    return array


def plot_reward_distributions(
    chosen: Sequence[float],
    rejected: Sequence[float],
    path: str | os.PathLike,
    *,
    bins: int = 40,
    title: str | None = None,
) -> str:
    """
    Overlaid histograms of the chosen and rejected rewards, with their means; the pairwise accuracy is in the legend.

    Args:
        chosen (`Sequence[float]`): rewards of the chosen completions.
        rejected (`Sequence[float]`): rewards of the rejected completions (same pairs).
        path (`str`): PNG to write.
        bins (`int`, *optional*, defaults to `40`): histogram bins over the common range.
        title (`str`, *optional*): figure title.

    Returns:
        `str`: `path`.
    """
    a, b = _finite(chosen, "chosen"), _finite(rejected, "rejected")
    if a.size != b.size:
        raise ValueError(f"chosen and rejected must have the same length, got {a.size} and {b.size}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    low, high = min(a.min(), b.min()), max(a.max(), b.max())
    if high - low < 1e-12:  # constant scores: one visible bin around the value
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    figure = _figure()
    ax = figure.subplots()
    accuracy = float(np.mean(a > b))
    ax.hist(a, bins=edges, alpha=0.55, color=CHOSEN_COLOR, label=f"chosen (mean {a.mean():.3f})")
    ax.hist(b, bins=edges, alpha=0.55, color=REJECTED_COLOR, label=f"rejected (mean {b.mean():.3f})")
    ax.axvline(a.mean(), color=CHOSEN_COLOR, linestyle="--", linewidth=1)
    ax.axvline(b.mean(), color=REJECTED_COLOR, linestyle="--", linewidth=1)
    ax.set_xlabel("reward")
    ax.set_ylabel("completions")
    ax.set_title(title or f"Reward distributions ({a.size} pairs, chosen > rejected in {accuracy:.1%})")
    ax.legend()
    return _save(figure, path)


def plot_calibration(
    curve: Mapping[str, Sequence[float]], path: str | os.PathLike, *, title: str | None = None
) -> str:
    """
    Reliability diagram of `metrics.calibration_curve` output: accuracy against mean confidence per bin, the diagonal
    (perfect calibration), and the number of pairs per bin on a second axis.

    Args:
        curve (`Mapping`): with `"bin_lower"`, `"bin_upper"`, `"confidence"`, `"accuracy"`, `"count"`.
        path (`str`): PNG to write.
        title (`str`, *optional*): figure title.

    Returns:
        `str`: `path`.
    """
    missing = [k for k in ("bin_lower", "bin_upper", "confidence", "accuracy", "count") if k not in curve]
    if missing:
        raise ValueError(f"curve lacks {missing}; pass the output of metrics.calibration_curve")
    confidence = _finite(curve["confidence"], "confidence")
    accuracy = _finite(curve["accuracy"], "accuracy")
    lower, upper = np.asarray(curve["bin_lower"], float), np.asarray(curve["bin_upper"], float)
    counts = np.asarray(curve["count"], float)
    figure = _figure(5.6, 5.0)
    ax = figure.subplots()
    ax_count = ax.twinx()
    ax_count.bar((lower + upper) / 2, counts, width=(upper - lower) * 0.9, color=BASELINE_COLOR, alpha=0.25)
    ax_count.set_ylabel("pairs per bin", color=BASELINE_COLOR)
    ax.plot([0.5, 1.0], [0.5, 1.0], color="black", linestyle=":", linewidth=1, label="perfect calibration")
    ax.plot(confidence, accuracy, marker="o", color=CHOSEN_COLOR, label="reward model")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("confidence max(p, 1 − p), p = σ(chosen − rejected)")
    ax.set_ylabel("accuracy in bin")
    ax.set_zorder(ax_count.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_title(title or "Calibration of pairwise probabilities")
    ax.legend(loc="lower right")
    return _save(figure, path)


def plot_subset_accuracy(
    subsets: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, *, title: str | None = None
) -> str:
    """
    Horizontal bars of per-subset accuracy (with bootstrap intervals when present), the length baseline as a marker
    and 0.5 (chance) as a line.

    Args:
        subsets (`Mapping[str, Mapping]`): subset name to a report with `"accuracy"`, `"count"`, and optionally
            `"accuracy_ci"` and `"length_baseline_accuracy"` (the `"subsets"` of `evaluate_preferences`).
        path (`str`): PNG to write.
        title (`str`, *optional*): figure title.

    Returns:
        `str`: `path`.
    """
    if not subsets:
        raise ValueError("subsets is empty: nothing to plot")
    names = list(subsets)
    accuracy = np.array([subsets[n]["accuracy"] for n in names], dtype=float)
    y = np.arange(len(names))
    figure = _figure(6.4, max(2.5, 0.45 * len(names) + 1.2))
    ax = figure.subplots()
    errors = None
    if all("accuracy_ci" in subsets[n] for n in names):
        ci = np.array([subsets[n]["accuracy_ci"] for n in names], dtype=float)
        errors = np.clip(np.stack([accuracy - ci[:, 0], ci[:, 1] - accuracy]), 0, None)
    ax.barh(y, accuracy, xerr=errors, color=CHOSEN_COLOR, alpha=0.8, capsize=3, label="reward model")
    if all("length_baseline_accuracy" in subsets[n] for n in names):
        baseline = [subsets[n]["length_baseline_accuracy"] for n in names]
        ax.scatter(baseline, y, marker="|", s=400, linewidths=3, color=LENGTH_COLOR, zorder=3, label="longer wins")
    ax.axvline(0.5, color="black", linestyle=":", linewidth=1)
    ax.set_yticks(y, [f"{n} ({subsets[n]['count']})" for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("pairwise accuracy")
    ax.set_title(title or "Accuracy per subset (pairs)")
    ax.legend(loc="lower right")
    return _save(figure, path)


def plot_win_rate(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    win_rate_key: str = "win_rate",
    win_probability_key: str = "win_probability",
    title: str | None = None,
) -> str:
    """
    Win rate and win probability against the training step.

    Args:
        history (`Sequence[Mapping]`): records with `"step"` and the two keys, e.g. `WinRateCallback.history` or a
            trainer's `state.log_history` (records without the keys are skipped).
        path (`str`): PNG to write.
        win_rate_key (`str`, *optional*, defaults to `"win_rate"`): key of the win rate.
        win_probability_key (`str`, *optional*, defaults to `"win_probability"`): key of the win probability.
        title (`str`, *optional*): figure title.

    Returns:
        `str`: `path`.
    """
    figure = _figure()
    ax = figure.subplots()
    plotted = 0
    for key, color in ((win_rate_key, CHOSEN_COLOR), (win_probability_key, REJECTED_COLOR)):
        points = sorted((r["step"], r[key]) for r in history if key in r and r.get(key) is not None and "step" in r)
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o", color=color, label=key)
            plotted += 1
    if not plotted:
        raise ValueError(f"history has no record with 'step' and {win_rate_key!r} or {win_probability_key!r}")
    ax.axhline(0.5, color="black", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("against the reference completions")
    ax.set_title(title or "Policy vs reference during training")
    ax.legend()
    return _save(figure, path)


def plot_evaluation(results: Mapping[str, Any], output_dir: str | os.PathLike) -> dict[str, str]:
    """
    The figures of an `evaluate_preferences` result: reward distributions, calibration, and per-subset accuracy when
    there are subsets. Returns title to path, ready for `evaluation.write_report(..., figures=...)`.
    """
    output_dir = os.fspath(output_dir)
    scores = results["scores"]
    figures = {
        "Reward distributions": plot_reward_distributions(
            scores["chosen"], scores["rejected"], os.path.join(output_dir, "reward_distributions.png")
        ),
        "Calibration": plot_calibration(
            results["overall"]["calibration_curve"], os.path.join(output_dir, "calibration.png")
        ),
    }
    if results.get("subsets"):
        figures["Accuracy per subset"] = plot_subset_accuracy(
            results["subsets"], os.path.join(output_dir, "subset_accuracy.png")
        )
    return figures


def plot_reward_trajectory(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    keys: Sequence[str],
    title: str | None = None,
) -> str:
    """
    One panel per metric against the training step, sharing the step axis: the members of a reward ensemble live on
    different scales (a reward model's logit, a PRM's probability, a 0/1 answer check), so each gets its own y axis.

    Args:
        history (`Sequence[Mapping]`): records with `"step"` and some of `keys` (e.g. one per GRPO logging step);
            records without a key, or with `None` there, are skipped for that key.
        path (`str`): PNG to write.
        keys (`Sequence[str]`): the metrics to draw, one panel each, in order.
        title (`str`, *optional*): figure title.

    Returns:
        `str`: `path`.
    """
    if not keys:
        raise ValueError("keys is empty: nothing to plot")
    series = {}
    for key in keys:
        points = sorted((r["step"], r[key]) for r in history if "step" in r and r.get(key) is not None)
        if points:
            series[key] = points
    missing = [key for key in keys if key not in series]
    if missing:
        raise ValueError(f"history has no record with 'step' and {missing}")
    figure = _figure(6.4, 1.2 + 1.9 * len(keys))
    axes = np.atleast_1d(figure.subplots(len(keys), 1, sharex=True))
    for ax, key in zip(axes, keys, strict=True):
        steps, values = zip(*series[key], strict=True)
        values = _finite(values, key)
        ax.plot(steps, values, marker="o", color=CHOSEN_COLOR)
        ax.axhline(values.mean(), color=BASELINE_COLOR, linestyle=":", linewidth=1)
        ax.set_ylabel(key, fontsize=8)
    axes[-1].set_xlabel("training step")
    axes[0].set_title(title or "Reward trajectory", fontsize=9)
    return _save(figure, path)
