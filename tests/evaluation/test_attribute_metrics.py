"""Per-attribute metrics and the combined pairwise accuracy, against hand computations."""

import math

import numpy as np
import pytest

from trl_rewards.evaluation.attribute_metrics import attribute_metrics, combine_attributes, combined_pairwise_accuracy

NAN = float("nan")


def test_attribute_metrics_hand_derived():
    """Attribute a: predictions [1, 2, 3], ratings [1, 3, 2]: MAE (0 + 1 + 1) / 3 = 2/3; centred [-1, 0, 1] and
    [-1, 1, 0] give Pearson 1 / (√2 √2) = 0.5, and the ranks are the values, so Spearman is 0.5 too.
    Attribute b: predictions [0, 1, 5], ratings [NaN, 2, 2]: 2 observed, MAE (1 + 3) / 2 = 2, correlations undefined
    (constant ratings) -> NaN and left out of the means. MSE over the 5 observed: (0 + 1 + 1 + 1 + 9) / 5 = 2.4."""
    out = attribute_metrics([[1, 0], [2, 1], [3, 5]], [[1, NAN], [3, 2], [2, 2]], ["a", "b"])
    assert out["a/mae"] == pytest.approx(2 / 3) and out["a/count"] == 3
    assert out["a/pearson"] == pytest.approx(0.5) and out["a/spearman"] == pytest.approx(0.5)
    assert out["b/mae"] == pytest.approx(2.0) and out["b/count"] == 2
    assert math.isnan(out["b/pearson"]) and math.isnan(out["b/spearman"])
    assert out["mae"] == pytest.approx(4 / 3) and out["pearson"] == pytest.approx(0.5)
    assert out["mse"] == pytest.approx(2.4)


def test_spearman_differs_from_pearson_on_a_monotone_curve():
    x = np.arange(1.0, 6.0)
    out = attribute_metrics(np.stack([x**3], 1), np.stack([x], 1), ["a"])
    assert out["a/spearman"] == pytest.approx(1.0) and out["a/pearson"] < 0.99


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        attribute_metrics([[1.0, 2.0]], [[1.0]], ["a", "b"])
    with pytest.raises(ValueError, match="2 weights"):
        combine_attributes([[1.0, 2.0, 3.0]], [1.0, 1.0])


def test_combined_pairwise_accuracy_hand_derived():
    """weights [1, 0.5]: chosen [1, 0.5, 1.5], rejected [0, 1, 1.5] -> a win, a loss and a tie (1/2): 0.5; margin
    (1 - 0.5 + 0) / 3."""
    out = combined_pairwise_accuracy([[1, 0], [0, 1], [1, 1]], [[0, 0], [1, 0], [1, 1]], [1.0, 0.5])
    assert out == {"pairwise_accuracy": 0.5, "pairwise_margin": pytest.approx(0.5 / 3), "pairwise_count": 3.0}
