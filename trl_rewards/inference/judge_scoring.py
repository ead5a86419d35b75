"""LLM-as-a-judge scoring: an instruct model rates a response on a rubric, read as an expected score or parsed.

The default rubric is the additive 5-point one of Self-Rewarding Language Models (Yuan et al. 2024), written here in
our words: one point for each of relevance, substantial coverage, a useful answer to the core question, a clear and
well-organized answer from an assistant's perspective, and an expert, engaging answer; the judge ends with
"Score: <0-5>". Two ways to read the judgement:

- `"expected"` (default; best for small judges): one forward pass over the rendered judge prompt followed by
  `"Score: "`, and the expected value `Σ_s s · p(s) / Σ_s p(s)` of the next-token probabilities of the score tokens
  `"0"`…`"5"`: deterministic, no sampling, and graded rather than a coarse integer;
- `"parse"`: greedy generation, and the last `Score: N` in the text; a judgement without one gives `None` (counted
  in `n_unparsable`), never a made-up number.

The rendering, the parsing and the expectation are plain functions, shared with the OpenAI-compatible client
(`rewards/openai_judge.py`), which reads the same two ways from a server's completions and log-probabilities.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

DEFAULT_TEMPLATE = (
    "Review the user's question and the response below, and score the response with this additive 5-point rubric:\n"
    "- add 1 point if the response is relevant and gives some information related to the question, even if it is "
    "incomplete or has some irrelevant content;\n"
    "- add a 2nd point if it addresses a substantial part of the question but does not fully answer it;\n"
    "- add a 3rd point if it answers the basic elements of the question in a useful way;\n"
    "- add a 4th point if it is clearly written from an AI assistant's perspective, directly and comprehensively "
    "answers the question, and is well organized;\n"
    "- add a 5th point if it is impeccably tailored to the question, expert, engaging and free of extraneous "
    "content.\n\n"
    "Question: {prompt}\n\nResponse: {response}\n\n"
    'Explain your total score in at most 100 words, then end with the line "Score: <total points>".'
)
SCORE_PREFIX = "Score: "
SCORE_PATTERN = re.compile(r"Score:\s*\**\s*([0-5])(?:\s*/\s*5)?\b")
MODES = ("expected", "parse")


def _text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return "\n".join(str(m.get("content") or "") for m in value)


def parse_score(judgement: str) -> int | None:
    """The last `Score: N` (N in 0..5, optionally `N/5` or bold) in a judgement, else `None`."""
    matches = SCORE_PATTERN.findall(judgement)
    return int(matches[-1]) if matches else None


def check_template(template: str) -> str:
    if "{prompt}" not in template or "{response}" not in template:
        raise ValueError("template must contain {prompt} and {response}")
    return template


def _shared_prefix_length(first: list[int], second: list[int]) -> int:
    n = min(len(first), len(second))
    return next((i for i in range(n) if first[i] != second[i]), n)


def fill_template(template: str, prompt: Any, response: Any) -> str:
    """The judge's request: `template` with the prompt and response texts (messages' contents joined by lines)."""
    return template.format(prompt=_text(prompt), response=_text(response))


def render_judge_prompt(template: str, tokenizer, prompt: Any, response: Any) -> str:
    """The judge's input text: `template` filled in, as a user turn of `tokenizer`'s chat template with a generation
    prompt when there is one (`tokenizer=None`, or one without a template: the plain text and a newline)."""
    content = fill_template(template, prompt, response)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return content + "\n"


def expected_score_from_logprobs(top_logprobs: dict[str, float]) -> float | None:
    """
    The expected score `Σ_s s · p(s) / Σ_s p(s)` from a server's top log-probabilities of the token after
    `"Score: "` (`{token: logprob}`): tokens that are a score `"0"`…`"5"` up to surrounding spaces count, summed per
    score; a score outside the top-k counts as probability 0. `None` when no score token is among them.
    """
    mass = [0.0] * 6
    for token, logprob in top_logprobs.items():
        digit = token.strip()
        if len(digit) == 1 and digit in "012345" and logprob is not None:
            mass[int(digit)] += math.exp(logprob)
    total = sum(mass)
    return None if total == 0 else sum(s * p for s, p in enumerate(mass)) / total


class JudgeScorer:
    """
    Scores responses with an instruct model as the judge.

    Args:
        model: a causal LM (the judge); tokenizer: its tokenizer (with a chat template, used when it has one).
        template (`str`, *optional*): the judge prompt, with `{prompt}` and `{response}` (default: the rubric above).
        mode (`str`, *optional*, defaults to `"expected"`): `"expected"` or `"parse"` (see the module docstring).
        max_new_tokens (`int`, *optional*, defaults to `160`): `"parse"` only.
        reuse_prefix (`bool`, *optional*, defaults to `True`): `"expected"` only: keep the key/value cache of the
            previous judge input and run only the tokens after the prefix both share (the rubric always; the prompt
            too when consecutive responses answer the same prompt, as a pair's or a group's do). The scores are those
            of a full forward pass up to float rounding; judges whose cache cannot be cut back (sliding-window or
            linear-attention layers) always run the full input. The cache makes a scorer stateful: share one across
            threads only behind a lock.
    """

    def __init__(self, model, tokenizer, template: str = DEFAULT_TEMPLATE, mode: str = "expected", max_new_tokens=160,
                 reuse_prefix: bool = True):  # fmt: skip
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model, self.tokenizer, self.template, self.mode = model.eval(), tokenizer, check_template(template), mode
        self.max_new_tokens, self.reuse_prefix = max_new_tokens, reuse_prefix
        self._cache, self._cache_ids = None, []
        # transformers 5.24 renamed `past_key_values` (argument and output) to `cache`
        forward = getattr(model, "get_base_model", lambda: model)().forward
        self._cache_argument = "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
        self.score_ids = []
        for score in range(6):
            ids = tokenizer.encode(str(score), add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"the score {score} is not a single token of the judge's tokenizer ({ids})")
            self.score_ids.append(ids[0])
        self.n_unparsable = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None, "_cache_ids": []}  # the reused prefix is a per-process cache

    def judge_prompt(self, prompt: Any, response: Any) -> str:
        """The rendered judge prompt (chat template with a generation prompt when the tokenizer has one)."""
        return render_judge_prompt(self.template, self.tokenizer, prompt, response)

    def _last_logits(self, ids: list[int]) -> torch.Tensor:
        """Next-token logits after `ids`, computing only the tokens after the prefix shared with the previous input
        (whose cache is cut back to that prefix; see `reuse_prefix`)."""
        keep = 0
        if self._cache is not None:
            keep = min(_shared_prefix_length(self._cache_ids, ids), len(ids) - 1)  # at least one token to run
            cached = self._cache.get_seq_length()
            if 0 < keep < cached:
                self._cache.crop(keep - cached)  # a negative count removes tokens (every transformers 5 release)
            if keep == 0 or self._cache.get_seq_length() != keep:
                keep = 0
        device = next(self.model.parameters()).device
        past = {self._cache_argument: self._cache} if keep else {}
        out = self.model(input_ids=torch.tensor([ids[keep:]], device=device), use_cache=self.reuse_prefix, **past)
        cache = out.get(self._cache_argument) if self.reuse_prefix else None
        croppable = cache is not None and all(
            type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None])
        )
        self._cache, self._cache_ids = (cache, ids) if croppable else (None, [])
        return out.logits[0, -1]

    @torch.inference_mode()
    def expected_score(self, prompt: Any, response: Any) -> float:
        text = self.judge_prompt(prompt, response) + SCORE_PREFIX
        logits = self._last_logits(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        probs = torch.softmax(logits.double()[self.score_ids], dim=-1)  # renormalized over the score tokens
        return float((probs * torch.arange(6, dtype=torch.float64, device=probs.device)).sum())

    @torch.inference_mode()
    def parsed_score(self, prompt: Any, response: Any) -> int | None:
        ids = self.tokenizer(self.judge_prompt(prompt, response), add_special_tokens=False, return_tensors="pt")
        ids = {k: v.to(next(self.model.parameters()).device) for k, v in ids.items()}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        score = parse_score(self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
        self.n_unparsable += score is None
        return score

    def score(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[float | None]:
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        read = self.expected_score if self.mode == "expected" else self.parsed_score
        return [read(p, r) for p, r in zip(prompts, responses, strict=True)]
