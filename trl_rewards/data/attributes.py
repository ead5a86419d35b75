"""Attribute data for multi-attribute regression reward models (SteerLM, HelpSteer2, ArmoRM's first stage).

Format: `{"prompt", "completion", <one column per attribute>}`: each attribute column holds a rating (an int or a
float) or is missing for that row (`None` or NaN), e.g. HelpSteer2's five columns on its 0-4 scale:

```python
{"prompt": "What is 2+2?", "completion": "4.", "helpfulness": 3, "correctness": 4, "coherence": 4,
 "complexity": 0, "verbosity": 0}
```

A missing rating is masked out of the loss (`losses.masked_regression_loss`) and of the metrics; a row needs at least
one rating. HelpSteer2 names the completion `response`: [`from_helpsteer2`] renames it. The prompt is a string (or a
list of chat messages, encoded through the tokenizer's chat template like everywhere else). Tokenization goes through
`encoding.encode_prompt_completion`, the encoding [`RewardScorer`] uses, so training and scoring read the same
sequence, and the score is read where the stock sequence-classification head reads it (a decoder's closing eos,
an encoder's `[CLS]`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset, IterableDataset

from .encoding import encode_prompt_completion, pad_right
from .length import RowLengthReport, apply_length_policy, check_too_long, truncate_ids
from .loading import iter_rows
from .streaming import column_names, first_row, tokenize_stream

HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
_TRUNCATION = "were truncated (leading special tokens and the end kept)"


def check_attribute_names(attributes: Sequence[str]) -> tuple[str, ...]:
    """`attributes` as a tuple, after checking it is a non-empty list of distinct, non-empty names."""
    if isinstance(attributes, str) or not isinstance(attributes, Sequence) or not attributes:
        raise ValueError(f"attributes must be a non-empty list of column names, got {attributes!r}")
    for name in attributes:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"attributes must be non-empty strings, got {name!r}")
    duplicates = sorted({name for name in attributes if list(attributes).count(name) > 1})
    if duplicates:
        raise ValueError(f"attributes must be distinct, {duplicates} appear more than once")
    reserved = {"prompt", "completion"} & set(attributes)
    if reserved:
        raise ValueError(f"{sorted(reserved)} cannot be an attribute: it is the text of the row")
    return tuple(attributes)


def rating_value(value: Any, where: str, name: str) -> float:
    """A rating as a float, NaN for a missing one (`None` or NaN); a `ValueError` naming `where` and the field for
    anything else (a bool, a string, inf)."""
    if value is None:
        return math.nan
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f'{where}: "{name}" must be a number or missing (None/NaN), got {value!r:.80}')
    if math.isinf(value):
        raise ValueError(f'{where}: "{name}" is {value}; a rating must be finite (NaN or None marks it missing)')
    return float(value)


def _check_text(value: Any, where: str, name: str) -> None:
    if isinstance(value, list):  # a conversation
        if not value or not all(isinstance(m, Mapping) and isinstance(m.get("content"), str) for m in value):
            raise ValueError(f'{where}: "{name}" as a list must hold messages with a string "content"')
        return
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'{where}: "{name}" must be a non-empty string, got {value!r:.80}')


def row_ratings(row: Any, attributes: Sequence[str], where: str) -> list[float]:
    """Checks one attribute row and returns its ratings in `attributes` order (NaN where missing)."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a dict with prompt, completion and {list(attributes)}, got {row!r:.80}")
    for name in ("prompt", "completion"):
        if row.get(name) is None:
            raise ValueError(f'{where}: "{name}" is missing')
        _check_text(row[name], where, name)
    ratings = [rating_value(row.get(name), where, name) for name in attributes]
    if all(math.isnan(r) for r in ratings):
        raise ValueError(f"{where}: no rating at all (every one of {list(attributes)} is missing)")
    return ratings


def validate_attribute_rows(
    rows: Iterable[Mapping] | Dataset, attributes: Sequence[str] = HELPSTEER2_ATTRIBUTES, *, source: str = "dataset"
) -> None:
    """
    Checks every row of attribute data before any model is loaded.

    Raises `ValueError` naming the row (0-based) and the field for: a missing or empty prompt or completion, a rating
    that is not a number (bools and strings are rejected) or is infinite, and a row with no rating at all; and, over
    the whole data, for an attribute with no rating in any row (a column absent from the file, or a misspelled name:
    its head would never be trained). Missing ratings (`None`, NaN, or an absent key) are allowed per row.

    Args:
        rows (`Iterable[Mapping]` or [`~datasets.Dataset`]): rows in the attribute format.
        attributes (`Sequence[str]`, *optional*, defaults to HelpSteer2's five): the rating columns.
        source (`str`, *optional*, defaults to `"dataset"`): name of the data, first word of every error message.
    """
    attributes = check_attribute_names(attributes)
    observed = np.zeros(len(attributes), dtype=np.int64)
    n_rows = 0
    for index, row in enumerate(iter_rows(rows)):
        observed += ~np.isnan(row_ratings(row, attributes, f"{source} row {index}"))
        n_rows += 1
    if n_rows == 0:
        raise ValueError(f"{source} has no rows")
    never = [name for name, count in zip(attributes, observed, strict=True) if count == 0]
    if never:
        raise ValueError(
            f"{source}: attribute(s) {never} have no rating in any of its {n_rows} rows (is the column name right?)"
        )


def from_helpsteer2(dataset: Dataset) -> Dataset:
    """HelpSteer2 rows (`prompt`, `response` and the five ratings) in the attribute format (`response` renamed
    `completion`); the ratings are kept as they are."""
    if "response" not in dataset.column_names:
        raise ValueError(f"HelpSteer2 rows have a 'response' column; these have {dataset.column_names}")
    return dataset.rename_column("response", "completion")


def tokenize_attributes(
    dataset: Dataset | IterableDataset,
    tokenizer,
    attributes: Sequence[str],
    max_length: int | None,
    too_long: str = "truncate",
    num_proc: int | None = None,
    name: str = "dataset",
) -> tuple[Dataset | IterableDataset, RowLengthReport]:
    """
    Validates attribute rows (row-numbered errors) and tokenizes them into `input_ids`, `ratings` (one float per
    attribute, NaN where missing) and `length`.

    Args:
        dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]): rows `{"prompt", "completion", ...}` with
            the `attributes` columns (other columns are removed). A stream is validated and tokenized row by row.
        tokenizer: the reward model's tokenizer.
        attributes (`Sequence[str]`): the rating columns, in head-output order.
        max_length (`int` or `None`): longest sequence kept as is.
        too_long (`str`): `"truncate"` (leading special tokens and the end kept), `"drop"` or `"error"`.
        num_proc (`int`, *optional*): processes for `Dataset.map` (not used for a stream).
        name (`str`): dataset name used in messages.

    Returns:
        `tuple[Dataset | IterableDataset, RowLengthReport]`: the tokenized rows and what happened to over-long ones.
    """
    check_too_long(too_long)
    attributes = check_attribute_names(attributes)
    streaming = isinstance(dataset, IterableDataset)
    if streaming:
        first_row(dataset, name)
    else:
        validate_attribute_rows(dataset, attributes, source=name)
    special = set(tokenizer.all_special_ids)

    def encode(example, ratings):
        ids = encode_prompt_completion(tokenizer, example["prompt"], example["completion"])
        n_full = len(ids)
        if max_length is not None and n_full > max_length and too_long == "truncate":
            ids = truncate_ids(ids, max_length, special)
        return {"input_ids": ids, "ratings": ratings, "length": len(ids), "full_length": n_full}

    if streaming:

        def encode_row(example, row):
            return encode(example, row_ratings(example, attributes, f"{name} row {row}"))

        return tokenize_stream(dataset, encode_row, column_names(dataset), max_length, too_long, name, _TRUNCATION)
    tokenized = dataset.map(
        lambda example: encode(example, row_ratings(example, attributes, name)),
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Tokenizing {name}",
    )
    return apply_length_policy(tokenized, len(dataset), max_length, too_long, name, truncation=_TRUNCATION)


@dataclass
class AttributeCollator:
    """
    Pads tokenized attribute rows on the right.

    Returns `input_ids` and `attention_mask` of shape `(batch, seq_len)` and `ratings` of shape
    `(batch, num_attributes)` (float, NaN where a rating is missing).

    Args:
        pad_token_id (`int`): id used to pad `input_ids`.
        pad_to_multiple_of (`int`, *optional*): pad `seq_len` to a multiple of this value.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [example["input_ids"] for example in examples]
        ratings = [[math.nan if r is None else float(r) for r in example["ratings"]] for example in examples]
        return {
            "input_ids": pad_right(ids, self.pad_token_id, self.pad_to_multiple_of),
            "attention_mask": pad_right([[1] * len(s) for s in ids], 0, self.pad_to_multiple_of),
            "ratings": torch.tensor(ratings, dtype=torch.float),
        }
