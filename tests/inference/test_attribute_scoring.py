"""AttributeScorer: K scores read at the stock head's token, independent of batching and padding, combined by
weights (dict, list, stored or mean), normalized with stored statistics, prompt embeddings, loading from a folder."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from trl_rewards.inference.attribute_scoring import AttributeScorer, resolve_weights
from trl_rewards.testing import (
    save_tiny,
    tiny_bert_config,
    tiny_bert_tokenizer,
    tiny_llama_config,
    tiny_llama_tokenizer,
)
from trl_rewards.trainers.attr_trainer import set_attribute_head

ATTRS = ["quality", "length", "tone"]
PROMPTS = ["Q: ", "Question two: ", "x", "Q3: "]
COMPLETIONS = ["abc", "a", "a much longer answer here", "ok"]


def _model(arch="llama"):
    tokenizer = tiny_llama_tokenizer() if arch == "llama" else tiny_bert_tokenizer()
    config = (tiny_llama_config if arch == "llama" else tiny_bert_config)(tokenizer, num_labels=3)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    set_attribute_head(model.config, ATTRS)
    return model, tokenizer


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_scores_are_the_head_outputs_whatever_the_batching(arch):
    model, tokenizer = _model(arch)
    scorer = AttributeScorer(model, tokenizer, batch_size=4)
    scores = scorer.score_attributes(PROMPTS, COMPLETIONS)
    assert scores.shape == (4, 3)
    for row, (prompt, completion) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
        ids = torch.tensor([scorer.encode(prompt, completion)])
        with torch.no_grad():
            alone = model(input_ids=ids).logits[0].double().numpy()
        np.testing.assert_allclose(scores[row], alone, atol=1e-5)
    for options in ({"batch_size": 1}, {"batch_size": 3, "padding_side": "left"}, {"max_tokens_per_batch": 30}):
        other = AttributeScorer(model, tokenizer, **options).score_attributes(PROMPTS, COMPLETIONS)
        np.testing.assert_allclose(other, scores, atol=1e-5)


def test_combined_score_uses_the_weights():
    model, tokenizer = _model()
    scores = AttributeScorer(model, tokenizer).score_attributes(PROMPTS, COMPLETIONS)
    mean = AttributeScorer(model, tokenizer).score(PROMPTS, COMPLETIONS)
    assert mean == pytest.approx(scores.mean(1).tolist())
    named = AttributeScorer(model, tokenizer, weights={"quality": 2.0, "tone": -1.0}).score(PROMPTS, COMPLETIONS)
    assert named == pytest.approx((2 * scores[:, 0] - scores[:, 2]).tolist())
    model.config.attribute_weights = [0.0, 1.0, 0.0]  # stored by the trainer: the default
    assert AttributeScorer(model, tokenizer).score(PROMPTS, COMPLETIONS) == pytest.approx(scores[:, 1].tolist())
    stored = AttributeScorer(model, tokenizer)
    chosen, rejected = stored.score_pairs(PROMPTS[:2], COMPLETIONS[:2], COMPLETIONS[2:])
    assert chosen == pytest.approx(scores[:2, 1].tolist())
    assert rejected == pytest.approx(stored.score(PROMPTS[:2], COMPLETIONS[2:]))


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"qualty": 1.0}, r"unknown attributes \['qualty'\]"),
        ([1.0, 2.0], "one value per attribute"),
        ([0, 0, 0], "not all 0"),
    ],
)
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        resolve_weights(weights, ATTRS)


def test_normalize_with_stored_statistics():
    model, tokenizer = _model()
    raw = AttributeScorer(model, tokenizer).score_attributes(PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match="attribute_means"):
        AttributeScorer(model, tokenizer, normalize=True)
    model.config.attribute_means, model.config.attribute_stds = [1.0, 0.0, -1.0], [2.0, 1.0, 0.5]
    z = AttributeScorer(model, tokenizer, normalize=True).score_attributes(PROMPTS, COMPLETIONS)
    np.testing.assert_allclose(z, (raw - [1.0, 0.0, -1.0]) / [2.0, 1.0, 0.5])


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_prompt_embedding_is_the_read_out_hidden_state(arch):
    model, tokenizer = _model(arch)
    scorer = AttributeScorer(model, tokenizer, batch_size=3, padding_side="left")
    embeddings = scorer.embed_prompts(PROMPTS)
    assert embeddings.shape == (4, model.config.hidden_size)
    for row, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt)["input_ids"]
        if arch == "llama":
            ids = ids + [tokenizer.eos_token_id]  # a decoder's text is closed with eos, the read-out token
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        expected = hidden[-1 if arch == "llama" else 0].double().numpy()
        np.testing.assert_allclose(embeddings[row], expected, atol=1e-5)


def test_from_pretrained_and_input_errors(tmp_path):
    model, tokenizer = _model()
    path = save_tiny(model, tokenizer, tmp_path / "m")
    loaded = AttributeScorer.from_pretrained(path)
    assert loaded.attributes == ATTRS
    np.testing.assert_allclose(
        loaded.score_attributes(PROMPTS, COMPLETIONS),
        AttributeScorer(model, tokenizer).score_attributes(PROMPTS, COMPLETIONS),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        loaded.score_attributes(PROMPTS[:2], COMPLETIONS[:1])
    with pytest.raises(ValueError, match=r"completions\[1\] is None"):
        loaded.score(PROMPTS[:2], ["a", None])


def test_evaluation_runner_takes_the_scorer():
    """`evaluate_preferences` scores both sides with `AttributeScorer.score` (the combined reward)."""
    from trl_rewards.evaluation.runner import evaluate_preferences

    model, tokenizer = _model()
    scorer = AttributeScorer(model, tokenizer, weights={"quality": 1.0})
    pairs = [{"prompt": p, "chosen": c, "rejected": c + " extra"} for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    results = evaluate_preferences(scorer, pairs)
    chosen, rejected = scorer.score_pairs(PROMPTS, COMPLETIONS, [c + " extra" for c in COMPLETIONS])
    assert results["overall"]["accuracy"] == pytest.approx(np.mean(np.array(chosen) > np.array(rejected)))
