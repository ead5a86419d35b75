import math
import warnings

import numpy as np
import pytest
from scipy import stats

from trl_rewards.evaluation.metrics import (
    TIE_POLICIES,
    brier_score,
    calibration_curve,
    expected_calibration_error,
    length_baseline_accuracy,
    pairwise_accuracy,
    pairwise_calibration_error,
    pairwise_probabilities,
    rank_correlation,
    reward_statistics,
    tie_rate,
    win_probability,
    win_rate,
)
from trl_rewards.evaluation.pairwise_report import bootstrap_ci, pairwise_report


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- accuracy, ties, win rate


@pytest.mark.parametrize("ties, expected", [("loss", 1 / 3), ("half", 0.5), ("exclude", 0.5)])
def test_pairwise_accuracy_tie_policies(ties, expected):
    """
    chosen=[1, 2, 3], rejected=[0, 2, 4]: margins [1, 0, -1] -> one win, one tie, one loss.
    loss: 1/3; half: (1 + 0.5) / 3 = 0.5; exclude: 1 / (3 - 1) = 0.5.
    """
    assert pairwise_accuracy([1, 2, 3], [0, 2, 4], ties=ties) == pytest.approx(expected)


@pytest.mark.parametrize("ties, expected", [("loss", 0.5), ("half", 0.625), ("exclude", 2 / 3)])
def test_pairwise_accuracy_tie_tolerance(ties, expected):
    """
    chosen=[1, 2, 3, 4], rejected=[0.95, 2.5, 1, 3], tolerance 0.1: margins [0.05, -0.5, 2, 1]
    -> tie, loss, win, win. loss: 2/4; half: (2 + 0.5) / 4 = 0.625; exclude: 2/3. Tie rate 1/4.
    """
    chosen, rejected = [1.0, 2.0, 3.0, 4.0], [0.95, 2.5, 1.0, 3.0]
    assert pairwise_accuracy(chosen, rejected, ties=ties, tie_tolerance=0.1) == pytest.approx(expected)
    assert tie_rate(chosen, rejected, tie_tolerance=0.1) == pytest.approx(0.25)
    assert tie_rate(chosen, rejected) == 0.0


def test_all_ties_documented_values():
    """Constant scores: every pair ties -> loss 0.0, half 0.5, tie rate 1.0, exclude undefined (ValueError)."""
    assert pairwise_accuracy([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert pairwise_accuracy([1.0, 1.0], [1.0, 1.0], ties="half") == 0.5
    assert tie_rate([1.0, 1.0], [1.0, 1.0]) == 1.0
    with pytest.raises(ValueError, match=r"every pair of chosen and rejected is a tie.*ties='exclude'"):
        pairwise_accuracy([1.0, 1.0], [1.0, 1.0], ties="exclude")


def test_single_pair_is_valid():
    """One pair, chosen 2 > rejected 1 -> accuracy 1, no ties."""
    assert pairwise_accuracy([2.0], [1.0]) == 1.0
    assert tie_rate([2.0], [1.0]) == 0.0


@pytest.mark.parametrize("ties", TIE_POLICIES)
def test_win_rate_is_pairwise_accuracy(ties):
    """Model [3, 1, 2, 5] vs reference [1, 1, 4, 0]: win, tie, loss, win -> same value as pairwise_accuracy."""
    model, reference = [3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 4.0, 0.0]
    assert win_rate(model, reference, ties=ties) == pairwise_accuracy(model, reference, ties=ties)
    assert win_rate(model, reference, ties="half") == pytest.approx(2.5 / 4)


def test_win_rate_errors_name_its_arguments():
    with pytest.raises(ValueError, match=r"model_scores\[1\] is nan"):
        win_rate([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"every pair of model_scores and reference_scores is a tie"):
        win_rate([1.0], [1.0], ties="exclude")


@pytest.mark.parametrize("ties, expected", [("loss", 1 / 3), ("half", 0.5), ("exclude", 0.5)])
def test_length_baseline_accuracy(ties, expected):
    """Lengths chosen=[10, 5, 7], rejected=[3, 5, 9]: longer wins once, ties once, loses once (as the first test)."""
    assert length_baseline_accuracy([10, 5, 7], [3, 5, 9], ties=ties) == pytest.approx(expected)


def test_length_baseline_scores_equal_lengths_as_coin_flips_by_default():
    """Every pair of equal length: the baseline has no preference, so its expected accuracy is 0.5 (not 0.0, which
    any model would "beat"). With one longer chosen among 4 pairs: (1 + 3 * 0.5) / 4 = 0.625."""
    assert length_baseline_accuracy([5, 5, 5], [5, 5, 5]) == 0.5
    assert length_baseline_accuracy([6, 5, 5, 5], [5, 5, 5, 5]) == pytest.approx(0.625)


def test_length_baseline_rejects_negative_lengths():
    with pytest.raises(ValueError, match=r"rejected_lengths\[2\] is -1.0; lengths must be >= 0"):
        length_baseline_accuracy([1, 2, 3], [1, 2, -1])


# ---------------------------------------------------------------- probabilities


def test_win_probability_matches_manual_sigmoid():
    """Margins [2, 0, -1]: mean(1/(1+e^-2), 1/2, 1/(1+e^1)) = (0.8808 + 0.5 + 0.2689) / 3 = 0.5499."""
    expected = (sigmoid(2.0) + sigmoid(0.0) + sigmoid(-1.0)) / 3
    assert win_probability([2.0, 0.0, -1.0], [0.0, 0.0, 0.0]) == pytest.approx(expected)
    assert expected == pytest.approx(0.549913, abs=1e-6)


def test_probabilities_are_stable_for_huge_margins():
    """A naive 1/(1+exp(-x)) overflows exp(2000); expit saturates to exactly 1 and 0 without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(pairwise_probabilities([1000.0, -1000.0], [-1000.0, 1000.0]), [1.0, 0.0])
        assert win_probability([1000.0], [-1000.0]) == 1.0


def test_pairwise_probabilities_values():
    """[0, 1] vs [0, -1]: margins [0, 2] -> [0.5, 1/(1+e^-2) = 0.8808]."""
    np.testing.assert_allclose(pairwise_probabilities([0.0, 1.0], [0.0, -1.0]), [0.5, sigmoid(2.0)])


# ---------------------------------------------------------------- calibration

# p -> (confidence, prediction, correct) with outcomes y:
#   0.9, y=1 -> (0.9, 1, yes)   high bin
#   0.8, y=0 -> (0.8, 1, no)    high bin
#   0.3, y=0 -> (0.7, 0, yes)   low bin
#   0.6, y=1 -> (0.6, 1, yes)   low bin
#   0.5, y=1 -> (0.5, tie, no)  low bin
#   0.1, y=1 -> (0.9, 0, no)    high bin
CAL_P = [0.9, 0.8, 0.3, 0.6, 0.5, 0.1]
CAL_Y = [1, 0, 0, 1, 1, 1]


def test_expected_calibration_error_by_hand():
    """
    n_bins=2: bins [0.5, 0.75] and (0.75, 1].
    low: confidences (0.7, 0.6, 0.5) mean 0.6, accuracy 2/3, gap 1/15.
    high: confidences (0.9, 0.8, 0.9) mean 2.6/3, accuracy 1/3, gap 1.6/3.
    ECE = 3/6 * 1/15 + 3/6 * 1.6/3 = 1/30 + 8/30 = 0.3.
    """
    assert expected_calibration_error(CAL_P, CAL_Y, n_bins=2) == pytest.approx(0.3)


def test_calibration_curve_by_hand():
    """Same samples as the ECE test: two bins of three, confidence (0.6, 0.8667), accuracy (2/3, 1/3)."""
    curve = calibration_curve(CAL_P, CAL_Y, n_bins=2)
    assert curve["bin_lower"] == [0.5, 0.75]
    assert curve["bin_upper"] == [0.75, 1.0]
    assert curve["count"] == [3, 3]
    np.testing.assert_allclose(curve["confidence"], [0.6, 2.6 / 3])
    np.testing.assert_allclose(curve["accuracy"], [2 / 3, 1 / 3])


def test_calibration_curve_omits_empty_bins_and_ece_weights_by_count():
    """
    p=[0.97, 0.52], y=[1, 1], 10 bins of width 0.05: bins [0.5, 0.55] and (0.95, 1], both correct.
    ECE = 1/2 * |1 - 0.52| + 1/2 * |1 - 0.97| = 0.24 + 0.015 = 0.255.
    """
    curve = calibration_curve([0.97, 0.52], [1, 1])
    assert curve["count"] == [1, 1]
    np.testing.assert_allclose(curve["bin_lower"], [0.5, 0.95])
    assert expected_calibration_error([0.97, 0.52], [1, 1]) == pytest.approx(0.255)


def test_calibration_bin_edges_are_right_closed():
    """Confidence exactly 0.75 with 2 bins falls in the first bin [0.5, 0.75]."""
    assert calibration_curve([0.75], [1], n_bins=2)["bin_upper"] == [0.75]


def test_perfect_and_tie_calibration():
    """p=[1, 0] with y=[1, 0]: confident and right -> ECE 0. p=0.5 is never correct -> ECE |0 - 0.5| = 0.5."""
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0
    assert expected_calibration_error([0.5, 0.5], [0, 1]) == 0.5


def test_ece_exceeds_one_half_when_confident_and_wrong():
    """p = [0.99, 0.01] with y = [0, 1]: confidence 0.99 in the last bin (0.95, 1], both wrong (accuracy 0), so
    ECE = |0 - 0.99| = 0.99: the range is [0, 1], not [0, 0.5]. Pairwise: chosen - rejected = -10 on every pair gives
    p = σ(-10) = 4.54e-5, confidence 1 - 4.54e-5, never correct, ECE = 0.999955."""
    assert expected_calibration_error([0.99, 0.01], [0, 1]) == pytest.approx(0.99)
    assert pairwise_calibration_error([0.0, 1.0], [10.0, 11.0]) == pytest.approx(1 - sigmoid(-10.0))
    assert pairwise_calibration_error([0.0, 1.0], [10.0, 11.0]) > 0.5


def test_pairwise_calibration_error_by_hand():
    """
    chosen=[2, 0, 0], rejected=[0, 0, 1]: p = [s(2)=0.8808, 0.5, s(-1)=0.2689], outcome 1 for every pair.
    confidences [0.8808, 0.5, 0.7311], correct [yes, no (tie), no]. One bin:
    ECE = |1/3 - (0.8808 + 0.5 + 0.7311) / 3| = |0.3333 - 0.7040| = 0.3707.
    """
    expected = abs(1 / 3 - (sigmoid(2.0) + 0.5 + sigmoid(1.0)) / 3)
    assert pairwise_calibration_error([2.0, 0.0, 0.0], [0.0, 0.0, 1.0], n_bins=1) == pytest.approx(expected)
    assert expected == pytest.approx(0.3707, abs=1e-4)


def test_brier_score_by_hand():
    """p=[0.9, 0.2, 0.5], y=[1, 0, 1]: (0.1^2 + 0.2^2 + 0.5^2) / 3 = (0.01 + 0.04 + 0.25) / 3 = 0.1."""
    assert brier_score([0.9, 0.2, 0.5], [1, 0, 1]) == pytest.approx(0.1)
    assert brier_score([True, False], [True, False]) == 0.0


# ---------------------------------------------------------------- rank correlation

RC_SCORES = [0.1, 0.5, 0.3, 2.0, 1.0, 3.0, 5.0, 5.0, 7.0]
RC_RANKS = [1, 3, 2, 1, 2, 3, 1, 2, 1]
RC_GROUPS = ["a", "a", "a", "b", "b", "b", "c", "c", "d"]


def test_rank_correlation_spearman_by_groups():
    """
    a: scores order matches ranks -> rho 1. b: score ranks [2, 1, 3] vs [1, 2, 3], sum d^2 = 2,
    rho = 1 - 6 * 2 / (3 * 8) = 0.5. c: constant scores, d: one response -> both skipped. Mean 0.75.
    """
    result = rank_correlation(RC_SCORES, RC_RANKS, RC_GROUPS)
    assert result == {"correlation": pytest.approx(0.75), "n_groups": 2, "n_skipped": 2}
    reference = np.mean([stats.spearmanr(RC_SCORES[i : i + 3], RC_RANKS[i : i + 3]).statistic for i in (0, 3)])
    assert result["correlation"] == pytest.approx(reference)


def test_rank_correlation_kendall_by_groups():
    """a: tau 1. b: pairs (2,1)/(1,2) discordant, two concordant -> tau (2 - 1) / 3 = 1/3. Mean 2/3."""
    result = rank_correlation(RC_SCORES, RC_RANKS, RC_GROUPS, method="kendall")
    assert result["correlation"] == pytest.approx(2 / 3)
    reference = np.mean([stats.kendalltau(RC_SCORES[i : i + 3], RC_RANKS[i : i + 3]).statistic for i in (0, 3)])
    assert result["correlation"] == pytest.approx(reference)


@pytest.mark.parametrize("method, reference", [("spearman", stats.spearmanr), ("kendall", stats.kendalltau)])
def test_rank_correlation_global_matches_scipy(method, reference):
    result = rank_correlation(RC_SCORES, RC_RANKS, method=method)
    assert result["correlation"] == pytest.approx(reference(RC_SCORES, RC_RANKS).statistic)
    assert (result["n_groups"], result["n_skipped"]) == (1, 0)


def test_rank_correlation_all_groups_skipped():
    """Groups of one response and a group with constant ranks: nothing to correlate."""
    with pytest.raises(ValueError, match=r"undefined for all 2 group\(s\).*fewer than 2 responses or constant"):
        rank_correlation([1.0, 2.0, 3.0], [1, 2, 2], groups=[0, 1, 1])
    with pytest.raises(ValueError, match=r"undefined for all 1 group"):
        rank_correlation([1.0, 1.0], [1, 2])


def test_rank_correlation_validates():
    with pytest.raises(ValueError, match=r"method must be one of \('spearman', 'kendall'\), got 'pearson'"):
        rank_correlation([1.0, 2.0], [1, 2], method="pearson")
    with pytest.raises(ValueError, match=r"groups must be 1-D with one id per score \(2\), got shape \(3,\)"):
        rank_correlation([1.0, 2.0], [1, 2], groups=[0, 0, 1])
    with pytest.raises(ValueError, match=r"groups\[1\] is nan"):
        rank_correlation([1.0, 2.0], [1, 2], groups=[0.0, float("nan")])
    with pytest.raises(ValueError, match=r"ranks\[0\] is inf"):
        rank_correlation([1.0, 2.0], [float("inf"), 2])


# ---------------------------------------------------------------- statistics and bootstrap


def test_reward_statistics_by_hand():
    """[1, 2, 3, 4]: mean 2.5, population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25, std 1.1180."""
    result = reward_statistics([1.0, 2.0, 3.0, 4.0])
    assert result == {"count": 4, "mean": 2.5, "std": pytest.approx(math.sqrt(1.25)), "min": 1.0, "max": 4.0}
    assert reward_statistics([5.0]) == {"count": 1, "mean": 5.0, "std": 0.0, "min": 5.0, "max": 5.0}


@pytest.mark.parametrize("method", ["percentile", "basic", "bca"])
def test_bootstrap_ci_contains_point_estimate(method):
    """Mean of 1..8 is 4.5; a 95% interval over 1000 resamples is non-trivial and contains it."""
    data = np.arange(1.0, 9.0)
    low, high = bootstrap_ci(np.mean, data, method=method)
    assert low < 4.5 < high
    assert (low, high) == bootstrap_ci(np.mean, data, method=method)  # seeded


@pytest.mark.parametrize("method", ["percentile", "basic", "bca"])
def test_bootstrap_ci_degenerate_data(method):
    """Every resample of [3, 3, 3, 3] has mean 3 -> (3, 3), where scipy's BCa alone gives NaN and a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bootstrap_ci(np.mean, [3.0, 3.0, 3.0, 3.0], method=method) == (3.0, 3.0)
    assert bootstrap_ci(np.mean, [3.0], method=method) == (3.0, 3.0)  # a single row


def test_bootstrap_ci_is_paired():
    """x = y + 1 row by row: every paired resample has mean(x - y) = 1, while unpaired resamples would vary."""
    y = np.array([0.0, 5.0, -2.0, 7.0, 1.0])
    assert bootstrap_ci(lambda a, b: np.mean(a - b), y + 1, y) == pytest.approx((1.0, 1.0))


def test_bootstrap_ci_falls_back_when_bca_is_undefined():
    """
    Median of [0, 0, 0, 0, 1]: every leave-one-out median is 0, so BCa's acceleration is 0/0, yet ~6% of resamples
    draw three 1s (median 1), so the data is not degenerate. The percentile interval (0, 1) is returned.
    """
    data = [0.0, 0.0, 0.0, 0.0, 1.0]
    with pytest.warns(RuntimeWarning, match="BCa interval is undefined"):
        interval = bootstrap_ci(np.median, data, method="bca")
    assert interval == bootstrap_ci(np.median, data, method="percentile") == (0.0, 1.0)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((np.mean,), {}, "samples is empty"),
        ((np.mean, [1.0, 2.0], [1.0]), {}, r"samples must have the same length, got \[2, 1\]"),
        ((np.mean, [1.0, float("nan")]), {}, r"samples\[0\]\[1\] is nan"),
        ((np.mean, [1.0, 2.0]), {"confidence_level": 1.0}, r"confidence_level must be in \(0, 1\)"),
        ((np.mean, [1.0, 2.0]), {"method": "jackknife"}, r"method must be one of"),
        ((np.mean, [1.0, 2.0]), {"n_resamples": 0}, "n_resamples must be a positive integer"),
        (("mean", [1.0, 2.0]), {}, "statistic must be callable"),
        ((lambda x: np.log(np.min(x)), [0.0, 2.0]), {}, "statistic returned -inf"),
        ((lambda x: 1 / np.ptp(x), [1.0, 2.0, 3.0]), {}, "non-finite value on some bootstrap resamples"),
    ],
)
def test_bootstrap_ci_validates(args, kwargs, match):
    with pytest.raises(ValueError, match=match), np.errstate(all="ignore"):
        bootstrap_ci(*args, **kwargs)


# ---------------------------------------------------------------- report


def test_pairwise_report_by_hand():
    """
    chosen=[1, 2, 3], rejected=[0, 2, 4]: margins [1, 0, -1], lengths as in the length-baseline test (one win, one
    tie counted 0.5 by default, one loss: length baseline 0.5, length tie rate 1/3).
    accuracy 1/3, tie rate 1/3, mean margin 0, win probability (s(1) + 0.5 + s(-1)) / 3 = 0.5,
    one-bin ECE |1/3 - (s(1) + 0.5 + s(1)) / 3| = 0.3207, Brier ((1 - s(1))^2 + 0.25 + (1 - s(-1))^2) / 3 = 0.2856.
    """
    report = pairwise_report([1, 2, 3], [0, 2, 4], chosen_lengths=[10, 5, 7], rejected_lengths=[3, 5, 9], n_bins=1)
    assert report == {
        "count": 3,
        "accuracy": pytest.approx(1 / 3),
        "tie_rate": pytest.approx(1 / 3),
        "mean_margin": 0.0,
        "win_probability": pytest.approx(0.5),
        "ece": pytest.approx(abs(1 / 3 - (2 * sigmoid(1.0) + 0.5) / 3)),
        "brier": pytest.approx(((1 - sigmoid(1.0)) ** 2 + 0.25 + (1 - sigmoid(-1.0)) ** 2) / 3),
        "length_baseline_accuracy": pytest.approx(0.5),
        "length_tie_rate": pytest.approx(1 / 3),
    }
    assert report["ece"] == pytest.approx(0.3207, abs=1e-4)
    assert report["brier"] == pytest.approx(0.2856, abs=1e-4)
    lengths = {"chosen_lengths": [10, 5, 7], "rejected_lengths": [3, 5, 9]}
    strict = pairwise_report([1, 2, 3], [0, 2, 4], **lengths, ties="half", length_ties="loss")
    assert strict["length_baseline_accuracy"] == pytest.approx(1 / 3) and strict["accuracy"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="length_ties must be one of"):
        pairwise_report([1.0], [0.0], chosen_lengths=[1], rejected_lengths=[1], length_ties="coin")


@pytest.mark.parametrize("ties", TIE_POLICIES)
def test_pairwise_report_bootstrap_intervals(ties):
    """Every interval contains its point estimate; under "exclude" no resample is all ties (pair 2 ties)."""
    chosen, rejected = [1.0, 2.0, 3.0, 0.5, 2.5, 1.5], [0.0, 2.0, 4.0, 0.0, 1.0, 1.0]
    report = pairwise_report(chosen, rejected, ties=ties, bootstrap=200)
    for name in ("accuracy", "win_probability", "ece", "brier"):
        low, high = report[f"{name}_ci"]
        assert low <= report[name] <= high, name
    assert "length_baseline_accuracy" not in report
    assert "accuracy_ci" not in pairwise_report(chosen, rejected)


def test_pairwise_report_validates():
    with pytest.raises(ValueError, match="chosen_lengths and rejected_lengths must be given together"):
        pairwise_report([1.0], [0.0], chosen_lengths=[3])
    with pytest.raises(ValueError, match=r"chosen_lengths must have one length per pair \(1\)"):
        pairwise_report([1.0], [0.0], chosen_lengths=[3, 4], rejected_lengths=[1, 2])
    with pytest.raises(ValueError, match="bootstrap must be a non-negative integer"):
        pairwise_report([1.0], [0.0], bootstrap=-1)
    with pytest.raises(ValueError, match="ties must be one of"):
        pairwise_report([1.0], [0.0], ties="draw")


# ---------------------------------------------------------------- input validation shared by every metric

PAIRED = [pairwise_accuracy, tie_rate, win_probability, pairwise_probabilities, pairwise_calibration_error]
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("fn", PAIRED, ids=lambda fn: fn.__name__)
@pytest.mark.parametrize(
    "first, second, match",
    [
        ([], [], "{0} is empty"),
        ([1.0, 2.0], [1.0], "{0} and {1} must have the same length, got 2 and 1"),
        ([1.0, 2.0, 3.0, NAN], [0.0] * 4, r"{0}\[3\] is nan; every value must be finite"),
        ([1.0, 2.0], [0.0, INF], r"{1}\[1\] is inf"),
        ([1.0, 2.0], [-INF, 0.0], r"{1}\[0\] is -inf"),
        ([1.0, None], [0.0, 0.0], r"{0}\[1\] is nan"),
        ([[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0], r"{0} must be 1-D \(one value per row\), got shape \(2, 2\)"),
        (1.0, [1.0], r"{0} must be 1-D"),
        (["a", "b"], [1.0, 2.0], "{0} must be numeric"),
    ],
)
def test_paired_inputs_are_validated(fn, first, second, match):
    """Each metric names its own arguments and the first offending index."""
    names = ("model_scores", "reference_scores") if fn is win_probability else ("chosen", "rejected")
    with pytest.raises(ValueError, match=match.format(*names)):
        fn(first, second)


def test_column_vectors_and_tensors_are_accepted():
    """A (n, 1) head output is flattened; tensors that require grad or are bfloat16 are detached and widened."""
    import torch

    assert pairwise_accuracy(np.array([[1.0], [2.0]]), np.array([[0.0], [3.0]])) == 0.5
    chosen = torch.tensor([1.0, 2.0], requires_grad=True)
    assert pairwise_accuracy(chosen, torch.tensor([0.0, 3.0], dtype=torch.bfloat16)) == 0.5


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: pairwise_accuracy([1.0], [0.0], ties="draw"), r"ties must be one of \('loss', 'half', 'exclude'\)"),
        (lambda: pairwise_accuracy([1.0], [0.0], tie_tolerance=-0.1), "tie_tolerance must be a finite number >= 0"),
        (lambda: tie_rate([1.0], [0.0], tie_tolerance=NAN), "tie_tolerance must be a finite number >= 0"),
        (lambda: win_rate([1.0], [0.0], tie_tolerance="0.1"), "tie_tolerance must be a finite number >= 0"),
        (lambda: length_baseline_accuracy([1], [0], ties=None), "ties must be one of"),
        (lambda: brier_score([0.5, 1.2], [1, 1]), r"probabilities\[1\] is 1.2, outside \[0, 1\]"),
        (lambda: brier_score([0.5, -0.1], [1, 1]), r"probabilities\[1\] is -0.1, outside \[0, 1\]"),
        (lambda: brier_score([0.5, 0.5], [1, 2]), r"outcomes\[1\] is 2.0; outcomes must be 0 or 1"),
        (lambda: expected_calibration_error([0.5], [0.5]), r"outcomes\[0\] is 0.5"),
        (lambda: expected_calibration_error([0.5], [1, 0]), "probabilities and outcomes must have the same length"),
        (lambda: expected_calibration_error([], []), "probabilities is empty"),
        (lambda: calibration_curve([0.5], [1], n_bins=0), "n_bins must be a positive integer, got 0"),
        (lambda: expected_calibration_error([0.5], [1], n_bins=True), "n_bins must be a positive integer"),
        (lambda: pairwise_calibration_error([1.0], [0.0], n_bins=2.5), "n_bins must be a positive integer"),
        (lambda: reward_statistics([]), "scores is empty"),
        (lambda: reward_statistics([0.0, NAN]), r"scores\[1\] is nan"),
    ],
)
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
