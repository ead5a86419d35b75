"""RewardScorer: scores do not depend on batch size, input order or padding side (to 1e-5)."""

import pytest
import torch

from trl_rewards.data.preference import encode_pair_texts
from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.testing import save_tiny, tiny_bert_reward_model, tiny_llama_reward_model

PROMPTS = ["Q: 2+2? ", "Tell me a story. ", "", "Why? "] * 2
COMPLETIONS = ["4", "Once upon a time there was a reward model.", "hm", "Because it is long enough " * 3] * 2


def _reference(model, tok):
    """Each sequence scored alone, unpadded."""
    out = []
    for p, c in zip(PROMPTS, COMPLETIONS, strict=True):
        ids = torch.tensor([encode_pair_texts(tok, {"prompt": p, "chosen": c, "rejected": ""}, "explicit_prompt")[0]])
        with torch.no_grad():
            out.append(model(input_ids=ids).logits[0, 0].item())
    return out


@pytest.mark.parametrize("builder", [tiny_llama_reward_model, tiny_bert_reward_model], ids=["llama", "bert"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_scores_invariant_to_batching_and_padding(builder, padding_side, batch_size):
    model, tok = builder()
    model.eval()
    expected = _reference(model, tok)
    scorer = RewardScorer(model, tok, batch_size=batch_size, padding_side=padding_side)
    torch.testing.assert_close(scorer.score(PROMPTS, COMPLETIONS), expected, atol=1e-5, rtol=0)


def test_token_budget_splits_long_batches():
    """A token budget changes how the scorer batches (tests/inference/test_batching.py), never the scores."""
    model, tok = tiny_llama_reward_model()
    scorer = RewardScorer(model, tok, batch_size=8, max_tokens_per_batch=60)
    torch.testing.assert_close(
        scorer.score(PROMPTS, COMPLETIONS),
        RewardScorer(model, tok, batch_size=8).score(PROMPTS, COMPLETIONS),
        atol=1e-5,
        rtol=0,
    )


def test_conversational_prompt_uses_chat_template():
    model, tok = tiny_llama_reward_model()
    scorer = RewardScorer(model, tok)
    ids = scorer.encode([{"role": "user", "content": "hi"}], "yo")
    assert tok.decode(ids) == "<|user|>hi</s><|assistant|>yo</s>"


def test_truncation_is_counted():
    model, tok = tiny_llama_reward_model()
    scorer = RewardScorer(model, tok, max_length=10)
    scorer.score(["a", "b"], ["short", "x" * 30])
    assert scorer.n_truncated == 1


def test_score_pairs_and_errors():
    model, tok = tiny_bert_reward_model()
    scorer = RewardScorer(model, tok)
    chosen, rejected = scorer.score_pairs(["q", "r"], ["a", "b"], ["c", "d"])
    assert chosen == pytest.approx(scorer.score(["q", "r"], ["a", "b"]), abs=1e-6)
    assert rejected == pytest.approx(scorer.score(["q", "r"], ["c", "d"]), abs=1e-6)
    with pytest.raises(ValueError, match="got 2 prompts but 1 completions"):
        scorer.score(["q", "r"], ["a"])
    with pytest.raises(ValueError, match="padding_side must be one of"):
        RewardScorer(model, tok, padding_side="center")
    with pytest.raises(ValueError, match="normalize=True needs `reward_mean`"):
        RewardScorer(model, tok, normalize=True)


def test_model_is_moved_to_the_device_asked_for(tmp_path):
    """`device=` moves the model, also through `from_pretrained` (it used to be recorded only: inputs on the device,
    weights left where they loaded). The meta device stands in for an accelerator on a CPU-only machine."""
    model, tok = tiny_llama_reward_model()
    scorer = RewardScorer(model, tok, device="meta")
    assert scorer.device == torch.device("meta") and next(scorer.model.parameters()).device.type == "meta"
    path = save_tiny(*tiny_bert_reward_model(), tmp_path / "rm")
    loaded = RewardScorer.from_pretrained(path, device="meta")
    assert next(loaded.model.parameters()).device.type == "meta"


def test_max_length_defaults_to_the_position_limit(caplog):
    """BERT with 16 positions: `[CLS]` + "q" + 30 characters + `[SEP]` = 33 tokens used to crash the position
    embeddings ("The expanded size of the tensor (33) must match ... (16)"). By default max_length = 16: the
    sequence keeps `[CLS]` and its last 15 tokens, scores like that sequence scored directly, and the call logs one
    warning with the count."""
    model, tok = tiny_bert_reward_model(max_position_embeddings=16)
    model.eval()
    scorer = RewardScorer(model, tok)
    assert scorer.max_length == 16
    with caplog.at_level("WARNING", logger="trl_rewards.inference.sequence_scoring"):
        scores = scorer.score(["q", "q"], ["x" * 30, "short"])
    assert scorer.n_truncated == 1
    assert [r.getMessage() for r in caplog.records] == [
        "1 of 2 sequences were longer than max_length=16 and were cut (leading special tokens and the end kept)"
    ]
    ids = [tok.cls_token_id, *tok.convert_tokens_to_ids(["x"] * 14), tok.sep_token_id]
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert scores[0] == pytest.approx(expected, abs=1e-5)
    assert RewardScorer(*tiny_llama_reward_model(max_position_embeddings=64)).max_length == 64
    tok.model_max_length = 12  # a tokenizer limit below the config's wins
    assert RewardScorer(model, tok).max_length == 12


def test_none_completion_is_named_by_index():
    model, tok = tiny_bert_reward_model()
    with pytest.raises(ValueError, match=r"completions\[1\] is None \(1 missing\)"):
        RewardScorer(model, tok).score(["q", "r"], ["a", None])


def test_a_quantized_model_is_not_moved_but_refused_with_a_reason():
    """4-bit weights cannot be moved with `.to`; asking for another device names both devices (one rule for scorers
    and reward functions: `place_model`)."""
    from trl_rewards.inference.sequence_scoring import place_model

    model, _ = tiny_llama_reward_model()
    model.is_quantized = True
    assert place_model(model, "cpu")[0] == torch.device("cpu")  # already there: nothing to move
    with pytest.raises(ValueError, match="sits on cpu and is quantized .* device='meta'"):
        place_model(model, "meta")
