"""The selection rules of `make-pairs`, on hand-built scores: best vs worst (ties, missing scores, minimum gap,
identical texts) and SPIN pairs."""

import math

import pytest

from trl_rewards.data.pair_building import (
    PairCounts,
    best_worst_pairs,
    check_prompt_rows,
    select_best_worst,
    spin_pairs,
)


@pytest.mark.parametrize(
    ("completions", "scores", "min_gap", "expected"),
    [
        (["a", "b", "c"], [0.2, 0.9, -1.0], 0.0, (1, 2)),
        (["a", "b", "c", "d"], [1.0, 3.0, 3.0, 1.0], 0.0, (1, 0)),  # equal top / bottom: the first of each
        (["a", "b", "c"], [None, 2.0, 1.0], 0.0, (1, 2)),  # a missing score is left out, not read as 0
        (["a", "b", "c"], [math.nan, 2.0, 5.0], 0.0, (2, 1)),  # NaN is missing too
        (["a", "b"], [None, 2.0], 0.0, "unscored"),  # one scored sample cannot make a pair
        (["a", "b", "c"], [None, None, None], 0.0, "unscored"),
        (["", "b", "c"], [9.0, 1.0, 1.0], 0.0, "tie"),  # the empty sample is left out, the rest tie
        (["a", "b"], [2.0, 2.0], 0.0, "tie"),  # no gap is never a preference, even with min_gap 0
        (["a", "b"], [2.0, 2.5], 1.0, "small_gap"),
        (["a", "b"], [2.0, 3.0], 1.0, (1, 0)),  # a gap equal to min_gap is kept
        (["same", " same "], [1.0, 0.0], 0.0, "identical"),
    ],
)
def test_select_best_worst(completions, scores, min_gap, expected):
    assert select_best_worst(completions, scores, min_gap) == expected


def test_select_best_worst_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2 completions but 1 scores"):
        select_best_worst(["a", "b"], [1.0])
    with pytest.raises(ValueError, match="min_gap must be >= 0"):
        select_best_worst(["a", "b"], [1.0, 2.0], min_gap=-1)


def test_best_worst_pairs_writes_the_preference_format_and_counts_skips():
    prompts = ["Q1 ", [{"role": "user", "content": "Q2"}], "Q3 ", "Q4 "]
    completions = [["x", "y", "z"], ["p", "q"], ["m", "n"], ["u", "v"]]
    scores = [[0.5, 1.5, 0.0], [4.0, 1.0], [None, None], [1.0, 1.2]]
    rows, counts = best_worst_pairs(prompts, completions, scores, min_gap=0.5)
    assert rows == [
        {"prompt": "Q1 ", "chosen": "y", "rejected": "z", "score_chosen": 1.5, "score_rejected": 0.0},
        {
            "prompt": [{"role": "user", "content": "Q2"}],
            "chosen": [{"role": "assistant", "content": "p"}],
            "rejected": [{"role": "assistant", "content": "q"}],
            "score_chosen": 4.0,
            "score_rejected": 1.0,
        },
    ]
    assert (counts["kept"], counts["unscored"], counts["small_gap"], counts.skipped) == (2, 1, 1, 2)
    assert counts.summary() == "kept 2 pairs, skipped 2 prompts (unscored 1, small_gap 1)"
    with pytest.raises(ValueError, match="row 0: got 2 completions but 1 scores"):
        best_worst_pairs(["Q"], [["a", "b"]], [[1.0]])


def test_spin_pairs_take_the_reference_as_chosen():
    prompts = ["Q1 ", [{"role": "user", "content": "Q2"}]]
    rows, counts = spin_pairs(prompts, ["gold 1", "gold 2"], [["mine 1", "", "gold 1 "], ["mine 2"]])
    assert rows == [
        {"prompt": "Q1 ", "chosen": "gold 1", "rejected": "mine 1"},
        {
            "prompt": [{"role": "user", "content": "Q2"}],
            "chosen": [{"role": "assistant", "content": "gold 2"}],
            "rejected": [{"role": "assistant", "content": "mine 2"}],
        },
    ]
    assert counts == PairCounts(kept=2, empty_sample=1, identical=1)


@pytest.mark.parametrize(
    ("rows", "reference", "message"),
    [
        ([{"text": "Q"}], None, "row 0: no 'prompt' column"),
        ([{"prompt": "Q"}, {"prompt": "  "}], None, 'row 1: "prompt" must be non-empty'),
        ([{"prompt": [{"content": "Q"}]}], None, 'row 0: "prompt" must be text or a non-empty list'),
        ([{"prompt": "Q"}], "answer", "row 0: no 'answer' column"),
        ([{"prompt": "Q", "answer": None}], "answer", 'row 0: "answer" must be a non-empty answer'),
    ],
)
def test_check_prompt_rows_names_the_row_and_field(rows, reference, message):
    with pytest.raises(ValueError, match=message):
        check_prompt_rows(rows, "prompt", reference)
    check_prompt_rows([{"prompt": [{"role": "user", "content": "Q"}], "answer": "A"}], "prompt", "answer")
