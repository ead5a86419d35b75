"""ProcessBench's F1 and PRMBench's PRMScore on hand-built solutions, each value derived in the docstring."""

import math

import numpy as np
import pytest
from scipy.stats import hmean

from trl_rewards.evaluation.step_benchmarks import (
    evaluate_step_benchmark,
    harmonic_f1,
    prmscore,
    processbench_metrics,
)

# ProcessBench: (probabilities, first error, subset); threshold 0.5 flags a step with P < 0.5
PB = [
    ([0.9, 0.2, 0.8], 1, "gsm8k"),  # predicted first error 1 = 1: right (erroneous)
    ([0.9, 0.8, 0.3], 1, "gsm8k"),  # predicted 2 != 1: wrong (erroneous)
    ([0.6, 0.7], None, "gsm8k"),  # nothing flagged: right (correct)
    ([0.4, 0.9], -1, "gsm8k"),  # step 0 flagged: wrong (correct)
    ([0.7], None, "gsm8k"),  # right (correct)
    ([0.1, 0.1], 0, "math"),  # predicted 0 = 0: right (erroneous)
    ([0.5, 0.9], None, "math"),  # 0.5 is not below 0.5: right (correct)
]


def _pb(threshold=0.5, **kwargs):
    probs, errors, subsets = zip(*PB, strict=True)
    return processbench_metrics(probs, errors, subsets, threshold=threshold, **kwargs)


def test_processbench_hand_derived():
    """gsm8k: erroneous 1/2, correct 2/3, F1 = 2 (1/2)(2/3) / (1/2 + 2/3) = 4/7; math: 1, 1, F1 = 1; average F1 =
    (4/7 + 1) / 2 = 11/14; pooled: erroneous 2/3, correct 3/4, F1 = 2 (2/3)(3/4) / (17/12) = 12/17."""
    result = _pb()
    gsm8k = result["subsets"]["gsm8k"]
    assert (gsm8k["n"], gsm8k["n_erroneous"], gsm8k["n_correct"]) == (5, 2, 3)
    assert gsm8k["erroneous_accuracy"] == pytest.approx(1 / 2)
    assert gsm8k["correct_accuracy"] == pytest.approx(2 / 3)
    assert gsm8k["f1"] == pytest.approx(4 / 7)
    assert gsm8k["f1"] == pytest.approx(hmean([1 / 2, 2 / 3]))  # reference: scipy's harmonic mean
    assert result["subsets"]["math"]["f1"] == pytest.approx(1.0)
    assert result["average_f1"] == pytest.approx(11 / 14)
    assert result["overall"]["f1"] == pytest.approx(12 / 17)


def test_processbench_threshold_moves_predictions():
    """Threshold 0.35: [0.4, 0.9] is no longer flagged (correct 3/3), [0.9, 0.2, 0.8] still finds step 1, [0.9, 0.8,
    0.3] still step 2: gsm8k F1 = 2 (1/2)(1) / (3/2) = 2/3."""
    assert _pb(threshold=0.35)["subsets"]["gsm8k"]["f1"] == pytest.approx(2 / 3)


def test_processbench_undefined_and_bootstrap():
    """A subset without correct solutions has no correct accuracy: its F1 is NaN, not 0. Both accuracies 0 give F1 0.
    The stratified bootstrap keeps both kinds in every resample: math's perfect F1 has the interval [1, 1]."""
    only_errors = processbench_metrics([[0.9], [0.1]], [0, 0])
    assert only_errors["overall"]["erroneous_accuracy"] == pytest.approx(0.5)
    assert math.isnan(only_errors["overall"]["f1"])
    assert harmonic_f1(0.0, 0.0) == 0.0
    result = _pb(bootstrap=300, seed=1)
    assert result["subsets"]["math"]["f1_ci"] == [1.0, 1.0]
    low, high = result["overall"]["f1_ci"]
    assert low < result["overall"]["f1"] < high
    with pytest.raises(ValueError, match="solution 0: first error 3 is not one of its 3 steps"):
        processbench_metrics([[0.9, 0.9, 0.9]], [3])
    with pytest.raises(ValueError, match="solution 1: step probability 1.5"):
        processbench_metrics([[0.9], [1.5]], [None, None])


# PRMBench: (probabilities, labels (True = right step), subset)
PRM = [
    ([0.9, 0.2, 0.7], [True, False, False], "x"),  # TP (step 0), TN (step 1), FP (step 2: wrong, not flagged)
    ([0.4, 0.8], [True, True], "x"),  # FN (step 0 flagged though right), TP
    ([0.1, 0.6], [False, True], "y"),  # TN, TP
]


def test_prmscore_hand_derived():
    """x: TP 2, FP 1, FN 1, TN 1: F1 = 4 / 6 = 2/3, negative F1 = 2 / 4 = 1/2, PRMScore = 7/12, step accuracy 3/5.
    y: F1 = negative F1 = 1. Pooled: TP 3, FP 1, FN 1, TN 2: F1 = 6/8, negative F1 = 4/6, PRMScore = 17/24; mean over
    subsets (7/12 + 1) / 2 = 19/24."""
    probs, labels, subsets = zip(*PRM, strict=True)
    result = prmscore(probs, labels, subsets)
    x = result["subsets"]["x"]
    assert (x["n_solutions"], x["n_steps"]) == (2, 5)
    assert x["f1"] == pytest.approx(2 / 3) and x["negative_f1"] == pytest.approx(1 / 2)
    assert x["prmscore"] == pytest.approx(7 / 12) and x["accuracy"] == pytest.approx(3 / 5)
    precision, recall = 2 / 3, 2 / 3  # reference: F1 as the harmonic mean of precision and recall
    assert x["f1"] == pytest.approx(hmean([precision, recall]))
    assert result["subsets"]["y"]["prmscore"] == pytest.approx(1.0)
    assert result["overall"]["prmscore"] == pytest.approx(17 / 24)
    assert result["subset_mean"] == pytest.approx(19 / 24)


def test_prmscore_edge_cases_and_bootstrap():
    """Every prediction wrong (TP = TN = 0): both F1 are 0 (PRMBench's code would write -1). No wrong step and none
    flagged: the negative F1 is undefined (NaN) and so is the PRMScore."""
    zero = prmscore([[0.1], [0.9]], [[True], [False]])
    assert zero["overall"]["f1"] == 0.0 and zero["overall"]["prmscore"] == 0.0
    undefined = prmscore([[0.9, 0.8]], [[True, True]])
    assert undefined["overall"]["f1"] == 1.0 and math.isnan(undefined["overall"]["prmscore"])
    probs, labels, subsets = zip(*PRM, strict=True)
    result = prmscore(probs * 4, labels * 4, subsets * 4, bootstrap=300)
    low, high = result["overall"]["prmscore_ci"]
    assert low <= result["overall"]["prmscore"] <= high and low < high
    with pytest.raises(ValueError, match="solution 1: 2 probabilities but 1 labels"):
        prmscore([[0.5], [0.5, 0.5]], [[True], [True]])
    with pytest.raises(ValueError, match="threshold"):
        prmscore([[0.5]], [[True]], threshold=1.0)


def test_evaluate_step_benchmark_dispatches():
    rows = [{"subset": s, "first_error": e, "labels": None} for _, e, s in PB]
    result = evaluate_step_benchmark(rows, [p for p, _, _ in PB], "processbench")
    assert result["headline"] == {"name": "average F1", "value": pytest.approx(11 / 14)}
    rows = [{"subset": s, "labels": y} for _, y, s in PRM]
    result = evaluate_step_benchmark(rows, [p for p, _, _ in PRM], "prmbench")
    assert result["headline"]["value"] == pytest.approx(17 / 24)
    with pytest.raises(ValueError, match="benchmark must be"):
        evaluate_step_benchmark(rows, [p for p, _, _ in PRM], "mrben")
    assert np.isfinite(result["overall"]["f1"])
