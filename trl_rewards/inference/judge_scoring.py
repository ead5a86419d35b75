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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

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


class JudgeScorer:
    """
    Scores responses with an instruct model as the judge.

    Args:
        model: a causal LM (the judge); tokenizer: its tokenizer (with a chat template, used when it has one).
        template (`str`, *optional*): the judge prompt, with `{prompt}` and `{response}` (default: the rubric above).
        mode (`str`, *optional*, defaults to `"expected"`): `"expected"` or `"parse"` (see the module docstring).
        max_new_tokens (`int`, *optional*, defaults to `160`): `"parse"` only.
    """

    def __init__(self, model, tokenizer, template: str = DEFAULT_TEMPLATE, mode: str = "expected", max_new_tokens=160):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if "{prompt}" not in template or "{response}" not in template:
            raise ValueError("template must contain {prompt} and {response}")
        self.model, self.tokenizer, self.template, self.mode = model.eval(), tokenizer, template, mode
        self.max_new_tokens = max_new_tokens
        self.score_ids = []
        for score in range(6):
            ids = tokenizer.encode(str(score), add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"the score {score} is not a single token of the judge's tokenizer ({ids})")
            self.score_ids.append(ids[0])
        self.n_unparsable = 0

    def judge_prompt(self, prompt: Any, response: Any) -> str:
        """The rendered judge prompt (chat template with a generation prompt when the tokenizer has one)."""
        content = self.template.format(prompt=_text(prompt), response=_text(response))
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": content}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return content + "\n"

    @torch.inference_mode()
    def expected_score(self, prompt: Any, response: Any) -> float:
        text = self.judge_prompt(prompt, response) + SCORE_PREFIX
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        logits = self.model(input_ids=ids.to(next(self.model.parameters()).device), use_cache=False).logits[0, -1]
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
