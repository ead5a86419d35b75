"""Rule rewards in TRL's callable contract: the answer check (final answer equal to the dataset's `answer`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from ..data.outcome import extract_numeric_answer
from ..data.synthetic import extract_answer
from .base import message_text

_BOXED = re.compile(r"\\boxed\s*\{")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+")


def last_boxed(text: str) -> tuple[str, int] | None:
    """Content of the last `\\boxed{...}` (nested braces matched) and the index just after it, or `None`."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth = 1
        for i in range(match.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[match.end() : i].strip(), i + 1
    return None


def extract_final_answer(text: str) -> str | int | None:
    """
    The final answer of a completion: the last of `#### N` (GSM8K), `\\boxed{...}` (MATH), `The answer is N` (also
    `The final answer is: N`, an `A: N` line and a `# Answer` line, as [`extract_numeric_answer`] reads them).

    Args:
        text (`str`): the completion.

    Returns:
        `str`, `int` or `None`: a number as a normalized string (`"1,000.0"` gives `"1000"`), the text of a boxed
        non-number (`"\\frac{1}{2}"`), or `None` when there is no answer.
    """
    boxed = last_boxed(text)
    after = text if boxed is None else text[boxed[1] :]
    marked = extract_numeric_answer(after)
    if marked is None:
        # The demo's phrasing with markdown bold or in upper case ("The answer is **5**"), which the markers skip.
        marked = extract_answer(after)
    return boxed[0] if marked is None and boxed is not None else marked


def _canonical_answer(value: Any, where: str) -> tuple[str, Any]:
    """
    `("number", Decimal)` for a number or a string that spells one (`"1,000"`, `1000` and `"1000.0"` are equal, and
    `$5` is 5), else `("text", stripped string)`. The kind is part of the value, so a number never equals a string
    that is not a number, and a bool is refused: `True == 1` would make a gold `True` match the answer `"1"`.
    """
    if isinstance(value, bool):
        raise ValueError(
            f"{where} is the bool {value}; answers are compared as numbers or text, and True would equal 1. Store "
            "the gold answers as strings (e.g. 'yes' / 'no') or numbers, with an extractor returning the same kind"
        )
    if isinstance(value, int):
        return "number", Decimal(value)
    if isinstance(value, float):
        return "number", Decimal(repr(value))
    text = str(value).strip()
    number = text.removeprefix("\\$").removeprefix("$").strip()
    if _PLAIN_NUMBER.fullmatch(number):
        return "number", Decimal(number.replace(",", "").rstrip("."))
    return "text", text


class AnswerCorrectnessReward:
    r"""
    Rule-based reward: does the completion's final answer equal the row's gold answer?

    The gold answers come from a dataset column that TRL passes to reward functions as a keyword argument (one value
    per completion). A row whose gold answer is `None` gets `None` (no reward); a completion without a parsable answer
    counts as wrong.

    Args:
        extractor (`Callable[[str], Any]`, *optional*):
            Maps a completion's text to its answer, or `None` when it has none. Defaults to [`extract_final_answer`]
            (the last `#### N`, `\\boxed{...}` or `"The answer is N"`). Must be picklable (a module-level function
            or a callable class) for the reward to be.
        answer_column (`str`, *optional*, defaults to `"answer"`):
            The keyword argument (dataset column) holding the gold answers.
        correct_reward (`float`, *optional*, defaults to `1.0`):
            Reward of a correct answer.
        incorrect_reward (`float`, *optional*, defaults to `0.0`):
            Reward of a wrong or missing answer.
        name (`str`, *optional*, defaults to `"answer_correctness"`):
            `__name__`.

    Answers compare as numbers when both are or spell numbers (`"1,000"`, `1000` and `"1000.0"` are equal), else as
    stripped strings; a number never equals a non-numeric string. A `bool` gold answer (or extracted answer) raises a
    `ValueError` naming its index, since `True == 1` would make it equal to the answer `1`.
    """

    def __init__(
        self,
        extractor: Callable[[str], Any] | None = None,
        answer_column: str = "answer",
        correct_reward: float = 1.0,
        incorrect_reward: float = 0.0,
        name: str = "answer_correctness",
    ):
        if extractor is not None and not callable(extractor):
            raise TypeError(f"extractor must be callable, got {type(extractor).__name__}")
        if not isinstance(answer_column, str) or not answer_column:
            raise ValueError(f"answer_column must be a non-empty string, got {answer_column!r}")
        if answer_column in ("prompts", "completions", "completion_ids"):
            raise ValueError(f"answer_column={answer_column!r} clashes with an argument of the reward-function call")
        self.extractor = extractor
        self.answer_column = answer_column
        self.correct_reward = float(correct_reward)
        self.incorrect_reward = float(incorrect_reward)
        self.__name__ = name

    def _extract(self, text: str) -> Any:
        return (self.extractor or extract_final_answer)(text)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> list[float | None]:
        if self.answer_column not in kwargs:
            raise KeyError(
                f"{self.__name__}: no {self.answer_column!r} column among the keyword arguments "
                f"({sorted(k for k in kwargs if k not in ('log_metric', 'log_extra', 'trainer_state'))}); "
                "add it to the dataset or set answer_column="
            )
        gold = kwargs[self.answer_column]
        if len(gold) != len(completions):
            raise ValueError(
                f"{self.__name__}: {len(gold)} values in {self.answer_column!r} for {len(completions)} completions"
            )
        rewards: list[float | None] = []
        for i, (completion, answer) in enumerate(zip(completions, gold, strict=True)):
            if answer is None:
                rewards.append(None)
                continue
            expected = _canonical_answer(answer, f"{self.__name__}: {self.answer_column}[{i}]")
            predicted = self._extract(message_text(completion))
            where = f"{self.__name__}: the answer extracted from completion {i}"
            correct = predicted is not None and _canonical_answer(predicted, where) == expected
            rewards.append(self.correct_reward if correct else self.incorrect_reward)
        return rewards

    def __repr__(self) -> str:
        extractor = getattr(self.extractor or extract_final_answer, "__name__", type(self.extractor).__name__)
        return (
            f"AnswerCorrectnessReward(name={self.__name__!r}, answer_column={self.answer_column!r}, "
            f"extractor={extractor})"
        )
