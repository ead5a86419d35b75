"""Preference pairs for Bradley-Terry reward models: formats, validation, tokenization and collation.

Accepted formats (TRL's, see https://huggingface.co/docs/trl/dataset_formats), as a `Dataset` or a streaming
`IterableDataset`:

- implicit prompt: `{"chosen": str, "rejected": str}` (the prompt is the shared prefix, e.g. HH-RLHF);
- explicit prompt: `{"prompt": str, "chosen": str, "rejected": str}`;
- conversational: the same keys holding lists of `{"role", "content"}` messages; an assistant message may carry
  `tool_calls` instead of a `content` (which is then `None`), and optional per-row columns are passed to the chat
  template as TRL does: `tools` (a list of tool schemas, or its JSON text) and `chat_template_kwargs` (a dict, e.g.
  `{"enable_thinking": False}`); both are ignored by the text formats, which use no template;
- pre-tokenized: `{"chosen_ids": list[int], "rejected_ids": list[int]}` (TRL's legacy `chosen_input_ids` /
  `rejected_input_ids` are renamed to these, with one `FutureWarning`, as TRL does).

Any of them may carry an optional per-row `margin` (float, chosen should win by at least this much) and an optional
soft `label` (probability in `[0, 1]` that `chosen` is better, e.g. annotator agreement).

Stricter than TRL, on purpose (each is a `ValueError` naming the row and the field): an empty or whitespace-only text,
a `chosen` identical to its `rejected` (the pair carries no signal and pulls the loss towards `log 2`), a `label`
outside `[0, 1]` or a non-finite `margin`/`label`, and malformed messages.

Sequences longer than `max_length` are never handled silently: `tokenize_preferences` counts them and, by the
caller's choice, truncates them (keeping the leading special tokens and the *end* of the text, where the response and
the token the reward is read from live), drops them, or raises. A stream is validated, tokenized and length-checked
row by row as it is read; its length report counts the pairs read so far (see `data.streaming`).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from numbers import Real
from typing import Any

from datasets import Dataset, IterableDataset

from .encoding import encode_chat, encode_text
from .length import RowLengthReport, apply_length_policy, check_too_long, truncate_ids
from .streaming import column_names, first_row, tokenize_stream

logger = logging.getLogger(__name__)

PRETOKENIZED = "pretokenized"
CONVERSATIONAL = "conversational"
EXPLICIT_PROMPT = "explicit_prompt"
IMPLICIT_PROMPT = "implicit_prompt"
LEGACY_ID_COLUMNS = {"chosen_input_ids": "chosen_ids", "rejected_input_ids": "rejected_ids"}
# apply_chat_template arguments that encode_chat sets itself; a row may not override them
_RESERVED_TEMPLATE_KWARGS = ("conversation", "tokenize", "return_dict", "return_tensors")
_TRUNCATION = "were truncated (leading special tokens and the end kept; a pair the cut made identical is dropped)"
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")


def _id_fields(columns) -> tuple[str, str] | None:
    columns = set(columns)
    for fields in (("chosen_ids", "rejected_ids"), tuple(LEGACY_ID_COLUMNS)):
        if set(fields) <= columns:
            return fields
    return None


def detect_preference_format(column_names: list[str], first_row: dict[str, Any] | None = None) -> str:
    """Returns one of `"pretokenized"`, `"conversational"`, `"explicit_prompt"`, `"implicit_prompt"`."""
    columns = set(column_names)
    if _id_fields(columns):
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


def rename_legacy_columns(dataset):
    """TRL's legacy `chosen_input_ids`/`rejected_input_ids` renamed to `chosen_ids`/`rejected_ids`, with TRL's
    `FutureWarning` (once per dataset); `dataset` itself when it has none of them or already the new names."""
    columns = column_names(dataset)
    if _id_fields(columns) != tuple(LEGACY_ID_COLUMNS):
        return dataset
    warnings.warn(
        "Detected legacy dataset columns `chosen_input_ids`/`rejected_input_ids`; they are deprecated and will not be "
        "supported in v1. Please migrate to `chosen_ids`/`rejected_ids`.",
        FutureWarning,
        stacklevel=3,
    )
    return dataset.rename_columns(LEGACY_ID_COLUMNS)


def _has_tool_calls(message: Mapping) -> bool:
    calls = message.get("tool_calls")
    return isinstance(calls, list) and len(calls) > 0 and all(isinstance(call, Mapping) for call in calls)


def _check_messages(row: int, name: str, value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise ValueError(f'row {row}: "{name}" must be a non-empty list of messages, got {type(value).__name__}')
    for i, message in enumerate(value):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ValueError(f'row {row}: "{name}"[{i}] must be a message dict with a string "role"')
        if message["role"] not in CHAT_ROLES:  # a chat template renders an unknown role verbatim, or drops it
            raise ValueError(
                f'row {row}: "{name}"[{i}]["role"] is {message["role"]!r}; chat roles are {list(CHAT_ROLES)}'
            )
        content = message.get("content")
        if not isinstance(content, str) and not (content is None and _has_tool_calls(message)):
            raise ValueError(
                f'row {row}: "{name}"[{i}]["content"] must be a string (or None in a message with a non-empty '
                f'"tool_calls" list), got {type(content).__name__}'
            )


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


def chat_template_kwargs(example: Mapping[str, Any], row: int | None = None) -> dict[str, Any]:
    """
    What a conversational row passes to the chat template, as TRL does: `tools` (its `tools` column, a list of tool
    schemas or its JSON text; `None` if absent) and the entries of its `chat_template_kwargs` dict (absent or `None`:
    none; a `tools` entry there wins, as in TRL). A malformed value is a `ValueError` naming the row and the field.
    """
    where = "" if row is None else f"row {row}: "
    tools = example.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as error:
            raise ValueError(f'{where}"tools" is not valid JSON: {error}') from None
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, Mapping) for t in tools)):
        raise ValueError(f'{where}"tools" must be a list of tool schemas (dicts) or its JSON text, got {tools!r:.80}')
    kwargs = example.get("chat_template_kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f'{where}"chat_template_kwargs" must be a dict, got {type(kwargs).__name__}')
    reserved = sorted(set(kwargs) & set(_RESERVED_TEMPLATE_KWARGS))
    if reserved:
        raise ValueError(f'{where}"chat_template_kwargs" may not set {reserved} (the tokenization sets them)')
    return {"tools": tools, **kwargs}


def check_preference_row(row: int, example: Mapping[str, Any], fmt: str) -> None:
    """Checks one row in format `fmt` (see `validate_preference_rows`); errors name `row` and the field."""
    if fmt == PRETOKENIZED:
        fields, check = _id_fields(example), _check_ids
    else:
        fields, check = ("chosen", "rejected"), (_check_messages if fmt == CONVERSATIONAL else _check_text)
    for name in fields:
        if example.get(name) is None:
            raise ValueError(f'row {row}: "{name}" is missing (None)')
        check(row, name, example[name])
    if example[fields[0]] == example[fields[1]]:
        raise ValueError(f'row {row}: "{fields[0]}" and "{fields[1]}" are identical')
    if "prompt" in example and fmt != PRETOKENIZED:
        if example["prompt"] is None:
            raise ValueError(f'row {row}: "prompt" is missing (None)')
        (_check_messages if fmt == CONVERSATIONAL else _check_text)(row, "prompt", example["prompt"])
    if "margin" in example:
        _check_number(row, "margin", example["margin"])
    if "label" in example:
        _check_number(row, "label", example["label"], 0.0, 1.0)
    if fmt == CONVERSATIONAL:
        chat_template_kwargs(example, row)


def validate_preference_rows(dataset: Dataset, batch_size: int = 1000) -> str:
    """
    Checks every row of a preference dataset before any model is loaded.

    Raises `ValueError` naming the row and the field for: a missing column, a missing/empty/non-string text field (or
    malformed messages, `tools` or `chat_template_kwargs` in the conversational format), identical `chosen` and
    `rejected`, a non-finite `margin`, or a `label` outside `[0, 1]`. A stream is checked row by row as it is read
    instead (`tokenize_preferences`).

    Args:
        dataset ([`~datasets.Dataset`]): the preference rows.
        batch_size (`int`): rows read at a time.

    Returns:
        `str`: the detected format.
    """
    if len(dataset) == 0:
        raise ValueError("preference dataset is empty")
    fmt = detect_preference_format(dataset.column_names, dataset[0])
    start = 0
    for batch in dataset.iter(batch_size=batch_size):
        n = len(next(iter(batch.values())))
        for offset in range(n):
            check_preference_row(start + offset, {key: values[offset] for key, values in batch.items()}, fmt)
        start += n
    return fmt


def encode_pair_texts(tokenizer, example: dict[str, Any], fmt: str) -> tuple[list[int], list[int]]:
    """Token ids of the chosen and rejected sequences of one row, prompt included (a conversational row's `tools` and
    `chat_template_kwargs` passed to the chat template)."""
    if fmt == PRETOKENIZED:
        chosen, rejected = _id_fields(example)
        return list(example[chosen]), list(example[rejected])
    prompt = example.get("prompt")
    if fmt == CONVERSATIONAL:
        prefix, kwargs = (list(prompt) if prompt else []), chat_template_kwargs(example)
        return tuple(encode_chat(tokenizer, prefix + example[side], **kwargs) for side in ("chosen", "rejected"))
    prefix = prompt or ""
    return encode_text(tokenizer, prefix + example["chosen"]), encode_text(tokenizer, prefix + example["rejected"])


def tokenize_preferences(
    dataset: Dataset | IterableDataset,
    tokenizer,
    max_length: int | None,
    too_long: str = "truncate",
    num_proc: int | None = None,
    name: str = "dataset",
) -> tuple[Dataset | IterableDataset, RowLengthReport]:
    """
    Validates and tokenizes a preference dataset into `chosen_ids`, `rejected_ids` (+ `margin`, `label`, `length`).

    Args:
        dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]): preference rows in any accepted format. A
            stream is validated and tokenized lazily, row by row as it is read (`data.streaming`).
        tokenizer: the reward model's tokenizer.
        max_length (`int` or `None`): longest sequence kept as is.
        too_long (`str`): `"truncate"`, `"drop"` or `"error"` for pairs where either side exceeds `max_length`.
        num_proc (`int`, *optional*): processes for `Dataset.map` (not used for a stream).
        name (`str`): dataset name used in messages.

    Returns:
        `tuple[Dataset | IterableDataset, RowLengthReport]`: the tokenized rows (`length` = longer side, for
        length-grouped batching) and what happened to over-long pairs (logged; for a stream, a
        [`StreamLengthReport`] counting the pairs read so far).
    """
    check_too_long(too_long)
    dataset = rename_legacy_columns(dataset)
    streaming = isinstance(dataset, IterableDataset)
    if streaming:
        columns = column_names(dataset)
        fmt = detect_preference_format(columns, first_row(dataset, name))
    else:
        columns, fmt = dataset.column_names, validate_preference_rows(dataset)
    special = set(tokenizer.all_special_ids)

    def check_vocab(row: int, example) -> None:
        # Ids given by the user: an id past the embedding table fails deep inside the forward as an IndexError.
        for side in _id_fields(example):
            bad = [t for t in example[side] if not 0 <= t < len(tokenizer)]
            if bad:
                raise ValueError(
                    f'{name}: row {row}: "{side}" holds token id {bad[0]}, outside the tokenizer\'s vocabulary '
                    f"(size {len(tokenizer)})"
                )

    if fmt == PRETOKENIZED and not streaming:
        for row, example in enumerate(dataset):
            check_vocab(row, example)

    def encode(example):
        chosen_ids, rejected_ids = encode_pair_texts(tokenizer, example, fmt)
        full_length = max(len(chosen_ids), len(rejected_ids))
        if max_length is not None and full_length > max_length and too_long == "truncate":
            chosen_ids = truncate_ids(chosen_ids, max_length, special)
            rejected_ids = truncate_ids(rejected_ids, max_length, special)
            if chosen_ids == rejected_ids:  # the cut removed every difference: no preference left, drop the pair
                return {"chosen_ids": [], "rejected_ids": [], "length": 0, "full_length": full_length}
        length = max(len(chosen_ids), len(rejected_ids))
        return {"chosen_ids": chosen_ids, "rejected_ids": rejected_ids, "length": length, "full_length": full_length}

    drop_cols = [c for c in columns if c not in ("margin", "label")]
    if streaming:

        def encode_row(example, row):
            try:
                check_preference_row(row, example, fmt)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
            if fmt == PRETOKENIZED:
                check_vocab(row, example)
            return encode(example)

        return tokenize_stream(dataset, encode_row, drop_cols, max_length, too_long, name, _TRUNCATION, "pairs")
    tokenized = dataset.map(encode, remove_columns=drop_cols, num_proc=num_proc, desc=f"Tokenizing {name}")
    return apply_length_policy(
        tokenized, len(dataset), max_length, too_long, name, truncation=_TRUNCATION, unit="pairs"
    )
