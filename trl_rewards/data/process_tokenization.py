"""Tokenizing stepwise rows for process reward models (PRMs): the token-level step layout, label positions.

A row `{"prompt": str, "completions": list[str], "labels": list[bool]}` becomes one token sequence with one label
per step. `[lead]` / `[trail]` are the special tokens the tokenizer puts around a single text (`<s>`, or `[CLS]` and
`[SEP]`); `SEP` is the step separator, `TAG` the step tag:

- `"classifier"` style: `[lead] prompt step_1 SEP step_2 SEP ... step_n SEP [trail]`; step k's label sits on the
  *last token of the SEP after it*, where a token-classification head reads it;
- `"lm"` style: `[lead] prompt step_1 TAG SEP ... step_n TAG SEP [trail]`; step k's label sits on *its TAG*, where
  the causal LM's logits of the good and bad tokens give P(step correct).

Labels are 1 (good step) and 0 (bad step) at those positions and `-100` everywhere else. The prompt, every step and
the separator are tokenized on their own, without special tokens, so a step never merges with its neighbours and
the positions are exact; [`ProcessRewardScorer`] encodes with the same function, so scores read the trained
positions.

Rows longer than `max_length` are never handled silently: they are counted and, by the caller's choice, truncated,
dropped, or reported as an error. Truncation cuts from the left, right after `[lead]`, and only at step boundaries:
the prompt's tokens go first, then whole leading steps (text, separator and label together), so a step whose label is
kept keeps all its text. A decoder reads each step with all the context before it, so the left is what to give up.
The labels of dropped steps go with them and are counted in the length report: in TRL's stepwise format every step is
labelled and each prefix of a solution is usually a row of its own, so those steps are still trained on there
(dropping the whole row instead lost a third of PRM800K at 512 tokens). A row whose last step alone does not fit is
dropped and counted apart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from datasets import Dataset

from ..step_format import IGNORE_INDEX, check_style
from .encoding import leading_special_count
from .length import RowLengthReport, apply_length_policy, check_too_long
from .stepwise import validate_stepwise_rows

logger = logging.getLogger(__name__)

_TRUNCATION = "lost left context (the prompt first, then whole oldest steps)"


@dataclass(frozen=True)
class StepFormat:
    """
    How steps are laid out in the token sequence.

    Parameters:
        style (`str`): `"classifier"` or `"lm"`.
        lead (`tuple[int, ...]`): special tokens before the prompt.
        trail (`tuple[int, ...]`): special tokens after the last step.
        step_end (`tuple[int, ...]`): ids appended after every step (the separator, or the tag then the separator).
        label_offset (`int`): index in `step_end` of the token that carries the step's label.
    """

    style: str
    lead: tuple[int, ...]
    trail: tuple[int, ...]
    step_end: tuple[int, ...]
    label_offset: int


def _special_wrapping(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ids = tokenizer("a")["input_ids"]
    special = set(tokenizer.all_special_ids)
    n_lead = leading_special_count(ids, special)
    n_trail = leading_special_count(ids[::-1], special)
    return tuple(ids[:n_lead]), tuple(ids[len(ids) - n_trail :]) if n_trail else ()


def single_token_id(tokenizer, token: str, name: str) -> int:
    """Id of `token`, which must be one token of `tokenizer` (a vocabulary entry or text encoding to one id)."""
    vocab = tokenizer.get_vocab()
    if token in vocab:
        return vocab[token]
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{name} {token!r} must be a single token of the tokenizer, but it encodes to {ids}")
    return ids[0]


def build_step_format(tokenizer, style: str, step_separator: str, step_tag: str | None = None) -> StepFormat:
    """
    Builds the [`StepFormat`] of a tokenizer.

    Args:
        tokenizer: the PRM's tokenizer (in `"lm"` style, `step_tag` must already be in its vocabulary).
        style (`str`): `"classifier"` or `"lm"`.
        step_separator (`str`): text after each step; must tokenize to at least one token in `"classifier"` style.
        step_tag (`str`, *optional*): `"lm"` style: the tag token.

    Returns:
        [`StepFormat`]
    """
    check_style(style)
    separator = tuple(tokenizer.encode(step_separator, add_special_tokens=False)) if step_separator else ()
    lead, trail = _special_wrapping(tokenizer)
    if style == "classifier":
        if not separator:
            raise ValueError(
                f"step_separator {step_separator!r} tokenizes to no token with {type(tokenizer).__name__}, so there "
                f"is no position to put a step label on; use a separator that survives tokenization (e.g. the "
                f"tokenizer's sep token {tokenizer.sep_token!r})"
            )
        return StepFormat(style, lead, trail, separator, len(separator) - 1)
    if not step_tag:
        raise ValueError("step_tag is required with model_style='lm'")
    if step_tag not in tokenizer.get_vocab():
        raise ValueError(f"step_tag {step_tag!r} is not in the tokenizer's vocabulary; add it (the trainer does)")
    return StepFormat(style, lead, trail, (tokenizer.convert_tokens_to_ids(step_tag), *separator), 0)


@dataclass
class EncodedSteps:
    """
    One tokenized row.

    Parameters:
        input_ids (`list[int]`): the whole sequence.
        label_positions (`list[int | None]`): index in `input_ids` of each step's label token, in step order (`None`
            for a step that truncation removed).
        context_start (`int`): index of the first token after the leading special tokens, where truncation cuts.
        step_starts (`list[int | None]`): index in `input_ids` of each step's first token (`None` for a removed step).
    """

    input_ids: list[int]
    label_positions: list[int | None]
    context_start: int
    step_starts: list[int | None]

    @property
    def n_dropped_steps(self) -> int:
        """Leading steps that truncation removed."""
        return sum(p is None for p in self.label_positions)

    def token_labels(self, labels: Sequence[bool], last_step_only: bool = False) -> list[int]:
        """Per-token labels: 1 / 0 at each kept step's label position (only the last with `last_step_only`), -100
        elsewhere; the labels of steps that truncation removed are left out."""
        if len(labels) != len(self.label_positions):
            raise ValueError(f"got {len(labels)} labels for {len(self.label_positions)} steps")
        token_labels = [IGNORE_INDEX] * len(self.input_ids)
        steps = range(len(labels) - 1, len(labels)) if last_step_only else range(len(labels))
        for k in steps:
            if self.label_positions[k] is not None:
                token_labels[self.label_positions[k]] = int(bool(labels[k]))
        return token_labels

    def fit(self, max_length: int | None) -> EncodedSteps | None:
        """
        The row shortened to `max_length` by cutting from the left, right after the leading special tokens, at step
        boundaries only: as many prompt tokens as needed first, then the fewest whole leading steps (the prompt
        entirely gone). Every kept step keeps all its tokens. `None` when even the last step alone does not fit.
        """
        excess = 0 if max_length is None else len(self.input_ids) - max_length
        if excess <= 0:
            return self
        start = self.context_start
        if self.step_starts[0] - start >= excess:
            first, cut = 0, excess
        else:
            first = next((k for k in range(1, len(self.step_starts)) if self.step_starts[k] - start >= excess), None)
            if first is None:
                return None
            cut = self.step_starts[first] - start
        dropped = [None] * first
        return EncodedSteps(
            self.input_ids[:start] + self.input_ids[start + cut :],
            dropped + [p - cut for p in self.label_positions[first:]],
            start,
            dropped + [p - cut for p in self.step_starts[first:]],
        )

    def min_length(self) -> int:
        """Length of the row cut down to its last step (the shortest `fit` can make it)."""
        return len(self.input_ids) - (self.step_starts[-1] - self.context_start)


def encode_steps(tokenizer, fmt: StepFormat, prompt: str, steps: Sequence[str]) -> EncodedSteps:
    """
    Tokenizes one solution in the layout of `fmt`.

    Args:
        tokenizer: the PRM's tokenizer.
        fmt ([`StepFormat`]): from [`build_step_format`].
        prompt (`str`): the problem.
        steps (`Sequence[str]`): the solution's steps, at least one.

    Returns:
        [`EncodedSteps`]
    """
    if not steps:
        raise ValueError("a solution needs at least one step")
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
    input_ids = [*fmt.lead, *prompt_ids]
    positions, starts = [], []
    for step in steps:
        starts.append(len(input_ids))
        input_ids += tokenizer.encode(step, add_special_tokens=False)
        positions.append(len(input_ids) + fmt.label_offset)
        input_ids += fmt.step_end
    input_ids += fmt.trail
    return EncodedSteps(input_ids, positions, len(fmt.lead), starts)


def tokenize_stepwise(
    dataset: Dataset,
    tokenizer,
    fmt: StepFormat,
    max_length: int | None,
    too_long: str = "truncate",
    last_step_only: bool = False,
    num_proc: int | None = None,
    name: str = "dataset",
) -> tuple[Dataset, RowLengthReport]:
    """
    Validates stepwise rows (row-numbered errors) and tokenizes them into `input_ids`, per-token `labels` and
    `length`.

    Args:
        dataset ([`~datasets.Dataset`]): rows `{"prompt", "completions", "labels"}`.
        tokenizer: the PRM's tokenizer.
        fmt ([`StepFormat`]): from [`build_step_format`].
        max_length (`int` or `None`): longest sequence kept as is.
        too_long (`str`): `"truncate"`, `"drop"` or `"error"` (see the module docstring); with `"truncate"`, the
            labels of the leading steps cut away are counted in the report's `n_dropped_labels`.
        last_step_only (`bool`): label only the last step of each row.
        num_proc (`int`, *optional*): processes for `Dataset.map`.
        name (`str`): dataset name used in messages.

    Returns:
        `tuple[Dataset, RowLengthReport]`: the tokenized rows (other columns removed) and what happened to
        over-long rows (also logged).
    """
    check_too_long(too_long)
    validate_stepwise_rows(dataset, source=name)

    def encode(example):
        encoded = encode_steps(tokenizer, fmt, example["prompt"], example["completions"])
        n_full = len(encoded.input_ids)
        fitted = encoded.fit(max_length) if too_long == "truncate" else encoded
        if fitted is None:
            return {"input_ids": [], "token_labels": [], "length": 0, "full_length": n_full, "dropped_labels": 0}
        return {
            "input_ids": fitted.input_ids,
            "token_labels": fitted.token_labels(example["labels"], last_step_only),
            "length": len(fitted.input_ids),
            "full_length": n_full,
            # with last_step_only the removed steps were context, not labels
            "dropped_labels": 0 if last_step_only else fitted.n_dropped_steps,
        }

    # Written as "token_labels" then renamed: a map output named like an input column keeps that column's feature
    # type, and the input "labels" are booleans (-100 would become True).
    tokenized = dataset.map(encode, remove_columns=dataset.column_names, num_proc=num_proc, desc=f"Tokenizing {name}")
    tokenized = tokenized.rename_column("token_labels", "labels")
    return apply_length_policy(tokenized, len(dataset), max_length, too_long, name, truncation=_TRUNCATION)
