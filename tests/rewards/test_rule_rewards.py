"""AnswerCorrectnessReward's default extractor (GSM8K `#### N`, `\\boxed{}`, "The answer is N") and its strict,
numeric answer comparison."""

import pickle

import pytest

from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward, extract_final_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),  # GSM8K's reference format
        ("#### 1,000", "1000"),
        ("So the total is $\\boxed{18}$.", "18"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces: the whole content
        ("The answer is 5.", "5"),
        ("The answer is **7**", 7),  # the demo's markdown bold, read by the synthetic parser
        ("The answer is 3. Checking: \\boxed{4}", "4"),  # the last answer wins
        ("\\boxed{4} so the answer is 3.", "3"),
        ("no answer here", None),
    ],
)
def test_default_extractor_reads_gsm8k_boxed_and_the_answer_is(text, expected):
    assert extract_final_answer(text) == expected


def test_gsm8k_and_boxed_answers_are_scored_numerically():
    """Gold 18 (an int, as GSM8K's parsed answer) against `#### 18`, `\\boxed{18.0}`, `The answer is 18` and
    `#### 1,8` (not a number: wrong); gold "1,000" against `#### 1000.00`; gold 0.5 against `\\boxed{.5}`."""
    fn = AnswerCorrectnessReward()
    completions = ["... #### 18", "\\boxed{18.0}", "The answer is 18.", "#### 17", "#### 1000.00", "\\boxed{.5}"]
    answers = [18, 18, "18", 18, "1,000", 0.5]
    assert fn(["p"] * 6, completions, answer=answers) == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert fn(["p"], ["\\boxed{x^2}"], answer=[" x^2 "]) == [1.0]  # non-numbers compare as stripped text
    assert pickle.loads(pickle.dumps(fn))(["p"], ["#### 3"], answer=[3]) == [1.0]


def test_types_compare_strictly():
    """A bool gold answer is refused with its index (True == 1 would make it match the answer "1"); a number never
    equals a non-numeric string, and an extractor returning a bool cannot match the number 1."""
    fn = AnswerCorrectnessReward()
    with pytest.raises(ValueError, match=r"answer_correctness: answer\[1\] is the bool True"):
        fn(["p", "q"], ["The answer is 1.", "The answer is 1."], answer=[1, True])
    assert fn(["p"], ["\\boxed{one}"], answer=[1]) == [0.0]
    bool_extractor = AnswerCorrectnessReward(extractor=_always_true)
    with pytest.raises(ValueError, match="the answer extracted from completion 0 is the bool True"):
        bool_extractor(["p"], ["anything"], answer=[1])


def _always_true(text):
    return True
