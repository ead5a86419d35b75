"""Scoring with the prompt encoded once per group (`RewardScorer(prefix_sharing=True)`): every score equals the
score of its completion alone, on tiny Llama- and Qwen2-style decoders, whatever the grouping, batching, splitting or
truncation; encoders are rejected."""

import pytest
import torch

from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.inference.shared_prefix_scoring import group_indices, score_shared_prefix, split_group
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.testing import (
    tiny_bert_reward_model,
    tiny_llama_reward_model,
    tiny_qwen2_reward_model,
)

TOL = dict(atol=1e-5, rtol=1e-5)


MODELS = {"llama": tiny_llama_reward_model, "qwen2": tiny_qwen2_reward_model}


def _grpo_batch(n_prompts=3, group=8):
    """GRPO's layout: each prompt repeated `group` times, completions of mixed lengths (one repeated, one empty-ish
    after the prompt, one sharing a start with another)."""
    prompts, completions = [], []
    for p in range(n_prompts):
        prompt = f"Question {p}: what is {p} + {p * 7}? " * (1 + p)
        for g in range(group):
            prompts.append(prompt)
            completions.append(["The answer is", " 4", "x" * (3 * g + 1), "The answer is 42."][g % 4] + str(g % 3))
    return prompts, completions


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_group_scores_equal_scores_alone(arch, attn):
    model, tok = MODELS[arch]()
    model.config._attn_implementation = attn
    prompts, completions = _grpo_batch()
    alone = RewardScorer(model, tok, batch_size=1).score(prompts, completions)
    shared = RewardScorer(model, tok, batch_size=8, prefix_sharing=True).score(prompts, completions)
    torch.testing.assert_close(shared, alone, **TOL)
    assert len(set(alone)) > len(alone) // 2  # scores differ between completions: the check has teeth


def test_independent_of_batching_splitting_order_and_truncation():
    model, tok = tiny_llama_reward_model()
    prompts, completions = _grpo_batch(n_prompts=2, group=6)
    order = list(reversed(range(len(prompts))))  # interleaved groups are still found
    prompts, completions = [prompts[i] for i in order], [completions[i] for i in order]
    expected = RewardScorer(model, tok).score(prompts, completions)
    for kwargs in ({"batch_size": 1}, {"batch_size": 3, "max_tokens_per_batch": 120}, {"batch_size": 64}):
        got = RewardScorer(model, tok, prefix_sharing=True, **kwargs).score(prompts, completions)
        torch.testing.assert_close(got, expected, **TOL)
    # max_length cuts the start of long sequences: they no longer share the prompt, the scores still match
    cut = RewardScorer(model, tok, max_length=40).score(prompts, completions)
    shared = RewardScorer(model, tok, max_length=40, prefix_sharing=True)
    torch.testing.assert_close(shared.score(prompts, completions), cut, **TOL)
    assert shared.n_truncated > 0


def test_direct_call_any_chunking():
    model, tok = tiny_llama_reward_model()
    scorer = RewardScorer(model, tok)
    prompts, completions = _grpo_batch(n_prompts=2, group=8)
    sequences = [scorer.encode(p, c) for p, c in zip(prompts, completions, strict=True)]
    expected = torch.tensor(scorer.score_ids(sequences), dtype=torch.float64)
    keys = [hash(p) for p in prompts]
    cpu = torch.device("cpu")
    # one completion per pass (each prefix run per completion), a few, whole groups, several groups per pass
    for batch_size, max_tokens in ((1, None), (3, None), (8, None), (64, None), (64, 150)):
        got = score_shared_prefix(model, sequences, keys, tok.pad_token_id, cpu, batch_size, max_tokens)
        torch.testing.assert_close(got, expected, **TOL)
    with pytest.raises(ValueError, match="got 16 sequences but 2 group keys"):
        score_shared_prefix(model, sequences, keys[:2], tok.pad_token_id, cpu)


def test_nothing_shared_one_token_and_read_inside_the_prefix():
    """Token sequences of one group that differ from their first token (scored without a cache), a 1-token sequence,
    and a sequence whose reward is read inside the shared prefix (it ends with pad tokens, which the head skips)."""
    model, tok = tiny_llama_reward_model()
    pad = tok.pad_token_id
    sequences = [[5, 6, 7], [8, 9], [10], [1, 5, 6, 7, pad], [1, 5, 6, 7, 8], [1, 5, 6, 7, 8, 9]]
    keys = ["a", "a", "b", "c", "c", "c"]
    expected = torch.tensor(RewardScorer(model, tok, batch_size=1).score_ids(sequences), dtype=torch.float64)
    got = score_shared_prefix(model, sequences, keys, pad, torch.device("cpu"))
    torch.testing.assert_close(got, expected, **TOL)


def test_chat_prompts_none_prompts_pairs_and_normalization():
    model, tok = tiny_llama_reward_model()
    model.config.reward_mean, model.config.reward_std = 0.3, 2.0
    chat = [{"role": "user", "content": "Tell me a joke about cats, please."}]
    prompts = [chat, chat, chat, None, None]
    completions = ["Meow.", "No.", "Why did the cat sit on the computer?", "plain text", "another"]
    expected = RewardScorer(model, tok, normalize=True).score(prompts, completions)
    got = RewardScorer(model, tok, normalize=True, prefix_sharing=True).score(prompts, completions)
    torch.testing.assert_close(got, expected, **TOL)
    plain = RewardScorer(model, tok).score_pairs(["Q: "] * 2, ["yes", "sure"], ["no", "never"])
    shared = RewardScorer(model, tok, prefix_sharing=True).score_pairs(["Q: "] * 2, ["yes", "sure"], ["no", "never"])
    torch.testing.assert_close(shared, plain, **TOL)


def test_reward_function_passes_prefix_sharing():
    model, tok = tiny_qwen2_reward_model()
    prompts, completions = _grpo_batch(n_prompts=2, group=4)
    plain = RewardModelFunction(model, tok, name="rm")(prompts, completions)
    shared_fn = RewardModelFunction(model, tok, name="rm", prefix_sharing=True)
    assert shared_fn.scorer.prefix_sharing
    torch.testing.assert_close(shared_fn(prompts, completions), plain, **TOL)


def test_encoder_and_flash_attention_are_rejected():
    model, tok = tiny_bert_reward_model()
    with pytest.raises(ValueError, match="prefix_sharing=True needs a causal \\(decoder\\) reward model"):
        RewardScorer(model, tok, prefix_sharing=True)
    model, tok = tiny_llama_reward_model()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'"):
        RewardScorer(model, tok, prefix_sharing=True)


def test_group_indices_and_split_group():
    assert group_indices(["a", "b", "a", "c", "b"]) == [[0, 2], [1, 4], [3]]
    lengths = [4, 4, 4, 10, 2]
    assert split_group(lengths, [0, 1, 2, 3, 4], max_rows=2, max_tokens=None) == [[0, 1], [2, 3], [4]]
    # padded size rows × longest: [0, 1] is 8, adding 2 makes 12 > 10; [3] alone is over the budget
    assert split_group(lengths, [0, 1, 2, 3, 4], max_rows=8, max_tokens=10) == [[0, 1], [2], [3], [4]]
    assert split_group(lengths, [3], max_rows=1, max_tokens=1) == [[3]]
