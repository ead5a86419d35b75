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
from numbers import Real
from typing import Any

from datasets import Dataset

from .encoding import encode_chat, encode_text
from .length import RowLengthReport, apply_length_policy, check_too_long, truncate_ids

logger = logging.getLogger(__name__)

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


def encode_pair_texts(tokenizer, example: dict[str, Any], fmt: str) -> tuple[list[int], list[int]]:
    """Token ids of the chosen and rejected sequences of one row, prompt included."""
    if fmt == PRETOKENIZED:
        return list(example["chosen_ids"]), list(example["rejected_ids"])
    prompt = example.get("prompt")
    if fmt == CONVERSATIONAL:
        prefix = list(prompt) if prompt else []
        return encode_chat(tokenizer, prefix + example["chosen"]), encode_chat(tokenizer, prefix + example["rejected"])
    prefix = prompt or ""
    return encode_text(tokenizer, prefix + example["chosen"]), encode_text(tokenizer, prefix + example["rejected"])


def tokenize_preferences(
    dataset: Dataset,
    tokenizer,
    max_length: int | None,
    too_long: str = "truncate",
    num_proc: int | None = None,
    name: str = "dataset",
) -> tuple[Dataset, RowLengthReport]:
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
        `tuple[Dataset, RowLengthReport]`: the tokenized dataset (`length` = longer side, for length-grouped batching)
        and what happened to over-long pairs (also logged).
    """
    check_too_long(too_long)
    fmt = validate_preference_rows(dataset)
    keep = [c for c in ("margin", "label") if c in dataset.column_names]
    special = set(tokenizer.all_special_ids)

    def encode(example):
        chosen_ids, rejected_ids = encode_pair_texts(tokenizer, example, fmt)
        full_length = max(len(chosen_ids), len(rejected_ids))
        if max_length is not None and full_length > max_length and too_long == "truncate":
            chosen_ids = truncate_ids(chosen_ids, max_length, special)
            rejected_ids = truncate_ids(rejected_ids, max_length, special)
        length = max(len(chosen_ids), len(rejected_ids))
        return {"chosen_ids": chosen_ids, "rejected_ids": rejected_ids, "length": length, "full_length": full_length}

    drop_cols = [c for c in dataset.column_names if c not in keep]
    tokenized = dataset.map(encode, remove_columns=drop_cols, num_proc=num_proc, desc=f"Tokenizing {name}")
    return apply_length_policy(
        tokenized,
        len(dataset),
        max_length,
        too_long,
        name,
        truncation="were truncated (leading special tokens and the end kept)",
        unit="pairs",
    )
