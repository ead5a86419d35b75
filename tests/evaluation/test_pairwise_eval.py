"""Pairwise-model metrics from both orders' logits, derived by hand."""

import math

import numpy as np
import pytest

from trl_rewards.evaluation.pairwise_eval import (
    pairwise_preference_metrics,
    position_bias,
    position_consistent,
    win_log_odds,
)

LN3 = math.log(3)


def test_win_log_odds_hand_derived():
    """σ(ln 3) = 3/4. (l_AB, l_BA) = (ln 3, -ln 3): P = (3/4 + 3/4) / 2 = 3/4, logit ln 3. (ln 3, ln 3): the model
    prefers the first position whatever the order, P = (3/4 + 1/4) / 2 = 1/2, logit 0."""
    np.testing.assert_allclose(win_log_odds([LN3, LN3], [-LN3, LN3]), [LN3, 0.0], atol=1e-12)


def test_position_consistency_and_bias_hand_derived():
    """Pairs: (2, -1) consistent; (1, 1) both orders say 'first wins': inconsistent; (-1, 3) consistent; (0, -2) no
    verdict in one order: inconsistent. Consistency 2/4. Bias: mean(σ(l_AB) + σ(l_BA) - 1) =
    mean(σ(2)+σ(-1)-1, 2σ(1)-1, σ(-1)+σ(3)-1, σ(0)+σ(-2)-1)."""
    ab, ba = [2.0, 1.0, -1.0, 0.0], [-1.0, 1.0, 3.0, -2.0]
    np.testing.assert_array_equal(position_consistent(ab, ba), [1, 0, 1, 0])
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = (s(2) + s(-1) - 1 + 2 * s(1) - 1 + s(-1) + s(3) - 1 + s(0) + s(-2) - 1) / 4
    assert position_bias(ab, ba) == pytest.approx(expected, abs=1e-12)
    assert position_bias([5.0, 5.0], [5.0, 5.0]) == pytest.approx(2 * s(5) - 1)  # always the first response


def test_metrics_hand_derived():
    """Four pairs with labels [1, 1, 0, 1]:
    - (ln 3, -ln 3): P = 3/4, label 1: right;
    - (-ln 3, ln 3): P = 1/4, label 1: wrong;
    - (-ln 3, ln 3): P = 1/4, label 0: right;
    - (ln 3, ln 3): P = 1/2, a model tie: wrong.
    Accuracy 2/4. Consistency 3/4. Brier: ((1/4)^2 + (3/4)^2 + (1/4)^2 + (1/2)^2) / 4 = (1 + 9 + 1 + 4) / 64 = 15/64.
    ECE (10 bins over [0.5, 1]): the three confident pairs have confidence 3/4 (one bin, correctness 1, 0, 1: accuracy
    2/3) and the tie confidence 1/2 (first bin, correctness 0): (3 |2/3 - 3/4| + |0 - 1/2|) / 4 = (1/4 + 1/2) / 4
    = 3/16."""
    ab, ba, labels = [LN3, -LN3, -LN3, LN3], [-LN3, LN3, LN3, LN3], [1, 1, 0, 1]
    report = pairwise_preference_metrics(ab, ba, labels)
    assert report["n"] == 4
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["position_consistency"] == pytest.approx(0.75)
    assert report["brier"] == pytest.approx(15 / 64)
    assert report["ece"] == pytest.approx(3 / 16)
    # default labels are 1: the third pair becomes wrong
    assert pairwise_preference_metrics(ab, ba)["accuracy"] == pytest.approx(0.25)


def test_bootstrap_intervals_bracket_the_estimates():
    rng = np.random.default_rng(0)
    ab, ba = rng.normal(1, 1, 200), rng.normal(-1, 1, 200)
    report = pairwise_preference_metrics(ab, ba, bootstrap=200, seed=1)
    for name in ("accuracy", "position_consistency", "ece", "brier"):
        low, high = report[f"{name}_ci"]
        assert low <= report[name] <= high and high - low > 0, name


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="same length"):
        pairwise_preference_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"logits_ab\[1\] is nan"):
        pairwise_preference_metrics([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="labels"):
        pairwise_preference_metrics([1.0], [1.0], [2.0])
