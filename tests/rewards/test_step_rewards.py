"""Step reward functions: the contract, the exact arithmetic checker on the synthetic task, and the PRM's step mode
with a tokenizer other than the policy's."""

import functools
import pickle

import pytest

from trl_rewards.data.synthetic import STEP_SEPARATOR, build_synthetic_datasets, generate_problems
from trl_rewards.inference.step_scoring import ProcessRewardScorer
from trl_rewards.rewards.model_rewards import ProcessRewardFunction
from trl_rewards.rewards.step_rewards import ArithmeticStepReward, StepRewardFunction, step_spans
from trl_rewards.step_advantages import check_step_rewards, step_end_tokens, token_char_ends
from trl_rewards.testing import tiny_bert_token_classifier, tiny_llama_tokenizer


def test_step_spans_match_split_steps():
    text = "  a = 1.\n\n b \n"
    assert step_spans(text) == [(2, 8), (11, 12)]
    assert [text[s:e] for s, e in step_spans(text)] == ["a = 1.", "b"]
    assert step_spans("x | y", " | ") == [(0, 1), (4, 5)]
    assert step_spans("\n\n") == []
    with pytest.raises(ValueError, match="separator"):
        step_spans("a", "")


@pytest.fixture(scope="module")
def synthetic():
    return build_synthetic_datasets(n_train=60, n_test=1, seed=3)["stepwise_train"]


@functools.cache
def _gold_chains() -> dict[str, list[int]]:
    return {p.prompt + STEP_SEPARATOR: [op.result for op in p.operations] for p in generate_problems(200, seed=3)}


def _gold_values(prompt: str) -> list[int]:
    return _gold_chains()[prompt]


def test_arithmetic_checker_reproduces_the_synthetic_step_labels(synthetic):
    """With each row's gold intermediate results, the checker's verdicts are exactly the synthetic step labels (every
    step from the first error on is wrong), for every kind of corruption; its offsets are the ends of the steps."""
    reward = ArithmeticStepReward(values_column="values")
    prompts = list(synthetic["prompt"])
    completions = [STEP_SEPARATOR.join(steps) for steps in synthetic["completions"]]
    values = [_gold_values(p) for p in prompts]
    out = reward(prompts, completions, values=values)
    assert check_step_rewards(out, completions, reward.__name__)  # the contract holds
    for row, labels, text, steps in zip(out, synthetic["labels"], completions, synthetic["completions"], strict=True):
        assert [r for _, r in row] == [1.0 if label else 0.0 for label in labels]
        assert [text[:end].rsplit(STEP_SEPARATOR, 1)[-1] for end, _ in row] == steps
    if "error_type" in synthetic.column_names:  # several kinds of corruption were checked
        assert len({kind for kind in synthetic["error_type"] if kind != "none"}) >= 3


def test_arithmetic_checker_without_gold_values(synthetic):
    """Arithmetic alone: every correct solution is all right, and every corrupted solution gets at least one wrong
    step, since its final answer differs from the gold one (`answer` column); an arithmetic slip is caught at its
    step."""
    reward = ArithmeticStepReward()
    rows = list(zip(synthetic["prompt"], synthetic["completions"], synthetic["labels"], strict=True))
    answers = [_gold_values(p)[-1] for p, _, _ in rows]
    out = reward([p for p, _, _ in rows], [STEP_SEPARATOR.join(s) for _, s, _ in rows], answer=answers)
    for (_, _, labels), row in zip(rows, out, strict=True):
        verdicts = [r == 1.0 for _, r in row]
        if all(labels):
            assert all(verdicts)
        else:
            assert not all(verdicts) and verdicts.index(False) >= labels.index(False)


def test_arithmetic_checker_rules():
    prompt = "Mia has 12 apples. She doubles them, then gives away 5. How many apples does she have now?"
    reward = ArithmeticStepReward(incorrect_reward=-1.0)
    text = "Let me think.\nDoubling gives 12 * 2 = 24.\nGiving away 5 leaves 24 - 5 = 19.\nThe answer is 19."
    assert reward([prompt], [text]) == [[(41, 1.0), (75, 1.0), (93, 1.0)]]  # the prose step gets no reward
    slip = "Doubling gives 12 * 2 = 25.\nGiving away 5 leaves 25 - 5 = 20.\nThe answer is 20."
    assert [r for _, r in reward([prompt], [slip])[0]] == [-1.0, -1.0, -1.0]
    unknown = "Doubling gives 12 * 7 = 84."  # 7 is in neither the prompt nor an earlier result
    assert reward([prompt], [unknown]) == [[(27, -1.0)]]
    wrong_answer = "Doubling gives 12 * 2 = 24.\nThe answer is 19."
    assert [r for _, r in reward([prompt], [wrong_answer], answer=[19])[0]] == [1.0, 1.0]
    assert [r for _, r in reward([prompt], [wrong_answer])[0]] == [1.0, -1.0]  # no gold: the last result, 24
    assert reward([prompt], ["no numbers here"]) == [None]
    independent = ArithmeticStepReward(stop_at_first_error=False)
    assert [r for _, r in independent([prompt], [slip])[0]] == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="must exceed"):
        ArithmeticStepReward(correct_reward=0.0)
    with pytest.raises(ValueError, match="1 values in 'answer' for 2"):
        reward([prompt, prompt], [text, text], answer=[19])
    assert isinstance(reward, StepRewardFunction) and reward.returns_step_rewards
    assert pickle.loads(pickle.dumps(reward))([prompt], [text]) == reward([prompt], [text])


def test_process_reward_function_step_mode_with_its_own_tokenizer():
    """A BERT PRM (its own character tokenizer, `[CLS]`/`[SEP]`) in step mode returns, per completion, every step's
    P(correct) from the scorer with the character end of the step; mapped onto a policy tokenizer with other ids and
    specials (Llama-style, with an eos token), every step ends on the policy token holding its last character."""
    model, tok = tiny_bert_token_classifier(seed=6)
    fn = ProcessRewardFunction(model, tok, step_separator=" | ", step_rewards=True, device="cpu")
    prompts = ["Q1", "Q2", "Q3"]
    completions = ["a = 1 | b = 2 | The answer is 3.", " | only step | ", " | "]
    out = fn(prompts, completions)
    probs = ProcessRewardScorer(model, tok).step_probabilities(
        prompts[:2], [["a = 1", "b = 2", "The answer is 3."], ["only step"]]
    )
    assert [[e for e, _ in row] for row in out[:2]] == [[5, 13, 32], [12]]
    assert [[p for _, p in row] for row in out[:2]] == [pytest.approx(p, abs=1e-9) for p in probs]
    assert out[2] is None  # no step
    assert check_step_rewards(out, completions, fn.__name__)
    policy = tiny_llama_tokenizer()
    ids = policy(completions[0], add_special_tokens=False)["input_ids"] + [policy.eos_token_id]
    ends = step_end_tokens([e for e, _ in out[0]], token_char_ends(policy, ids))
    assert ends == [4, 12, len(ids) - 1]  # "1" is token 4, "2" token 12; the last step takes the eos along
    assert isinstance(fn, StepRewardFunction) and fn.returns_step_rewards
    assert not getattr(ProcessRewardFunction(model, tok, device="cpu"), "returns_step_rewards", False)
    with pytest.raises(ValueError, match="aggregation and temperature unused"):
        ProcessRewardFunction(model, tok, step_rewards=True, aggregation="min")
