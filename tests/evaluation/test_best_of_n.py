"""Best-of-N selection and its baselines on a literal example worked out by hand."""

import numpy as np
import pytest

from trl_rewards.evaluation.best_of_n import (
    answer_rule_counts,
    best_of_n_report,
    best_of_n_solve_rate,
    candidate_correctness,
    extract_answer_with_rule,
    majority_vote_solve_rate,
    oracle_solve_rate,
    random_pick_solve_rate,
    weighted_vote_solve_rate,
)
from trl_rewards.evaluation.pairwise_report import bootstrap_ci
from trl_rewards.rewards.rule_rewards import extract_final_answer

GOLD = ["1", "2", "3", "9"]
ANSWERS = [
    ["1", "1", "5", "7"],  # top score is candidate 1 ("1", right); majority "1" (right); 2 of 4 right
    ["4", "4", "2", None],  # top score is the answerless candidate (wrong); majority "4" (wrong); 1 of 4 right
    ["3", "5", "5", "3"],  # top score tied between "3" and "5": 1/2; vote tied "3"/"5": 1/2; 2 of 4 right
    [None, None],  # no answer at all (N = 2): everything 0
]
SCORES = [[0.1, 0.9, 0.5, 0.2], [0.3, 0.8, 0.8, 0.9], [0.7, 0.7, 0.1, 0.2], [1.0, 2.0]]


def test_rates_hand_derived():
    """best-of-N = (1 + 0 + 1/2 + 0) / 4 = 0.375; majority = (1 + 0 + 1/2 + 0) / 4 = 0.375;
    random pick = (2/4 + 1/4 + 2/4 + 0) / 4 = 0.3125; oracle = (1 + 1 + 1 + 0) / 4 = 0.75."""
    assert best_of_n_solve_rate(ANSWERS, GOLD, SCORES) == pytest.approx(0.375)
    assert majority_vote_solve_rate(ANSWERS, GOLD) == pytest.approx(0.375)
    assert random_pick_solve_rate(ANSWERS, GOLD) == pytest.approx(0.3125)
    assert oracle_solve_rate(ANSWERS, GOLD) == pytest.approx(0.75)
    assert candidate_correctness(ANSWERS, GOLD)[1] == [False, False, True, False]


def test_report_and_selection_order():
    """Weighted vote (sums of scores per answer): problem 0 "1": 0.1 + 0.9 = 1.0 > "5": 0.5 (right); problem 1
    "4": 0.3 + 0.8 = 1.1 > "2": 0.8, the answerless 0.9 does not vote (wrong); problem 2 "3": 0.7 + 0.2 = 0.9 >
    "5": 0.7 + 0.1 = 0.8 (right, where the plain vote and best-of-N tie); problem 3 no vote (0): (1+0+1+0)/4 = 0.5."""
    report = best_of_n_report(ANSWERS, GOLD, SCORES)
    assert report == {
        "n_problems": 4,
        "n_candidates": 14,
        "pass@n": pytest.approx(0.75),
        "maj@n": pytest.approx(0.375),
        "bon@n": pytest.approx(0.375),
        "weighted_vote@n": pytest.approx(0.5),
        "best_of_n": pytest.approx(0.375),
        "majority_vote": pytest.approx(0.375),
        "random_pick": pytest.approx(0.3125),
        "oracle": pytest.approx(0.75),
    }
    # a perfect verifier reaches the oracle; an inverted one does worse than random
    perfect = [[float(c) for c in row] for row in candidate_correctness(ANSWERS, GOLD)]
    assert best_of_n_solve_rate(ANSWERS, GOLD, perfect) == pytest.approx(oracle_solve_rate(ANSWERS, GOLD))
    inverted = [[-s for s in row] for row in perfect]
    assert best_of_n_solve_rate(ANSWERS, GOLD, inverted) < random_pick_solve_rate(ANSWERS, GOLD)


@pytest.mark.parametrize(
    "answers, gold, scores, message",
    [
        ([["1"]], ["1", "2"], [[0.0]], "answers for 1 problems but 2 gold"),
        ([["1"], []], ["1", "2"], [[0.0], []], "problem 1 has no candidate"),
        ([["1", "2"]], ["1"], [[0.0]], "problem 0: 2 candidates but 1 scores"),
        ([["1", "2"]], ["1"], [[0.0, float("nan")]], "score of candidate 1 is nan"),
        ([["1"]], [None], [[0.0]], "gold answer is None"),
    ],
)
def test_bad_inputs_name_the_problem(answers, gold, scores, message):
    with pytest.raises(ValueError, match=message):
        best_of_n_report(answers, gold, scores)


def test_weighted_vote_differs_from_majority_and_best_of_n():
    """Problem A (gold "y"): "x" x3 at 0.1 and "y" x2 at 0.9, 0.8: the vote picks "x" (wrong), best-of-N candidate 3
    ("y", right), the weighted vote "y" (1.7 > 0.3, right). Problem B (gold "y"): "x" 0.9, "y" 0.5 + 0.5: best-of-N
    picks "x" (wrong), the vote and the weighted vote "y" (1.0 > 0.9, right)."""
    answers, gold = [["x", "x", "x", "y", "y"], ["x", "y", "y"]], ["y", "y"]
    scores = [[0.1, 0.1, 0.1, 0.9, 0.8], [0.9, 0.5, 0.5]]
    assert majority_vote_solve_rate(answers[:1], gold[:1]) == 0.0
    assert best_of_n_solve_rate(answers[:1], gold[:1], scores[:1]) == 1.0
    assert best_of_n_solve_rate(answers[1:], gold[1:], scores[1:]) == 0.0
    assert weighted_vote_solve_rate(answers, gold, scores) == 1.0


def test_weighted_vote_ties_and_score_kinds():
    """Tie: "a" 0.3 against "b" 0.1 + 0.2 (= 0.30000000000000004 in floats) is a tie, counting 1/2. Logits [1, 0, 0]
    for ["x", "y", "y"] (gold "y"): weights σ(1) = 0.731 < σ(0) + σ(0) = 1.0, "y" wins; the raw logits would have
    voted 1 against 0 for "x", and a negative probability is refused."""
    assert weighted_vote_solve_rate([["a", "b", "b"]], ["a"], [[0.3, 0.1, 0.2]]) == pytest.approx(0.5)
    assert weighted_vote_solve_rate([["x", "y", "y"]], ["y"], [[1.0, 0.0, 0.0]], score_kind="logit") == 1.0
    assert weighted_vote_solve_rate([["x", "y", "y"]], ["y"], [[1.0, 0.0, 0.0]]) == 0.0
    assert weighted_vote_solve_rate([["x", "y", "y"]], ["x"], [[2.0, -1.0, -1.0]], score_kind="logit") == 1.0
    with pytest.raises(ValueError, match="candidate 1 is -1.0 < 0.*score_kind='logit'"):
        best_of_n_report([["x", "y", "y"]], ["x"], [[2.0, -1.0, -1.0]])
    with pytest.raises(ValueError, match="score_kind"):
        weighted_vote_solve_rate([["x"]], ["x"], [[1.0]], score_kind="raw")


def test_several_score_sets_and_bootstrap_intervals():
    """A perfect verifier (1 for a right candidate, 0 otherwise) reaches pass@N = 0.75 with both rules; each interval
    is `bootstrap_ci` of the per-problem values: best-of-N solves problems [1, 0, 1/2, 0]."""
    perfect = [[float(c) for c in row] for row in candidate_correctness(ANSWERS, GOLD)]
    report = best_of_n_report(ANSWERS, GOLD, {"model": SCORES, "perfect": perfect}, bootstrap=200, seed=3)
    assert "best_of_n" not in report and set(report["verifiers"]) == {"model", "perfect"}
    assert report["verifiers"]["perfect"]["bon@n"] == pytest.approx(0.75)
    assert report["verifiers"]["perfect"]["weighted_vote@n"] == pytest.approx(0.75)
    model = report["verifiers"]["model"]
    assert model["bon@n"] == pytest.approx(0.375) and model["weighted_vote@n"] == pytest.approx(0.5)
    assert model["bon@n_ci"] == pytest.approx(list(bootstrap_ci(np.mean, [1, 0, 0.5, 0], n_resamples=200, seed=3)))
    assert report["pass@n_ci"] == pytest.approx(list(bootstrap_ci(np.mean, [1, 1, 1, 0], n_resamples=200, seed=3)))
    for key in ("pass@n", "maj@n", "random_pick"):
        low, high = report[f"{key}_ci"]
        assert low <= report[key] <= high and low < high
    solved = best_of_n_report([["1"], ["2"]], ["1", "2"], [[0.5], [0.5]], bootstrap=50)
    assert solved["bon@n_ci"] == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"problem 0 \(perfect\): 4 candidates but 3 scores"):
        best_of_n_report(ANSWERS, GOLD, {"model": SCORES, "perfect": [row[:3] for row in perfect]})
    with pytest.raises(ValueError, match="bootstrap"):
        best_of_n_report(ANSWERS, GOLD, SCORES, bootstrap=-1)
    only_votes = best_of_n_report(ANSWERS, GOLD)
    assert "bon@n" not in only_votes and only_votes["maj@n"] == pytest.approx(0.375)


@pytest.mark.parametrize(
    "text, answer, rule",
    [
        ("3 + 4 = 7\n#### 7", "7", "gsm8k_hashes"),
        ("10 * 100 = 1000\nA: 1,000", "1000", "a_line"),
        ("So it is 12.\n\n# Answer\n\n12", "12", "answer_heading"),
        ("The final answer is: 18.", "18", "answer_is"),
        ("Thus $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "boxed"),
        ("\\boxed{5} was a slip. The answer is 6", "6", "answer_is"),  # a marker after the last box wins
        ("The answer is 6. Then \\boxed{5}", "5", "boxed"),
        ("The answer is **42**.", "42", "answer_is_loose"),
        ("no answer here", None, None),
    ],
)
def test_extract_answer_with_rule(text, answer, rule):
    """The answer is `extract_final_answer`'s (as a string), the rule is the one that matched."""
    assert extract_answer_with_rule(text) == (answer, rule)
    expected = extract_final_answer(text)
    assert answer == (None if expected is None else str(expected))


def test_answer_rule_counts():
    texts = ["#### 1", "#### 2", "\\boxed{3}", "nothing"]
    assert answer_rule_counts(texts) == {"gsm8k_hashes": 2, "boxed": 1, None: 1}
