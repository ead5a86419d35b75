"""AttributeRewardFunction in TRL's contract (weights or gating, per-attribute logging, pickling, lazy loading, in an
ensemble), the verbosity correction against a hand computation, and the gating layer learning a prompt-dependent
mixture that fixed weights cannot express."""

import inspect
import pickle

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification
from trl.trainer.utils import get_callable_name

from trl_rewards.evaluation.attribute_metrics import combined_pairwise_accuracy
from trl_rewards.inference.attribute_scoring import AttributeScorer
from trl_rewards.rewards.attribute_rewards import (
    AttributeGating,
    AttributeRewardFunction,
    fit_attribute_gating,
    fit_gating_from_pairs,
    verbosity_debias_coefficients,
)
from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.testing import save_tiny, tiny_llama_config, tiny_llama_tokenizer
from trl_rewards.trainers.attr_trainer import set_attribute_head

ATTRS = ["quality", "safety", "verbosity"]
PROMPTS = ["Q: ", "Question two: ", "x", "Q3: "]
COMPLETIONS = ["abc", "a", "a much longer answer", "ok"]


def _model(seed=0):
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_llama_config(tokenizer, num_labels=3)).eval()
    set_attribute_head(model.config, ATTRS)
    return model, tokenizer


def test_contract_weights_and_logging():
    model, tokenizer = _model()
    fn = AttributeRewardFunction(
        model, tokenizer, weights={"quality": 1.0, "verbosity": -0.5}, name="attr", device="cpu"
    )
    assert list(inspect.signature(fn).parameters)[:3] == ["prompts", "completions", "completion_ids"]
    assert get_callable_name(fn) == "attr"
    logged = {}
    rewards = fn(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=None, log_metric=logged.__setitem__)
    scores = AttributeScorer(model, tokenizer).score_attributes(PROMPTS, COMPLETIONS)
    assert rewards == pytest.approx((scores[:, 0] - 0.5 * scores[:, 2]).tolist())
    assert all(isinstance(r, float) for r in rewards)
    assert logged == pytest.approx({f"attr/{name}": scores[:, k].mean() for k, name in enumerate(ATTRS)})
    assert fn.last_metrics == logged
    clone = pickle.loads(pickle.dumps(fn))
    assert clone(PROMPTS, COMPLETIONS) == pytest.approx(rewards)
    ensemble = RewardEnsemble([fn, AttributeRewardFunction(model, tokenizer, name="mean", device="cpu")])
    assert len(ensemble(PROMPTS, COMPLETIONS)) == 4


def test_path_is_lazy_and_gating_and_weights_exclusive(tmp_path):
    model, tokenizer = _model()
    path = save_tiny(model, tokenizer, tmp_path / "attr_rm")
    fn = AttributeRewardFunction(path, device="cpu")
    assert fn._model is None and fn.__name__ == "attr_rm"
    light = pickle.loads(pickle.dumps(fn))
    assert light(PROMPTS, COMPLETIONS) == pytest.approx(fn(PROMPTS, COMPLETIONS))
    gating = AttributeGating(model.config.hidden_size, ATTRS)
    with pytest.raises(ValueError, match="weights or gating, not both"):
        AttributeRewardFunction(path, weights=[1, 0, 0], gating=gating)
    with pytest.raises(ValueError, match="fitted on attributes"):
        AttributeRewardFunction(model, tokenizer, gating=AttributeGating(model.config.hidden_size, ["a", "b", "c"]))


def test_verbosity_coefficients_hand_derived():
    """v = [0, 1, 2] (centred [-1, 0, 1], variance 2/3); quality = [1, 3, 2] (centred [-1, 1, 0]): covariance 1/3,
    λ = 0.5; corrected quality [1, 2.5, 1] is uncorrelated with v (centred [-0.5, 1, -0.5] · [-1, 0, 1] = 0); λ of
    verbosity itself is 1."""
    scores = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 1.0], [2.0, 5.0, 2.0]])
    lam = verbosity_debias_coefficients(scores, 2)
    np.testing.assert_allclose(lam, [0.5, 0.0, 1.0])
    gating = AttributeGating(4, ATTRS, verbosity="verbosity")
    gating.debias.copy_(torch.as_tensor(lam))
    corrected = gating.corrected(torch.as_tensor(scores)).numpy()
    np.testing.assert_allclose(corrected[:, 0], [1.0, 2.5, 1.0])
    assert np.all(corrected[:, 2] == 0)
    with pytest.raises(ValueError, match="constant"):
        verbosity_debias_coefficients(np.ones((3, 3)), 2)


def _mixture_pairs(n, seed):
    """Prompts of two kinds (sign of embedding dim 0): kind A prefers the higher `quality`, kind B the higher
    `safety`; the other attribute is noise, and verbosity (length) is correlated with quality and not preferred."""
    rng = np.random.default_rng(seed)
    kind = rng.random(n) < 0.5
    embeddings = rng.normal(size=(n, 8))
    embeddings[:, 0] = np.where(kind, 2.0, -2.0) + rng.normal(scale=0.3, size=n)

    def side():
        verbosity = rng.normal(size=n)
        return np.stack([rng.normal(size=n) + verbosity, rng.normal(size=n), verbosity], 1)

    a, b = side(), side()
    a_wins = np.where(kind, a[:, 0] - a[:, 2] > b[:, 0] - b[:, 2], a[:, 1] > b[:, 1])
    chosen, rejected = np.where(a_wins[:, None], a, b), np.where(a_wins[:, None], b, a)
    return embeddings, chosen, rejected


def test_gating_learns_prompt_dependent_weights_with_verbosity_correction():
    train, test = _mixture_pairs(2000, 0), _mixture_pairs(500, 1)
    gating = fit_attribute_gating(*train, ATTRS, verbosity="verbosity", epochs=60, learning_rate=1e-2)
    with torch.no_grad():
        chosen, rejected = (gating(torch.as_tensor(test[0]), torch.as_tensor(s)) for s in test[1:])
    accuracy = float((chosen > rejected).double().mean())
    fixed = combined_pairwise_accuracy(test[1], test[2], [0.5, 0.5, 0.0])["pairwise_accuracy"]
    assert accuracy >= 0.95 > fixed + 0.1, (accuracy, fixed)
    weights = gating.weights(torch.as_tensor(test[0], dtype=torch.float32))
    assert torch.allclose(weights.sum(-1), torch.ones(len(weights))) and (weights >= 0).all()
    kind_a = test[0][:, 0] > 0
    assert weights[kind_a, 0].mean() > 0.8 and weights[~kind_a, 1].mean() > 0.8  # the right attribute per kind


def test_gated_reward_function_and_gating_round_trip(tmp_path):
    model, tokenizer = _model()
    scorer = AttributeScorer(model, tokenizer)
    gating = fit_gating_from_pairs(scorer, PROMPTS, COMPLETIONS, COMPLETIONS[::-1], verbosity="verbosity", epochs=2)
    gating.save(tmp_path / "gating.pt")
    fn = AttributeRewardFunction(model, tokenizer, gating=tmp_path / "gating.pt", name="armo", device="cpu")
    with torch.no_grad():
        expected = gating(
            torch.as_tensor(scorer.embed_prompts(PROMPTS)),
            torch.as_tensor(scorer.score_attributes(PROMPTS, COMPLETIONS)),
        )
    assert fn(PROMPTS, COMPLETIONS) == pytest.approx(expected.tolist(), abs=1e-6)
    assert torch.equal(AttributeGating.load(tmp_path / "gating.pt").debias, gating.debias)
