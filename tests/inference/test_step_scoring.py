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
    # <s> q 1 \n + 14 + \n = 19 tokens; step 1's label (index 3) must stay, so at most 2 tokens can go: 17 > 12
    with pytest.raises(ValueError, match="solution 0: keeping every step's label token needs at least 17 tokens"):
        scorer.step_probabilities(["q"], [["1", "23456789012345"]])
    with pytest.raises(ValueError, match="at least one non-empty step"):
        scorer.step_probabilities(["q"], [["ok", "  "]])
