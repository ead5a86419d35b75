"""PairwiseRewardFunction in TRL's contract: P(completion ≻ reference column), best-of-group and group-mean rewards
equal to hand combinations of the scorer's win probabilities; pickling, lazy loading and errors."""

import inspect
import pickle
from types import SimpleNamespace

import pytest
from trl.trainer.utils import get_callable_name

from trl_rewards.inference.pairwise_scoring import PairwiseScorer
from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.pairwise_rewards import PairwiseRewardFunction
from trl_rewards.testing import save_tiny, tiny_bert_reward_model, tiny_llama_reward_model

# two prompts, three generations each (GRPO's layout)
PROMPTS = ["Add 2 and 3.\n"] * 3 + ["Say hi.\n"] * 3
COMPLETIONS = ["5", "The answer is 5.", "6", "hi", "hello!", "bye"]
REFERENCES = ["2 + 3 = 5", "2 + 3 = 5", "2 + 3 = 5", "hi there", None, "hi there"]
EXTRA = {"reference": REFERENCES, "trainer_state": SimpleNamespace(global_step=1), "log_extra": lambda *a: None}


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return tiny_llama_reward_model(seed=4)


def _call(fn, **kwargs):
    return fn(prompts=list(PROMPTS), completions=list(COMPLETIONS), completion_ids=None, **{**EXTRA, **kwargs})


@pytest.mark.parametrize("reference", ["reference", "best_of_group", "group_mean"])
def test_contract(model_and_tokenizer, reference):
    fn = PairwiseRewardFunction(*model_and_tokenizer, reference=reference, name="pm", device="cpu")
    assert get_callable_name(fn) == "pm"
    assert list(inspect.signature(fn).parameters)[:3] == ["prompts", "completions", "completion_ids"]
    rewards = _call(fn)
    assert len(rewards) == len(COMPLETIONS)
    assert all(r is None or (isinstance(r, float) and 0 <= r <= 1) for r in rewards)
    clone = pickle.loads(pickle.dumps(fn))
    assert _call(clone) == pytest.approx(rewards, abs=1e-6)


def test_reference_column_is_the_win_probability(model_and_tokenizer):
    """reward_i = P(completion_i ≻ reference_i); a missing reference gives None."""
    fn = PairwiseRewardFunction(*model_and_tokenizer, reference="reference", device="cpu")
    rows = [i for i, r in enumerate(REFERENCES) if r is not None]
    expected = PairwiseScorer(*model_and_tokenizer).win_probability(
        [PROMPTS[i] for i in rows], [COMPLETIONS[i] for i in rows], [REFERENCES[i] for i in rows]
    )
    rewards = _call(fn)
    assert rewards[4] is None
    assert [rewards[i] for i in rows] == pytest.approx(expected, abs=1e-6)


def _round_robin(scorer, group):
    beats = {}
    for i in group:
        for j in group:
            if i != j:
                beats[i, j] = scorer.win_probability([PROMPTS[i]], [COMPLETIONS[i]], [COMPLETIONS[j]])[0]
    return beats


@pytest.mark.parametrize("num_generations", [None, 3])
def test_group_rewards_by_hand(model_and_tokenizer, num_generations):
    """By hand from single-pair win probabilities: s_i = mean_{j≠i} P(i ≻ j); group_mean = s_i; best_of_group =
    P(i ≻ b) with b = argmax s, and 0.5 for b."""
    scorer = PairwiseScorer(*model_and_tokenizer)
    mean_fn = PairwiseRewardFunction(*model_and_tokenizer, reference="group_mean", num_generations=num_generations)
    best_fn = PairwiseRewardFunction(*model_and_tokenizer, reference="best_of_group", num_generations=num_generations)
    mean_rewards, best_rewards = _call(mean_fn), _call(best_fn)
    for group in (range(0, 3), range(3, 6)):
        beats = _round_robin(scorer, group)
        scores = {i: sum(beats[i, j] for j in group if j != i) / 2 for i in group}
        best = max(group, key=lambda i: scores[i])
        for i in group:
            assert mean_rewards[i] == pytest.approx(scores[i], abs=1e-6)
            assert best_rewards[i] == pytest.approx(0.5 if i == best else beats[i, best], abs=1e-6)
    # P(i ≻ j) + P(j ≻ i) = 1, so the round-robin scores of a group of n average to 1/2
    assert sum(mean_rewards[:3]) / 3 == pytest.approx(0.5, abs=1e-12)


def test_group_of_one_and_conversational_inputs(model_and_tokenizer):
    fn = PairwiseRewardFunction(*model_and_tokenizer, reference="best_of_group")
    messages = [[{"role": "user", "content": "q"}], [{"role": "user", "content": "other"}]]
    completions = [[{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "b"}]]
    assert fn(prompts=messages, completions=completions) == [0.5, 0.5]


def test_errors(model_and_tokenizer):
    with pytest.raises(ValueError, match="reference must be"):
        PairwiseRewardFunction(*model_and_tokenizer, reference="")
    with pytest.raises(ValueError, match="num_generations"):
        PairwiseRewardFunction(*model_and_tokenizer, reference="group_mean", num_generations=0)
    fn = PairwiseRewardFunction(*model_and_tokenizer, reference="answer_text")
    with pytest.raises(ValueError, match="'answer_text' is not among"):
        _call(fn)
    grouped = PairwiseRewardFunction(*model_and_tokenizer, reference="group_mean", num_generations=4)
    with pytest.raises(ValueError, match="not a multiple of num_generations=4"):
        _call(grouped)
    split = PairwiseRewardFunction(*model_and_tokenizer, reference="group_mean", num_generations=2)
    with pytest.raises(ValueError, match="row 3 has another prompt than row 2"):
        _call(split)


def test_path_loads_lazily_counts_truncation_and_joins_an_ensemble(tmp_path):
    path = save_tiny(*tiny_bert_reward_model(seed=5), tmp_path / "pair_pm")
    fn = PairwiseRewardFunction(path, reference="reference", max_length=48)
    assert fn._model is None and fn.__name__ == "pair_pm"
    logged = {}
    rewards = _call(fn, log_metric=lambda key, value: logged.update({key: value}))
    assert fn._model is not None and rewards[4] is None
    assert fn.num_truncated > 0 and logged["pair_pm/num_truncated"] == fn.num_truncated
    clone = pickle.loads(pickle.dumps(fn))
    assert clone._model is None and _call(clone)[0] == pytest.approx(rewards[0], abs=1e-6)
    ensemble = RewardEnsemble([fn, PairwiseRewardFunction(path, reference="group_mean", name="gm")])
    assert len(_call(ensemble)) == len(COMPLETIONS)
