"""Best-of-N selection and its baselines on a literal example worked out by hand."""

import pytest

from trl_rewards.evaluation.best_of_n import (
    best_of_n_report,
    best_of_n_solve_rate,
    candidate_correctness,
    majority_vote_solve_rate,
    oracle_solve_rate,
    random_pick_solve_rate,
)

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
    report = best_of_n_report(ANSWERS, GOLD, SCORES)
    assert report == {
        "n_problems": 4,
        "n_candidates": 14,
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
