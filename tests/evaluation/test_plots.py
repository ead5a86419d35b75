"""Plots write real, non-empty PNG files and reject inputs they cannot draw."""

import sys

import matplotlib  # noqa: F401  (the `test`/`plots` extras, always installed by ./dev: a missing one fails here)
import pytest

from trl_rewards.evaluation import plots
from trl_rewards.evaluation.metrics import calibration_curve, pairwise_probabilities

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHOSEN = [1.2, 0.3, 2.5, -0.1, 0.8, 1.9, 0.0, 1.1]
REJECTED = [0.2, 0.5, 1.0, -0.9, 0.8, 0.4, -1.5, 1.3]


def _assert_png(path, min_bytes=8_000):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_bytes, f"{path}: only {len(data)} bytes"


def test_each_plot_writes_a_png(tmp_path):
    probabilities = pairwise_probabilities(CHOSEN, REJECTED)
    curve = calibration_curve(probabilities, [1] * len(CHOSEN), n_bins=5)
    subsets = {
        "chat": {"accuracy": 0.8, "count": 40, "accuracy_ci": [0.7, 0.9], "length_baseline_accuracy": 0.55},
        "safety": {"accuracy": 0.45, "count": 12, "accuracy_ci": [0.2, 0.7], "length_baseline_accuracy": 0.6},
    }
    history = [{"step": 0, "win_rate": 0.2, "win_probability": 0.4}, {"step": 10, "win_rate": 0.6}, {"step": 5}]
    paths = [
        plots.plot_reward_distributions(CHOSEN, REJECTED, tmp_path / "a" / "dist.png"),
        plots.plot_calibration(curve, tmp_path / "cal.png"),
        plots.plot_subset_accuracy(subsets, tmp_path / "subsets.png"),
        plots.plot_win_rate(history, tmp_path / "win.png"),
        plots.plot_reward_distributions([0.5] * 4, [0.5] * 4, tmp_path / "constant.png"),  # a degenerate range
    ]
    assert paths[0] == str(tmp_path / "a" / "dist.png")
    for path in paths:
        _assert_png(path)
    assert "matplotlib.pyplot" not in sys.modules  # no global backend was touched


def test_plot_evaluation_from_results(tmp_path):
    from trl_rewards.evaluation.runner import evaluate_preferences

    rows = [
        {"prompt": "q", "chosen": "a" * (i % 5 + 1), "rejected": "b" * (i % 3 + 1), "subset": f"s{i % 2}"}
        for i in range(20)
    ]

    class Length:
        def score(self, prompts, completions):
            return [len(c) + (c[0] == "a") * 0.5 for c in completions]

    figures = plots.plot_evaluation(evaluate_preferences(Length(), rows, subset_column="subset"), tmp_path)
    assert sorted(figures) == ["Accuracy per subset", "Calibration", "Reward distributions"]
    for path in figures.values():
        _assert_png(path)


def test_plots_reject_what_they_cannot_draw(tmp_path):
    with pytest.raises(ValueError, match="chosen is empty"):
        plots.plot_reward_distributions([], [], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"rejected\[1\] is nan"):
        plots.plot_reward_distributions([1, 2], [1, float("nan")], tmp_path / "x.png")
    with pytest.raises(ValueError, match="same length"):
        plots.plot_reward_distributions([1, 2], [1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="metrics.calibration_curve"):
        plots.plot_calibration({"accuracy": [1.0]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="subsets is empty"):
        plots.plot_subset_accuracy({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no record with 'step'"):
        plots.plot_win_rate([{"loss": 1.0, "step": 3}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
