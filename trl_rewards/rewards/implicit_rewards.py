"""Rewards from models that were not trained as reward models, in TRL's reward-function contract: a DPO policy's
implicit reward (`inference/implicit_scoring.py`) and an instruct model as a judge (`inference/judge_scoring.py`).

Both take loaded models (with their tokenizers) or paths (`AutoModelForCausalLM`); the judge also runs behind an
OpenAI-compatible server (`rewards/openai_judge.py`). Both are picklable callables with a
`__name__`, and return `None` where they have no reward (a judgement without a score), which TRL leaves out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer

from ..inference.implicit_scoring import ImplicitRewardScorer
from ..inference.judge_scoring import DEFAULT_TEMPLATE, JudgeScorer
from .openai_judge import OpenAIJudgeScorer


def _causal_lm(model, tokenizer):
    if isinstance(model, str | os.PathLike):
        path = os.fspath(model)
        return AutoModelForCausalLM.from_pretrained(path), tokenizer or AutoTokenizer.from_pretrained(path)
    if tokenizer is None:
        raise ValueError("a loaded model needs its tokenizer: pass tokenizer=")
    return model, tokenizer


class ImplicitRewardFunction:
    """
    A DPO model's implicit reward `β · (log π(y|x) − log π_ref(y|x))` as a TRL reward function (and a scorer for
    `evaluate_preferences` / `RewardEnsemble`). `ref_model=None` uses a PEFT model's base (adapter switched off).

    Args:
        model, ref_model: causal LMs or paths; tokenizer: the policy's (default: loaded from `model`'s path).
        beta (`float`), length_normalize (`bool`), batch_size (`int`): see [`ImplicitRewardScorer`].
        name (`str`, *optional*, defaults to `"implicit_reward"`): `__name__`.
    """

    def __init__(self, model, ref_model=None, tokenizer=None, beta: float = 0.1, length_normalize: bool = False,
                 batch_size: int = 8, name: str = "implicit_reward"):  # fmt: skip
        model, tokenizer = _causal_lm(model, tokenizer)
        if isinstance(ref_model, str | os.PathLike):
            ref_model = AutoModelForCausalLM.from_pretrained(os.fspath(ref_model))
        self.scorer = ImplicitRewardScorer(model, tokenizer, ref_model, beta, length_normalize, batch_size)
        self.__name__ = name

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        return self.scorer.score(prompts, completions)

    def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list[float | None]:
        return self.scorer.score(list(prompts), list(completions))


class JudgeRewardFunction:
    """
    LLM-as-a-judge as a TRL reward function: the judge's score of each completion on a rubric (default: the additive
    5-point rubric of Self-Rewarding LMs), as an expected score (`mode="expected"`) or parsed from a generated
    judgement (`mode="parse"`; unparsable → `None`, counted in `{name}/num_unparsable` through `log_metric`). The
    judge runs in this process, or behind an OpenAI-compatible server (`endpoint=`, e.g. vLLM; see
    `rewards/openai_judge.py` for what the server must support).

    Args:
        model: the judge: a causal LM or a path, or with `endpoint` the served model's name.
        tokenizer: its tokenizer (default: loaded from the path); with `endpoint`, optional: renders the chat template
            for the completions API.
        template (`str`, *optional*): the judge prompt with `{prompt}` and `{response}`.
        mode (`str`, *optional*, defaults to `"expected"`), max_new_tokens (`int`): see [`JudgeScorer`].
        name (`str`, *optional*, defaults to `"judge"`): `__name__`.
        endpoint (`str`, *optional*): an OpenAI-compatible API base URL, e.g. `"http://localhost:8000/v1"`.
        endpoint_options: with `endpoint`, more [`OpenAIJudgeScorer`] arguments (`api`, `top_logprobs`, `timeout`,
            `retries`, `backoff`, `batch_size`, `concurrency`, `api_key`).
    """

    def __init__(self, model, tokenizer=None, template: str = DEFAULT_TEMPLATE, mode: str = "expected",
                 max_new_tokens: int = 160, name: str = "judge", endpoint: str | None = None,
                 **endpoint_options):  # fmt: skip
        if endpoint is not None:
            self.scorer = OpenAIJudgeScorer(endpoint, model, mode, template, tokenizer,
                                            max_new_tokens=max_new_tokens, **endpoint_options)  # fmt: skip
        else:
            if endpoint_options:
                raise TypeError(f"{sorted(endpoint_options)} are options of a judge endpoint; pass endpoint= too")
            model, tokenizer = _causal_lm(model, tokenizer)
            self.scorer = JudgeScorer(model, tokenizer, template, mode, max_new_tokens)
        self.__name__ = name

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float | None]:
        return self.scorer.score(prompts, completions)

    def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list[float | None]:
        before = self.scorer.n_unparsable
        rewards = self.scorer.score(list(prompts), list(completions))
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric(f"{self.__name__}/num_unparsable", float(self.scorer.n_unparsable - before))
        return rewards
