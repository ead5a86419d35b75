r"""Step reward functions: one reward per *step* of a completion, for dense GRPO advantages.

**The contract** ([`StepRewardFunction`]). A step reward function is called exactly like a TRL reward function,
`fn(prompts, completions, completion_ids=None, **kwargs)`, and returns, per completion, a list of
`(char_end, reward)` pairs or `None`:

- `char_end` is the exclusive character offset in the completion's text (for a conversational completion, the
  concatenated `content` of its messages) where the step ends; offsets strictly increase, `1 <= char_end <= len(text)`;
- `reward` is a finite number;
- `None` (or `[]`) means no step reward for this completion, e.g. no step in it.

Offsets are characters, not tokens: the function may tokenize with anything (a PRM with its own tokenizer) or
nothing (a rule). [`~trl_rewards.trainers.process_grpo_trainer.ProcessGRPOTrainer`] maps them onto the policy's
tokens ([`~trl_rewards.step_advantages.step_end_tokens`]) and checks every output
([`~trl_rewards.step_advantages.check_step_rewards`]). Functions that follow it carry `returns_step_rewards = True`,
so that the trainer refuses them among ordinary (one number per completion) reward functions.

Two implementations: [`ProcessRewardFunction`] with `step_rewards=True` (a PRM's P(step correct)), and
[`ArithmeticStepReward`] here, an exact rule-based checker for the synthetic arithmetic task
(`trl_rewards.data.synthetic`), which shows the contract is not tied to a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..data.synthetic import extract_answer
from .base import message_text

_NUMBER = r"-?\d+(?:,\d{3})*"
_EQUATION = re.compile(rf"({_NUMBER})\s*([-+*/×÷])\s*({_NUMBER})\s*=\s*({_NUMBER})")
_WORD_CONSTANTS = {"double": 2, "doubles": 2, "triple": 3, "triples": 3, "half": 2, "halves": 2}


@runtime_checkable
class StepRewardFunction(Protocol):
    """What a step reward function is: a named callable returning per completion `[(char_end, reward), ...]` or
    `None` (see the module docstring)."""

    __name__: str

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> list[list[tuple[int, float]] | None]: ...


def step_spans(text: str, separator: str = "\n") -> list[tuple[int, int]]:
    """
    `(start, end)` character spans of the steps of `text`: the parts between separators, stripped, empty ones
    dropped, i.e. exactly the steps of [`~trl_rewards.data.stepwise.split_steps`] with where they lie.

    Example: `step_spans("a = 1.\\n\\n b")` is `[(0, 6), (9, 10)]`.
    """
    if not separator:
        raise ValueError("separator must not be empty")
    spans, start = [], 0
    for piece in text.split(separator):
        body = piece.strip()
        if body:
            first = start + len(piece) - len(piece.lstrip())
            spans.append((first, first + len(body)))
        start += len(piece) + len(separator)
    return spans


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _holds(a: int, op: str, b: int, c: int) -> bool:
    if op == "+":
        return a + b == c
    if op == "-":
        return a - b == c
    if op in "*×":
        return a * b == c
    return b != 0 and a == b * c  # exact division


class ArithmeticStepReward:
    r"""
    Exact rule-based step rewards for arithmetic solutions written one calculation per step (the synthetic task).

    A completion is split into steps with `separator`. A step holding equations `a op b = c` is right when every one
    of them holds exactly and uses operands it may use: numbers of the prompt (with `doubles` = 2, `triples` = 3,
    `half` = 2) or results of earlier steps. With a `values_column` (each row's gold intermediate results), a result
    must moreover be one of them, which also catches a wrong operation or a miscopied number whose arithmetic holds.
    A step `"The answer is N."` is right when `N` is the row's gold answer (`answer_column`) or, without one, the last
    result. Steps with neither an equation nor an answer get no reward (they are not reported). As in the synthetic
    step labels, every step after the first wrong one is wrong too (`stop_at_first_error`).

    Args:
        separator (`str`, *optional*, defaults to `"\n"`): what separates steps.
        correct_reward (`float`, *optional*, defaults to `1.0`): reward of a right step.
        incorrect_reward (`float`, *optional*, defaults to `0.0`): reward of a wrong step.
        answer_column (`str`, *optional*, defaults to `"answer"`): keyword argument with the gold answers, used when
            the call has it.
        values_column (`str`, *optional*): keyword argument with each row's gold intermediate results, used when the
            call has it.
        stop_at_first_error (`bool`, *optional*, defaults to `True`): steps after a wrong one are wrong.
        name (`str`, *optional*, defaults to `"arithmetic_steps"`): `__name__`.

    Returns per completion `[(char_end, reward), ...]`, or `None` when it has no checkable step.
    """

    returns_step_rewards = True

    def __init__(
        self,
        separator: str = "\n",
        correct_reward: float = 1.0,
        incorrect_reward: float = 0.0,
        answer_column: str = "answer",
        values_column: str | None = None,
        stop_at_first_error: bool = True,
        name: str = "arithmetic_steps",
    ):
        if not isinstance(separator, str) or not separator:
            raise ValueError(f"separator must be a non-empty string, got {separator!r}")
        if float(correct_reward) <= float(incorrect_reward):
            raise ValueError(f"correct_reward ({correct_reward}) must exceed incorrect_reward ({incorrect_reward})")
        self.separator = separator
        self.correct_reward = float(correct_reward)
        self.incorrect_reward = float(incorrect_reward)
        self.answer_column = answer_column
        self.values_column = values_column
        self.stop_at_first_error = stop_at_first_error
        self.__name__ = name

    def check_steps(
        self, prompt: str, completion: str, answer: Any = None, values: Sequence[int] | None = None
    ) -> list[tuple[int, bool]]:
        """`(char_end, right)` for every checkable step of one completion."""
        allowed = {_number(n) for n in re.findall(_NUMBER, prompt)}
        allowed |= {v for word, v in _WORD_CONSTANTS.items() if re.search(rf"\b{word}\b", prompt, re.IGNORECASE)}
        gold = None if values is None else {int(v) for v in values}
        results: list[int] = []
        out: list[tuple[int, bool]] = []
        failed = False
        for start, end in step_spans(completion, self.separator):
            step = completion[start:end]
            equations = _EQUATION.findall(step)
            stated = extract_answer(step)
            if not equations and stated is None:
                continue
            right = True
            for a, op, b, c in equations:
                a, b, c = _number(a), _number(b), _number(c)
                right &= a in allowed and b in allowed and _holds(a, op, b, c) and (gold is None or c in gold)
                allowed.add(c)
                results.append(c)
            if stated is not None:
                expected = int(answer) if answer is not None else (results[-1] if results else None)
                right &= stated == expected
            failed |= not right
            out.append((end, right and not (failed and self.stop_at_first_error)))
        return out

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> list[list[tuple[int, float]] | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{self.__name__}: got {len(prompts)} prompts but {len(completions)} completions")
        columns = {}
        for key in (self.answer_column, self.values_column):
            if key is not None and key in kwargs:
                if len(kwargs[key]) != len(completions):
                    raise ValueError(
                        f"{self.__name__}: {len(kwargs[key])} values in {key!r} for {len(completions)} completions"
                    )
                columns[key] = kwargs[key]
        out: list[list[tuple[int, float]] | None] = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            answer = columns[self.answer_column][i] if self.answer_column in columns else None
            values = columns[self.values_column][i] if self.values_column in columns else None
            prompt = prompt if isinstance(prompt, str) else "\n".join(message_text([m]) for m in prompt)
            checked = self.check_steps(prompt, message_text(completion), answer, values)
            rewards = [(end, self.correct_reward if ok else self.incorrect_reward) for end, ok in checked]
            out.append(rewards or None)
        return out

    def __repr__(self) -> str:
        return f"ArithmeticStepReward(name={self.__name__!r}, separator={self.separator!r})"
