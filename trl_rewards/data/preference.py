"""Preference pairs for Bradley-Terry reward models: formats, validation, tokenization and collation.

Accepted formats (TRL's, see https://huggingface.co/docs/trl/dataset_formats):

- implicit prompt: `{"chosen": str, "rejected": str}` (the prompt is the shared prefix, e.g. HH-RLHF);
- explicit prompt: `{"prompt": str, "chosen": str, "rejected": str}`;
- conversational: the same keys holding lists of `{"role", "content"}` messages;
- pre-tokenized: `{"chosen_ids": list[int], "rejected_ids": list[int]}`.

Any of them may carry an optional per-row `margin` (float, chosen should win by at least this much) and an optional
soft `label` (probability in `[0, 1]` that `chosen` is better, e.g. annotator agreement).

Sequences longer than `max_length` are never handled silently: `tokenize_preferences` counts them and, by the
caller's choice, truncates them (keeping the leading special tokens and the *end* of the text, where the response and
the token the reward is read from live), drops them, or raises.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

from datasets import Dataset

logger = logging.getLogger(__name__)

TOO_LONG_POLICIES = ("truncate", "drop", "error")
PRETOKENIZED = "pretokenized"
CONVERSATIONAL = "conversational"
EXPLICIT_PROMPT = "explicit_prompt"
IMPLICIT_PROMPT = "implicit_prompt"


def detect_preference_format(column_names: list[str], first_row: dict[str, Any] | None = None) -> str:
    """Returns one of `"pretokenized"`, `"conversational"`, `"explicit_prompt"`, `"implicit_prompt"`."""
    columns = set(column_names)
    if {"chosen_ids", "rejected_ids"} <= columns:
        return PRETOKENIZED
    for name in ("chosen", "rejected"):
        if name not in columns:
            raise ValueError(
                f'preference data needs a "{name}" column (or "chosen_ids"/"rejected_ids" when pre-tokenized); '
                f"columns are {sorted(columns)}"
            )
    if first_row is not None and isinstance(first_row.get("chosen"), list):
        return CONVERSATIONAL
    return EXPLICIT_PROMPT if "prompt" in columns else IMPLICIT_PROMPT


def _check_messages(row: int, name: str, value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise ValueError(f'row {row}: "{name}" must be a non-empty list of messages, got {type(value).__name__}')
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f'row {row}: "{name}"[{i}] must be a message dict with a string "role"')
        if not isinstance(message.get("content"), str):
            raise ValueError(f'row {row}: "{name}"[{i}]["content"] must be a string')


def _check_text(row: int, name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f'row {row}: "{name}" must be a string, got {type(value).__name__}')
    if not value.strip():
        raise ValueError(f'row {row}: "{name}" is empty')


def _check_ids(row: int, name: str, value: Any) -> None:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f'row {row}: "{name}" must be a non-empty list of token ids')
    if not all(isinstance(token, int) and not isinstance(token, bool) for token in value):
        raise ValueError(f'row {row}: "{name}" must contain only integer token ids')


def _check_number(row: int, name: str, value: Any, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f'row {row}: "{name}" must be a finite number, got {value!r}')
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f'row {row}: "{name}" must lie in [{low}, {high}], got {value!r}')


def validate_preference_rows(dataset: Dataset, batch_size: int = 1000) -> str:
    """
    Checks every row of a preference dataset before any model is loaded.

    Raises `ValueError` naming the row and the field for: a missing column, a missing/empty/non-string text field (or
    malformed messages in the conversational format), identical `chosen` and `rejected`, a non-finite `margin`, or a
    `label` outside `[0, 1]`.

    Args:
        dataset ([`~datasets.Dataset`]): the preference rows.
        batch_size (`int`): rows read at a time.

    Returns:
        `str`: the detected format.
    """
    if len(dataset) == 0:
        raise ValueError("preference dataset is empty")
    fmt = detect_preference_format(dataset.column_names, dataset[0])
    if fmt == PRETOKENIZED:
        fields, check = ("chosen_ids", "rejected_ids"), _check_ids
    elif fmt == CONVERSATIONAL:
        fields, check = ("chosen", "rejected"), _check_messages
    else:
        fields, check = ("chosen", "rejected"), _check_text
    has_prompt = "prompt" in dataset.column_names and fmt != PRETOKENIZED
    start = 0
    for batch in dataset.iter(batch_size=batch_size):
        for offset in range(len(batch[fields[0]])):
            row = start + offset
            for name in fields:
                value = batch[name][offset]
                if value is None:
                    raise ValueError(f'row {row}: "{name}" is missing (None)')
                check(row, name, value)
            if batch[fields[0]][offset] == batch[fields[1]][offset]:
                raise ValueError(f'row {row}: "{fields[0]}" and "{fields[1]}" are identical')
            if has_prompt:
                prompt = batch["prompt"][offset]
                if prompt is None:
                    raise ValueError(f'row {row}: "prompt" is missing (None)')
                (_check_messages if fmt == CONVERSATIONAL else _check_text)(row, "prompt", prompt)
            if "margin" in batch:
                _check_number(row, "margin", batch["margin"][offset])
            if "label" in batch:
                _check_number(row, "label", batch["label"][offset], 0.0, 1.0)
        start += len(batch[fields[0]])
    return fmt


@dataclass
class LengthReport:
    """What `tokenize_preferences` did with sequences longer than `max_length`."""

    n_rows: int
    n_too_long: int
    max_length: int | None
    action: str
    n_kept: int
    longest: int

    def message(self, name: str = "dataset") -> str:
        if self.n_too_long == 0:
            return (
                f"{name}: {self.n_rows} pairs, none longer than max_length={self.max_length} (longest {self.longest})"
            )
        done = {"truncate": "truncated (start and end kept)", "drop": "dropped"}[self.action]
        return (
            f"{name}: {self.n_too_long} of {self.n_rows} pairs ({100 * self.n_too_long / self.n_rows:.1f}%) exceed "
            f"max_length={self.max_length} (longest {self.longest} tokens) and were {done}; {self.n_kept} pairs kept"
        )


def _leading_special(ids: list[int], special: set[int]) -> int:
    n = 0
    while n < len(ids) and ids[n] in special:
        n += 1
    return n


def truncate_ids(ids: list[int], max_length: int, special_ids: set[int]) -> list[int]:
    """Keeps the leading special tokens (`<s>`, `[CLS]`) and the last tokens up to `max_length`: the reward is read
    at the end of a decoder's sequence, and an encoder's `[CLS]` must stay at position 0."""
    if len(ids) <= max_length:
        return ids
    keep_head = min(_leading_special(ids, special_ids), max_length - 1)
    return ids[:keep_head] + ids[len(ids) - (max_length - keep_head) :]


def _text_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text)["input_ids"]
    # A decoder tokenizer adds only `<s>`: close the sequence with eos so the reward is read at a fixed token.
    # An encoder tokenizer already ends with `[SEP]` (it usually has no eos at all).
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] not in tokenizer.all_special_ids):
        ids = ids + [tokenizer.eos_token_id]
    return ids


def _chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_pair_texts(tokenizer, example: dict[str, Any], fmt: str) -> tuple[list[int], list[int]]:
    """Token ids of the chosen and rejected sequences of one row, prompt included."""
    if fmt == PRETOKENIZED:
        return list(example["chosen_ids"]), list(example["rejected_ids"])
    prompt = example.get("prompt")
    if fmt == CONVERSATIONAL:
        prefix = list(prompt) if prompt else []
        return _chat_ids(tokenizer, prefix + example["chosen"]), _chat_ids(tokenizer, prefix + example["rejected"])
    prefix = prompt or ""
    return _text_ids(tokenizer, prefix + example["chosen"]), _text_ids(tokenizer, prefix + example["rejected"])


def tokenize_preferences(
    dataset: Dataset,
    tokenizer,
    max_length: int | None,
    too_long: str = "truncate",
    num_proc: int | None = None,
    name: str = "dataset",
) -> tuple[Dataset, LengthReport]:
    """
    Validates and tokenizes a preference dataset into `chosen_ids`, `rejected_ids` (+ `margin`, `label`, `length`).

    Args:
        dataset ([`~datasets.Dataset`]): preference rows in any accepted format.
        tokenizer: the reward model's tokenizer.
        max_length (`int` or `None`): longest sequence kept as is.
        too_long (`str`): `"truncate"`, `"drop"` or `"error"` for pairs where either side exceeds `max_length`.
        num_proc (`int`, *optional*): processes for `Dataset.map`.
        name (`str`): dataset name used in messages.

    Returns:
        `tuple[Dataset, LengthReport]`: the tokenized dataset (`length` = longer side, for length-grouped batching)
        and what happened to over-long pairs (also logged).
    """
    if too_long not in TOO_LONG_POLICIES:
        raise ValueError(f"too_long must be one of {TOO_LONG_POLICIES}, got {too_long!r}")
    fmt = validate_preference_rows(dataset)
    keep = [c for c in ("margin", "label") if c in dataset.column_names]

    def encode(example):
        chosen_ids, rejected_ids = encode_pair_texts(tokenizer, example, fmt)
        return {"chosen_ids": chosen_ids, "rejected_ids": rejected_ids}

    drop_cols = [c for c in dataset.column_names if c not in keep]
    tokenized = dataset.map(encode, remove_columns=drop_cols, num_proc=num_proc, desc=f"Tokenizing {name}")
    lengths = [max(len(c), len(r)) for c, r in zip(tokenized["chosen_ids"], tokenized["rejected_ids"], strict=True)]
    too_long_rows = [i for i, n in enumerate(lengths) if max_length is not None and n > max_length]
    if too_long_rows and too_long == "error":
        row = too_long_rows[0]
        raise ValueError(
            f"{name}: {len(too_long_rows)} pairs exceed max_length={max_length}; first is row {row} "
            f"({lengths[row]} tokens). Set too_long='truncate' or 'drop', or raise max_length."
        )
    if too_long_rows and too_long == "drop":
        if len(too_long_rows) == len(tokenized):
            raise ValueError(
                f"{name}: all {len(tokenized)} pairs exceed max_length={max_length} (shortest longer side "
                f"{min(lengths)} tokens), nothing is left after dropping them; raise max_length or truncate"
            )
        bad = set(too_long_rows)
        tokenized = tokenized.select([i for i in range(len(tokenized)) if i not in bad])
    elif too_long_rows:
        special = set(tokenizer.all_special_ids)

        def cut(example):
            return {
                "chosen_ids": truncate_ids(example["chosen_ids"], max_length, special),
                "rejected_ids": truncate_ids(example["rejected_ids"], max_length, special),
            }

        tokenized = tokenized.map(cut, num_proc=num_proc, desc=f"Truncating {name}")
    tokenized = tokenized.map(
        lambda ex: {"length": max(len(ex["chosen_ids"]), len(ex["rejected_ids"]))}, num_proc=num_proc
    )
    report = LengthReport(
        n_rows=len(dataset),
        n_too_long=len(too_long_rows),
        max_length=max_length,
        action=too_long,
        n_kept=len(tokenized),
        longest=max(lengths),
    )
    (logger.warning if report.n_too_long else logger.info)(report.message(name))
    return tokenized, report
