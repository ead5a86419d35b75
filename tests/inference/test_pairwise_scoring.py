"""PairwiseScorer: both orders averaged, P(a, b) + P(b, a) == 1 exactly, training's encoding, batching invariance."""

import math

import pytest
import torch
from datasets import Dataset

from trl_rewards.data.pairwise import tokenize_pairwise
from trl_rewards.inference.pairwise_scoring import PairwiseScorer, win_probabilities
from trl_rewards.testing import save_tiny, tiny_bert_reward_model, tiny_llama_reward_model

PROMPTS = ["What is 2+2?", "Name a colour.", "Yes or no?", "Say hi"]
A = ["4", "blue, obviously", "yes", "hello there, friend"]
B = ["5", "seven", "no", "bye"]


@pytest.fixture(params=["llama", "bert"])
def scorer(request):
    model, tok = (tiny_llama_reward_model if request.param == "llama" else tiny_bert_reward_model)(seed=3)
    return PairwiseScorer(model, tok, batch_size=3)


def test_swapped_probabilities_sum_to_exactly_one(scorer):
    forward = scorer.win_probability(PROMPTS, A, B)
    backward = scorer.win_probability(PROMPTS, B, A)
    assert all(0 < p < 1 for p in forward)
    assert [p + q for p, q in zip(forward, backward, strict=True)] == [1.0] * len(PROMPTS)


def test_win_probability_averages_both_orders(scorer):
    """P = (σ(l_ab) + 1 - σ(l_ba)) / 2, computed independently from the raw logits of the two orders."""
    data = scorer.score_both_orders(PROMPTS, A, B)
    for ab, ba, p in zip(data["logits_ab"], data["logits_ba"], data["win_probability"], strict=True):
        sigma = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        assert p == pytest.approx((sigma(ab) + 1 - sigma(ba)) / 2, abs=1e-12)
    assert data["p_first_ab"] == pytest.approx([1 / (1 + math.exp(-x)) for x in data["logits_ab"]])
    assert data["position_consistent"] == [
        (ab > 0) != (ba > 0) for ab, ba in zip(data["logits_ab"], data["logits_ba"], strict=True)
    ]


def test_scores_are_the_training_sequences_and_do_not_depend_on_batching(scorer):
    """The scorer reads the ids the trainer trains on: its logits equal the model's on `tokenize_pairwise`'s rows,
    whatever the batch size and row order."""
    rows = [{"prompt": p, "chosen": a, "rejected": b} for p, a, b in zip(PROMPTS, A, B, strict=True)]
    tokenized, _ = tokenize_pairwise(Dataset.from_list(rows), scorer.tokenizer, max_length=None)
    with torch.no_grad():
        direct = [
            scorer.model(input_ids=torch.tensor([row[key]])).logits[0, 0].item()
            for key in ("ab_ids", "ba_ids")
            for row in tokenized
        ]
    ab, ba = scorer.order_logits(PROMPTS, A, B)
    assert ab + ba == pytest.approx(direct, abs=1e-5)
    one_by_one = PairwiseScorer(scorer.model, scorer.tokenizer, batch_size=1)
    assert one_by_one.win_probability(PROMPTS[::-1], A[::-1], B[::-1])[::-1] == pytest.approx(
        scorer.win_probability(PROMPTS, A, B), abs=1e-6
    )


def test_win_probabilities_are_exact_complements():
    z = torch.tensor([0.0, 1e-9, 3.0, -40.0, 800.0], dtype=torch.float64)
    assert [p + q for p, q in zip(win_probabilities(z), win_probabilities(-z), strict=True)] == [1.0] * 5
    assert win_probabilities(torch.tensor([0.0]))[0] == 0.5


def test_long_pairs_are_cut_and_counted(caplog):
    model, tok = tiny_bert_reward_model(seed=0)
    scorer = PairwiseScorer(model, tok, max_length=60)
    probabilities = scorer.win_probability(["p" * 30, "q"], ["a" * 40, "x"], ["b" * 40, "y"])
    assert len(probabilities) == 2 and scorer.n_truncated == 1 and scorer.n_responses_cut == 1
    assert "1 of 2 pairs" in caplog.text
    assert scorer.win_probability([], [], []) == []


def test_bad_inputs_name_the_row():
    model, tok = tiny_bert_reward_model(seed=0)
    scorer = PairwiseScorer(model, tok)
    with pytest.raises(ValueError, match="2 prompts"):
        scorer.win_probability(["a", "b"], ["x"], ["y"])
    with pytest.raises(TypeError, match="row 1: b must be a string"):
        scorer.win_probability(["a", "b"], ["x", "y"], ["z", None])


def test_from_pretrained(tmp_path):
    model, tok = tiny_llama_reward_model(seed=1)
    path = save_tiny(model, tok, tmp_path / "pm")
    loaded = PairwiseScorer.from_pretrained(path, batch_size=2)
    assert loaded.win_probability(PROMPTS, A, B) == pytest.approx(
        PairwiseScorer(model, tok).win_probability(PROMPTS, A, B), abs=1e-6
    )
