"""The local judge's prefix reuse: keeping the previous input's key/value cache and running only the tokens after the
shared prefix gives the scores of full forward passes, and the cache is really cut back and reused."""

import pickle

import pytest
import torch
from transformers import LlamaForCausalLM

from trl_rewards.inference.judge_scoring import JudgeScorer
from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer


def test_prefix_reuse_equals_full_forward_passes():
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(5)
    judge = LlamaForCausalLM(tiny_llama_config(tokenizer, max_position_embeddings=2048)).eval()
    # pairs of responses to one prompt, a new prompt, a response that is a prefix of the previous one, a repeat
    prompts = ["What is 2+2?", "What is 2+2?", "Name a colour.", "Name a colour.", "Name a colour.", "Name a colour."]
    responses = ["4", "five", "blue, like the sky", "blue", "blue", "red"]
    full = JudgeScorer(judge, tokenizer, reuse_prefix=False).score(prompts, responses)
    reused = JudgeScorer(judge, tokenizer)
    calls = []
    hook = judge.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape[1]),
                                    with_kwargs=True)  # fmt: skip
    assert reused.score(prompts, responses) == pytest.approx(full, abs=1e-6)
    lengths = [len(tokenizer(reused.judge_prompt(p, r) + "Score: ", add_special_tokens=False)["input_ids"])
               for p, r in zip(prompts, responses, strict=True)]  # fmt: skip
    assert calls[0] == lengths[0] and all(c < n for c, n in zip(calls[1:], lengths[1:], strict=True))
    assert calls[4] == 1  # an identical input runs only its last token
    assert len({round(s, 6) for s in full}) > 2  # the responses are scored differently
    hook.remove()
    copied = pickle.loads(pickle.dumps(reused))  # the cache stays behind
    assert copied._cache is None and copied.score(prompts[:1], responses[:1]) == pytest.approx(full[:1], abs=1e-6)
