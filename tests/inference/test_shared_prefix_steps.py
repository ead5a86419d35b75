"""PRM step scoring with the prompt encoded once per group (`ProcessRewardScorer(prefix_sharing=True)`): every step
probability equals scoring its solution alone (fp32, 1e-5) on tiny Llama- and Qwen2-style token classifiers and on a
language-model PRM, for an empty prompt, a prompt longer than the solutions, mixed lengths, a group of one, labels
inside the shared prefix, and any batching; the prefix really runs once; the reward functions pass the option
through; encoders and flash attention are rejected."""

import pytest
import torch
from transformers import AddedToken, AutoModelForTokenClassification, LlamaForCausalLM

from trl_rewards.inference.shared_prefix_scoring import shared_prefix_outputs, tail_batches
from trl_rewards.inference.step_scoring import ProcessRewardScorer
from trl_rewards.rewards.model_rewards import ProcessRewardFunction
from trl_rewards.testing import (
    tiny_bert_token_classifier,
    tiny_llama_config,
    tiny_llama_token_classifier,
    tiny_llama_tokenizer,
    tiny_qwen2_config,
)

TOL = dict(atol=1e-5, rtol=0)


def _qwen2_token_classifier(seed=0, **overrides):
    tok = tiny_llama_tokenizer()
    torch.manual_seed(seed)
    return AutoModelForTokenClassification.from_config(tiny_qwen2_config(tok, num_labels=2, **overrides)), tok


def _lm_prm(seed=0):
    tok = tiny_llama_tokenizer()
    tok.add_tokens([AddedToken("<|prm_label|>", special=True, normalized=False)])
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tok)).eval(), tok


MODELS = {"llama": tiny_llama_token_classifier, "qwen2": _qwen2_token_classifier}

LONG = "A long problem statement, much longer than any of its solutions below: compute 2+2 then 3*3. "
CASES = {
    # the empty prompt: only `<s>` (and a common first step, when there is one) is shared
    "empty_prompt": (["", "", ""], [["2+2=4", "ok"], ["2+2=5"], ["3", "4", "5"]]),
    "long_prompt": ([LONG] * 4, [["4"], ["5", "no"], ["4", "9"], ["x"]]),
    # several groups of different sizes, interleaved, with steps of very different lengths
    "mixed_lengths": (
        ["Q1: 2+2?", "Q2: a much longer question, 3*3?", "Q1: 2+2?", "Q2: a much longer question, 3*3?", "Q1: 2+2?"],
        [["2+2=4", "so the answer is 4"], ["9"], ["2+2 is four"], ["3*3=9", "9", "done, it is 9"], ["1"]],
    ),
    "group_of_one": (["Only one solution for this prompt: "], [["a", "bb", "ccc"]]),
    # equal first steps: their labels lie inside the shared prefix (read from the prefix pass); equal solutions
    "labels_in_prefix": (["Q: 5-3? "] * 4, [["5-3=2", "2"], ["5-3=2", "two"], ["5-3=2", "2"], ["5-3=2"]]),
}


def _assert_same(got, expected):
    assert [len(g) for g in got] == [len(e) for e in expected]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.tensor(g, dtype=torch.float64), torch.tensor(e, dtype=torch.float64), **TOL)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_step_probabilities_equal_scoring_alone(case, arch, attn):
    model, tok = MODELS[arch](initializer_range=0.1)  # larger weights: probabilities spread far beyond the tolerance
    model.config._attn_implementation = attn
    prompts, solutions = CASES[case]
    one = ProcessRewardScorer(model, tok, batch_size=1)
    alone = [one.step_probabilities([p], [s])[0] for p, s in zip(prompts, solutions, strict=True)]
    shared = ProcessRewardScorer(model, tok, prefix_sharing=True).step_probabilities(prompts, solutions)
    _assert_same(shared, alone)
    flat = [p for probs in alone for p in probs]
    assert max(flat) - min(flat) > 1e-3  # probabilities differ between steps: the comparison has teeth


def test_any_batching_and_truncation():
    model, tok = tiny_llama_token_classifier(seed=1)
    prompts, solutions = CASES["mixed_lengths"]
    prompts, solutions = prompts * 3, solutions * 3  # groups of 6 and 9 solutions
    expected = ProcessRewardScorer(model, tok).step_probabilities(prompts, solutions)
    for kwargs in ({"batch_size": 1}, {"batch_size": 2}, {"batch_size": 4, "max_tokens_per_batch": 90}, {}):
        got = ProcessRewardScorer(model, tok, prefix_sharing=True, **kwargs).step_probabilities(prompts, solutions)
        _assert_same(got, expected)
    # max_length cuts prompt tokens from the left: the cut rows share less (or nothing), the probabilities still match
    cut = ProcessRewardScorer(model, tok, max_length=30)
    shared = ProcessRewardScorer(model, tok, max_length=30, prefix_sharing=True)
    _assert_same(shared.step_probabilities(prompts, solutions), cut.step_probabilities(prompts, solutions))
    assert shared.n_truncated > 0


@pytest.mark.parametrize("own_forward", [False, True])
def test_language_model_prm(own_forward):
    """lm style: the two head rows over the body's hidden states, or (logits rescaled by the model: here a
    `logit_scale` attribute, which Llama ignores) the model's own forward and its full logits."""
    model, tok = _lm_prm()
    if own_forward:
        model.config.logit_scale = 1.0
    prompts, solutions = CASES["labels_in_prefix"]
    scorer = ProcessRewardScorer(model, tok, prefix_sharing=True)
    assert (scorer._two_row_head() is None) == own_forward
    expected = ProcessRewardScorer(model, tok, batch_size=1).step_probabilities(prompts, solutions)
    _assert_same(scorer.step_probabilities(prompts, solutions), expected)


def test_the_prompt_runs_once_per_group():
    """The embedding sees `p` prefix tokens once plus each solution's remaining tokens (padded to the longest), not
    `G` copies of the prompt."""
    model, tok = tiny_llama_token_classifier()
    prompts, solutions = [LONG] * 4, [["4"], ["5", "no"], ["4", "9"], ["x"]]
    seen = []
    handle = model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape))
    try:
        scorer = ProcessRewardScorer(model, tok, prefix_sharing=True)
        scorer.step_probabilities(prompts, solutions)
    finally:
        handle.remove()
    rows = [scorer.encode(p, s).input_ids for p, s in zip(prompts, solutions, strict=True)]
    p = 1 + len(LONG)  # `<s>` + one token per character; the solutions differ from their first character
    assert all(row[:p] == rows[0][:p] for row in rows) and len({row[p] for row in rows}) > 1
    tails = [len(row) - p for row in rows]  # completions of similar length share a tail pass, with the same cache
    batches = tail_batches(tails)
    assert seen == [torch.Size([1, p])] + [torch.Size([len(b), max(tails[r] for r in b)]) for b in batches]
    assert p + sum(len(b) * max(tails[r] for r in b) for b in batches) < 0.4 * sum(len(row) for row in rows)


def test_tail_batches_keep_lengths_alike():
    # longest first; a row shorter than 2/3 of its batch's longest starts a new batch: 6 < 6.67, 4 >= 4, 3 < 4
    assert tail_batches([10, 4, 9, 6, 3]) == [[0, 2], [3, 1], [4]]
    assert tail_batches([5, 5, 5]) == [[0, 1, 2]] and tail_batches([]) == []


def test_outputs_core_checks_its_inputs():
    model, tok = tiny_llama_token_classifier()

    def logits(kwargs):
        return model(**kwargs).logits

    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="got 2 sequences but 1 group keys and 2 positions"):
        shared_prefix_outputs(model, logits, [[1, 5], [1, 6]], ["a"], [[0], [1]], tok.pad_token_id, cpu)
    with pytest.raises(ValueError, match=r"sequence 1: positions \[2\] fall outside its 2 tokens"):
        shared_prefix_outputs(model, logits, [[1, 5], [1, 6]], ["a", "a"], [[0], [2]], tok.pad_token_id, cpu)
    with pytest.raises(ValueError, match="every sequence needs at least one token"):
        shared_prefix_outputs(model, logits, [[1, 5], []], ["a", "a"], [[0], []], tok.pad_token_id, cpu)


@pytest.mark.parametrize("step_rewards", [False, True])
def test_process_reward_function_passes_prefix_sharing(step_rewards):
    model, tok = _qwen2_token_classifier(seed=2)
    prompts = ["Q: 2+2?"] * 3 + [[{"role": "user", "content": "Q: 3*3?"}]] * 2
    completions = ["2+2=4\nok", "2+2=4\nso 4", "five", "3*3=9\n9", "\n\n"]  # the last has no step: None
    plain = ProcessRewardFunction(model, tok, step_rewards=step_rewards, batch_size=1)
    shared = ProcessRewardFunction(model, tok, step_rewards=step_rewards, prefix_sharing=True)
    assert shared.scorer.prefix_sharing and not plain.scorer.prefix_sharing
    want, got = plain(prompts, completions), shared(prompts, completions)
    assert got[-1] is None and want[-1] is None
    if step_rewards:  # [(char_end, probability), ...] per completion
        assert [[end for end, _ in r] for r in got[:-1]] == [[end for end, _ in r] for r in want[:-1]]
        got, want = [[p for _, p in r] for r in got[:-1]], [[p for _, p in r] for r in want[:-1]]
        _assert_same(got, want)
    else:
        torch.testing.assert_close(got[:-1], want[:-1], **TOL)


def test_encoder_and_flash_attention_are_rejected():
    model, tok = tiny_bert_token_classifier()
    with pytest.raises(ValueError, match="prefix_sharing=True needs a causal \\(decoder\\) reward model"):
        ProcessRewardScorer(model, tok, step_separator="[SEP]", prefix_sharing=True)
    with pytest.raises(ValueError, match="prefix_sharing=True needs a causal \\(decoder\\) reward model"):
        ProcessRewardFunction(model, tok, step_separator="[SEP]", prefix_sharing=True)
    model, tok = tiny_llama_token_classifier()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'"):
        ProcessRewardScorer(model, tok, prefix_sharing=True)
