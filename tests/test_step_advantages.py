"""The dense-advantage math of `trl_rewards.step_advantages`, on literal values derived by hand in each docstring."""

import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from trl_rewards.step_advantages import (
    check_step_rewards,
    combine_advantages,
    normalize_step_rewards,
    step_end_tokens,
    step_statistics,
    token_advantages,
    token_char_ends,
)
from trl_rewards.testing import tiny_llama_tokenizer

S3 = math.sqrt(1 / 3)  # Bessel std of {1, 0, 0}


def merged_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE tokenizer whose tokens span several characters, one of them across a newline: "ab\\ncd" encodes as
    `a | b\\n | cd`."""
    chars = ["a", "b", "c", "d", "\n"]
    vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate(chars)}, "b\n": 6, "cd": 7}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("b", "\n"), ("c", "d")]))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def test_normalize_over_every_step_of_the_group():
    """Group 1: steps {1, 0} and {0}: mean 1/3, Bessel std sqrt(((2/3)² + 2·(1/3)²) / 2) = sqrt(1/3), so 1 → (2/3)/S3
    = 1.1547 and 0 → -(1/3)/S3 = -0.5774. Group 2: one step only, std undefined → 0 (as TRL does with one
    completion). A completion without steps keeps an empty list."""
    out = normalize_step_rewards([[1.0, 0.0], [], [0.0], [5.0], [], []], num_generations=3)
    eps = 1e-4
    hi, lo = (2 / 3) / (S3 + eps), -(1 / 3) / (S3 + eps)
    assert out[0] == pytest.approx([hi, lo], abs=1e-9)
    assert out[1] == [] and out[2] == pytest.approx([lo], abs=1e-9)
    assert out[3] == [0.0] and out[4] == [] and out[5] == []


def test_normalize_scale_options():
    """ "none" only centers: {1, 0, 0} → {2/3, -1/3, -1/3}. "batch" divides by the std of all steps of the batch:
    group A {1, 0}, group B {3, 3}: means 1/2 and 3, batch std of {1, 0, 3, 3} = sqrt(((-.75)² + (-1.75)² + 1.25² ·
    2)/3) = sqrt(2.25) = 1.5."""
    out = normalize_step_rewards([[1.0, 0.0], [0.0]], num_generations=2, scale_rewards="none")
    assert out == [pytest.approx([2 / 3, -1 / 3]), pytest.approx([-1 / 3])]
    out = normalize_step_rewards([[1.0], [0.0], [3.0], [3.0]], num_generations=2, scale_rewards="batch")
    assert [r[0] for r in out] == pytest.approx([0.5 / 1.5001, -0.5 / 1.5001, 0.0, 0.0], abs=1e-9)
    with pytest.raises(ValueError, match="scale_rewards"):
        normalize_step_rewards([[1.0]], 1, scale_rewards="std")
    with pytest.raises(ValueError, match="num_generations=2"):
        normalize_step_rewards([[1.0]] * 3, 2)


def test_token_advantages_sum_the_steps_ending_at_or_after_each_token():
    """Steps ending at tokens 1 and 3 with rewards 0.5 and -1, T = 5: tokens 0-1 get 0.5 - 1 = -0.5, tokens 2-3 get
    -1, token 4 (after the last step) gets 0. Two steps ending on one token both count there."""
    out = token_advantages([[1, 3], [], [2, 2]], [[0.5, -1.0], [], [1.0, 2.0]], length=5)
    expected = torch.tensor([[-0.5, -0.5, -1.0, -1.0, 0.0], [0.0] * 5, [3.0, 3.0, 3.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="outside"):
        token_advantages([[5]], [[1.0]], length=5)


def test_group_with_no_boundary_a_cut_step_and_eos():
    """A group of three completions from a character-level policy (one character, one token):

    - c0 = "ab\\ncd" + eos, steps "ab" (reward 1, ends at char 2 → token 1) and "cd" (reward 0, ends with the text →
      the last token, the eos included);
    - c1 = "xyz": no step boundary (`None`): no process advantage;
    - c2 = "pq\\nr", cut by the completion length inside its second step, which the function does not score: step
      "pq" (reward 0, token 1); the tokens of the cut step get nothing.

    R = {1, 0, 0}: 1 → h = (2/3)/S3, 0 → l = -(1/3)/S3. c0: tokens 0-1 get h + l = S3·(1) ≈ 0.577, tokens 2-5 get l;
    c2: tokens 0-1 get l, 2-3 get 0. With outcome advantages [1, 0, -1] and weights (1, 2): A = o + 2·process.
    """
    tok = tiny_llama_tokenizer()
    texts = ["ab\ncd", "xyz", "pq\nr"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    ids[0] = ids[0] + [tok.eos_token_id]
    output = [[(2, 1.0), (5, 0.0)], None, [(2, 0.0)]]
    steps = check_step_rewards(output, texts, "rule")
    tokens = [step_end_tokens([e for e, _ in row], token_char_ends(tok, i)) for row, i in zip(steps, ids, strict=True)]
    assert tokens == [[1, 5], [], [1]]
    normalized = normalize_step_rewards([[r for _, r in row] for row in steps], num_generations=3)
    process = token_advantages(tokens, normalized, length=6)
    h, lo = (2 / 3) / (S3 + 1e-4), -(1 / 3) / (S3 + 1e-4)
    expected = torch.tensor([[h + lo] * 2 + [lo] * 4, [0.0] * 6, [lo, lo, 0, 0, 0, 0]])
    torch.testing.assert_close(process, expected)
    combined = combine_advantages(torch.tensor([1.0, 0.0, -1.0]), process, 1.0, 2.0)
    torch.testing.assert_close(combined, torch.tensor([[1.0], [0.0], [-1.0]]) + 2 * expected)


def test_policy_tokenizer_with_multi_character_tokens():
    """The step function counts characters; the policy's tokens are `a | b\\n | cd`: step "ab" ends at char 2, inside
    token 1 ("b\\n", chars 1-3), which is its end token; step "cd" ends with the text at token 2. Sampled ids that
    are not the canonical encoding (one token per character) are mapped by prefix decoding instead."""
    tok = merged_tokenizer()
    canonical = tok("ab\ncd", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in canonical] == ["a", "b\n", "cd"]
    assert token_char_ends(tok, canonical) == [1, 3, 5]
    assert step_end_tokens([2, 5], token_char_ends(tok, canonical)) == [1, 2]
    per_char = [tok.convert_tokens_to_ids(c) for c in "ab\ncd"] + [tok.eos_token_id]
    assert token_char_ends(tok, per_char) == [1, 2, 3, 4, 5, 5]
    assert step_end_tokens([2, 5], token_char_ends(tok, per_char)) == [1, 5]
    with pytest.raises(ValueError, match="past the completion"):
        step_end_tokens([7], [1, 3])


def test_contract_checks_name_the_function_row_and_step():
    texts = ["abc", "de"]
    assert check_step_rewards([[(1, 1), (3, 0.5)], []], texts, "f") == [[(1, 1.0), (3, 0.5)], []]
    bad = {
        "returned 1 rows": [[(1, 1.0)]],
        "completion 0, step 1: char_end 1 must be > 1": [[(1, 1.0), (1, 0.0)], None],
        "<= 2": [None, [(3, 1.0)]],
        "not a finite": [[(1, float("nan"))], None],
        "not an int": [[(1.0, 1.0)], None],
        "not a pair": [[(1,)], None],
        "must return a list": "oops",
    }
    for message, output in bad.items():
        with pytest.raises((ValueError, TypeError), match=message):
            check_step_rewards(output, texts, "f")


def test_combine_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected outcome"):
        combine_advantages(torch.zeros(2, 1), torch.zeros(2, 3), 1.0, 1.0)


def test_step_statistics():
    """Rows [1, 0, 0], [1, 1], [] and [0]: 6 steps, mean 3/6; 6/4 per completion; one of four without steps; the
    three rows with steps find a first bad step in two (at relative positions 1/3 and 0/1, mean 1/6)."""
    stats = step_statistics([[1.0, 0.0, 0.0], [1.0, 1.0], [], [0.0]], bad_threshold=0.5)
    assert stats == pytest.approx(
        {
            "mean_step_reward": 0.5,
            "steps_per_completion": 1.5,
            "no_steps_frac": 0.25,
            "first_bad_found": 2 / 3,
            "first_bad_position": 1 / 6,
        }
    )
