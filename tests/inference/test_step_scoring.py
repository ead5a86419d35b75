"""ProcessRewardScorer and aggregate_step_scores: hand-derived aggregations, probabilities read at the right tokens
(checked against a forward pass built by hand), independence from batching and order, and option checks."""

import math

import pytest
import torch
from transformers import AddedToken, LlamaForCausalLM

from trl_rewards.inference.aggregation import aggregate_step_scores
from trl_rewards.inference.step_scoring import ProcessRewardScorer
from trl_rewards.step_format import FORMAT_ATTRIBUTE
from trl_rewards.testing import (
    tiny_bert_token_classifier,
    tiny_llama_config,
    tiny_llama_token_classifier,
    tiny_llama_tokenizer,
)

PROMPTS = ["Q: 2+2?", "Q: 3*3?", "Q: 1+1?"]
SOLUTIONS = [["2+2=4", "ok"], ["3*3=6"], ["1+1=2", "so 2", "done"]]


def test_aggregations_hand_derived():
    """p = [0.9, 0.5, 0.8]: product 0.36, min 0.5, last 0.8, mean 0.733333.
    softmin on [0.9, 0.5] with T = 0.1: w ∝ [e^-9, e^-5] = [1, e^4] / (1 + e^4) = [0.017986, 0.982014], so the score
    is 0.9 * 0.017986 + 0.5 * 0.982014 = 0.507194."""
    p = [0.9, 0.5, 0.8]
    assert aggregate_step_scores(p) == pytest.approx(0.36)
    assert aggregate_step_scores(p, "min") == pytest.approx(0.5)
    assert aggregate_step_scores(p, "last") == pytest.approx(0.8)
    assert aggregate_step_scores(p, "mean") == pytest.approx(0.733333, abs=1e-6)
    assert aggregate_step_scores([0.9, 0.5], "softmin", temperature=0.1) == pytest.approx(0.507194, abs=1e-6)
    # limits: T -> 0 is the minimum, T -> inf the mean
    assert aggregate_step_scores(p, "softmin", temperature=1e-4) == pytest.approx(0.5, abs=1e-9)
    assert aggregate_step_scores(p, "softmin", temperature=1e6) == pytest.approx(0.733333, abs=1e-5)


@pytest.mark.parametrize(
    "probs, method, temperature, message",
    [
        ([0.5], "median", None, "method must be one of"),
        ([0.5], "softmin", None, "needs a finite temperature > 0"),
        ([0.5], "softmin", 0.0, "needs a finite temperature > 0"),
        ([0.5], "product", 0.3, "temperature is used only by method='softmin'"),
        ([], "mean", None, "non-empty"),
        ([0.5, 1.2], "mean", None, r"probs\[1\] is 1.2, not a probability"),
        ([math.nan], "min", None, r"probs\[0\] is nan"),
    ],
)
def test_aggregation_rejects_bad_input(probs, method, temperature, message):
    with pytest.raises(ValueError, match=message):
        aggregate_step_scores(probs, method, temperature)


def _char_ids(tokenizer, text):
    return tokenizer.convert_tokens_to_ids(list(text))


def test_classifier_probabilities_read_at_separator_tokens():
    """By hand: `<s>` + prompt + step 1 + `\\n` + step 2 + `\\n`, one token per character; P(good) is the softmax of
    the 2-class head at each `\\n`."""
    model, tok = tiny_llama_token_classifier()
    scorer = ProcessRewardScorer(model, tok)
    assert scorer.format["model_style"] == "classifier"
    ids = [tok.bos_token_id] + _char_ids(tok, "Q: 2+2?" + "2+2=4\n" + "ok\n")
    positions = [len("Q: 2+2?2+2=4\n"), len("Q: 2+2?2+2=4\nok\n")]  # the <s> shifts every index by one
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    expected = torch.softmax(logits.double(), -1)[positions, 1]
    got = scorer.step_probabilities(PROMPTS[:1], SOLUTIONS[:1])[0]
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), expected, atol=1e-6, rtol=0)


def test_lm_probabilities_read_at_step_tags():
    """lm style: each step is followed by the tag then `\\n`; P(good) = σ(z_+ - z_-) at each tag."""
    tok = tiny_llama_tokenizer()
    tok.add_tokens([AddedToken("<|prm_label|>", special=True, normalized=False)])
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tok)).eval()
    tag = tok.convert_tokens_to_ids("<|prm_label|>")
    scorer = ProcessRewardScorer(model, tok)
    assert scorer.format == {
        "model_style": "lm",
        "step_separator": "\n",
        "step_tag": "<|prm_label|>",
        "good_token": "+",
        "bad_token": "-",
    }
    ids = [tok.bos_token_id, *_char_ids(tok, "Q: 2+2?2+2=4"), tag, *_char_ids(tok, "\nok"), tag, *_char_ids(tok, "\n")]
    positions = [i for i, t in enumerate(ids) if t == tag]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    plus, minus = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    expected = torch.sigmoid(logits[positions, plus] - logits[positions, minus])
    got = scorer.step_probabilities(PROMPTS[:1], SOLUTIONS[:1])[0]
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("build", [tiny_llama_token_classifier, tiny_bert_token_classifier])
def test_scores_do_not_depend_on_batching_or_order(build):
    model, tok = build()
    separator = "\n" if build is tiny_llama_token_classifier else "[SEP]"
    one = ProcessRewardScorer(model, tok, step_separator=separator, batch_size=1)
    many = ProcessRewardScorer(model, tok, step_separator=separator, batch_size=3)
    expected = one.step_probabilities(PROMPTS, SOLUTIONS)
    assert [len(p) for p in expected] == [2, 1, 3]
    got = many.step_probabilities(PROMPTS[::-1], SOLUTIONS[::-1])[::-1]
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)


def test_text_solutions_split_and_aggregated():
    model, tok = tiny_llama_token_classifier()
    scorer = ProcessRewardScorer(model, tok, text_separator="\n\n")
    texts = ["\n\n".join(steps) for steps in SOLUTIONS]
    assert scorer.step_probabilities(PROMPTS, texts) == scorer.step_probabilities(PROMPTS, SOLUTIONS)
    probs = scorer.step_probabilities(PROMPTS, SOLUTIONS)
    assert scorer.score(PROMPTS, texts, "min") == pytest.approx([min(p) for p in probs])
    assert scorer.score(PROMPTS, texts) == pytest.approx([math.prod(p) for p in probs])
    with pytest.raises(ValueError, match="needs a finite temperature"):
        scorer.score(PROMPTS, texts, "softmin")


def test_layout_saved_in_config_is_used_and_options_checked():
    model, tok = tiny_bert_token_classifier()
    setattr(model.config, FORMAT_ATTRIBUTE, {"model_style": "classifier", "step_separator": "[SEP]"})
    assert ProcessRewardScorer(model, tok).format["step_separator"] == "[SEP]"
    assert ProcessRewardScorer(model, tok, step_separator="|").format["step_separator"] == "|"  # explicit wins
    with pytest.raises(ValueError, match="are used only with model_style='lm'"):
        ProcessRewardScorer(model, tok, step_tag="<tag>")
    with pytest.raises(ValueError, match="tokenizes to no token"):
        ProcessRewardScorer(model, tok, step_separator="")  # classifier style: the label needs a separator token
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ProcessRewardScorer(model, tok, batch_size=0)


def test_max_length_cuts_left_context_and_rejects_unfit_solutions():
    model, tok = tiny_llama_token_classifier()
    scorer = ProcessRewardScorer(model, tok, max_length=12)
    encoded = scorer.encode("a long prompt here", ["1+1=2"])  # 1 + 18 + 6 = 25 tokens: the first 13 prompt tokens go
    assert len(encoded.input_ids) == 12 and scorer.n_truncated == 1
    assert tok.convert_ids_to_tokens(encoded.input_ids) == ["<s>", *" here1+1=2", "\n"]
    assert encoded.label_positions == [11]
    # <s> q 1 \n + 14 + \n = 19 tokens; every step must stay whole, so only the prompt "q" can go: 18 > 12
    with pytest.raises(ValueError, match=r"solution 0: scoring every step needs at least 18 tokens .* max_length=12"):
        scorer.step_probabilities(["q"], [["1", "23456789012345"]])
    # <s> + "p" + "abcdef\n" + "ghij\n" = 14 tokens: fitting 12 would drop step 1 (training may, scoring may not)
    with pytest.raises(ValueError, match="scoring every step needs at least 13 tokens"):
        scorer.step_probabilities(["p"], [["abcdef", "ghij"]])
    with pytest.raises(ValueError, match="at least one non-empty step"):
        scorer.step_probabilities(["q"], [["ok", "  "]])


def _lm_prm(seed=0, **overrides):
    tok = tiny_llama_tokenizer()
    tok.add_tokens([AddedToken("<|prm_label|>", special=True, normalized=False)])
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tok, **overrides)).eval(), tok


def _full_forward_probabilities(model, scorer, prompts, solutions):
    """Today's reference: the whole (1, seq, vocab) logits of each solution alone, σ(z_+ - z_-) at its step tags."""
    out = []
    for prompt, solution in zip(prompts, solutions, strict=True):
        row = scorer.encode(prompt, solution)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row.input_ids])).logits[0].double()
        z = logits[row.label_positions]
        out.append(torch.sigmoid(z[:, scorer.good_token_id] - z[:, scorer.bad_token_id]))
    return out


def _assert_close_to_reference(model, scorer):
    expected = _full_forward_probabilities(model, scorer, PROMPTS, SOLUTIONS)
    for got, want in zip(scorer.step_probabilities(PROMPTS, SOLUTIONS), expected, strict=True):
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want, atol=1e-6, rtol=0)


def test_lm_prm_applies_only_two_head_rows_at_step_tags():
    """The LM head module is never run (so no (batch, seq, vocab) logits exist): the scorer multiplies the body's
    hidden states at the step tags by the good/bad rows of the head's weight (plus its bias, here a random one), and
    gets today's probabilities to 1e-6."""
    model, tok = _lm_prm()
    model.lm_head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.normal_(model.lm_head.bias, std=1.0)
    scorer = ProcessRewardScorer(model, tok, batch_size=2)
    expected = _full_forward_probabilities(model, scorer, PROMPTS, SOLUTIONS)

    def refuse(module, args):
        raise AssertionError(f"the full LM head ran on an input of shape {tuple(args[0].shape)}")

    handle = model.lm_head.register_forward_pre_hook(refuse)
    try:
        got = scorer.step_probabilities(PROMPTS, SOLUTIONS)
    finally:
        handle.remove()
    for g, want in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.tensor(g, dtype=torch.float64), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "lm_head"]], ids=["body", "body+head"])
def test_lm_prm_with_peft_adapter_matches_its_full_forward(targets):
    """A LoRA adapter on the body is applied (the body is the adapted one); an adapted LM head is not a plain linear
    layer, so the scorer falls back to the model's own forward. Both equal the full forward to 1e-6."""
    from peft import LoraConfig, get_peft_model

    model, tok = _lm_prm()
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules=targets, init_lora_weights=False)).eval()
    _assert_close_to_reference(adapted, ProcessRewardScorer(adapted, tok, step_tag="<|prm_label|>", batch_size=3))


def test_model_is_moved_to_the_device_asked_for():
    """`device=` moves the model (it used to be recorded only, so inputs and weights ended on different devices).
    The meta device stands in for an accelerator on a CPU-only machine."""
    model, tok = tiny_llama_token_classifier()
    scorer = ProcessRewardScorer(model, tok, device="meta")
    assert scorer.device == torch.device("meta") and next(scorer.model.parameters()).device.type == "meta"


def test_max_length_defaults_to_the_position_limit(caplog):
    """BERT with 24 positions: `[CLS]` + prompt (30) + "ok" + `[SEP]` + `[SEP]` = 35 tokens used to crash the
    position embeddings. By default max_length = 24, so 11 prompt tokens go; one warning for the call, with the
    count (1 of 2 solutions)."""
    model, tok = tiny_bert_token_classifier(max_position_embeddings=24)
    scorer = ProcessRewardScorer(model, tok, step_separator="[SEP]")
    assert scorer.max_length == 24
    with caplog.at_level("WARNING", logger="trl_rewards.inference.sequence_scoring"):
        probs = scorer.step_probabilities(["x" * 30, "q"], [["ok"], ["ok"]])
    assert len(probs[0]) == 1 and scorer.n_truncated == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["1 of 2 solutions were longer than max_length=24 and were cut (prompt tokens cut)"]
    with pytest.raises(ValueError, match="max_length must be an integer >= 1"):
        ProcessRewardScorer(model, tok, step_separator="[SEP]", max_length=0)
