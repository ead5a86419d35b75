"""Rule rewards in TRL's callable contract: the answer check (final answer equal to the dataset's `answer`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..data.synthetic import extract_answer
from .base import message_text


def _canonical_answer(value: Any) -> Any:
    """Numbers compare as numbers (`"1,000"`, `1000` and `1000.0` are equal); other strings stripped."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text.replace(",", "").lstrip("$"))
    except ValueError:
        return text


class AnswerCorrectnessReward:
    r"""
    Rule-based reward: does the completion's final answer equal the row's gold answer?

    The gold answers come from a dataset column that TRL passes to reward functions as a keyword argument (one value
    per completion). A row whose gold answer is `None` gets `None` (no reward); a completion without a parsable answer
    counts as wrong.

    Args:
        extractor (`Callable[[str], Any]`, *optional*):
            Maps a completion's text to its answer, or `None` when it has none. Defaults to
            [`~trl_rewards.data.synthetic.extract_answer`] (the integer of the last `"The answer is N"`). Must be
            picklable (a module-level function or a callable class) for the reward to be.
        answer_column (`str`, *optional*, defaults to `"answer"`):
            The keyword argument (dataset column) holding the gold answers.
        correct_reward (`float`, *optional*, defaults to `1.0`):
            Reward of a correct answer.
        incorrect_reward (`float`, *optional*, defaults to `0.0`):
            Reward of a wrong or missing answer.
        name (`str`, *optional*, defaults to `"answer_correctness"`):
            `__name__`.

    Answers compare as numbers when both parse as numbers (`"1,000"` equals `1000`), else as stripped strings.
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
        if self.extractor is not None:
            return self.extractor(text)
        return extract_answer(text)

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
        for completion, answer in zip(completions, gold, strict=True):
            if answer is None:
                rewards.append(None)
                continue
            predicted = self._extract(message_text(completion))
            correct = predicted is not None and _canonical_answer(predicted) == _canonical_answer(answer)
            rewards.append(self.correct_reward if correct else self.incorrect_reward)
        return rewards

    def __repr__(self) -> str:
        extractor = getattr(self.extractor, "__name__", "extract_answer")
        return (
            f"AnswerCorrectnessReward(name={self.__name__!r}, answer_column={self.answer_column!r}, "
            f"extractor={extractor})"
        )
