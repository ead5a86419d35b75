"""Streaming rows (`datasets.IterableDataset`): row-by-row validation and tokenization under the one length policy.

A stream has no length and is read lazily, while training (or evaluation) runs, as TRL's `RewardTrainer` reads it
(training on a stream needs `max_steps`, as in TRL). So nothing can be checked or counted up front: each row is
validated when it is read (a bad row raises a `ValueError` naming the dataset and the row's position in the stream),
and the length policy is applied per row: `"truncate"` cuts the row as for a map-style dataset, `"drop"` filters it
out, `"error"` raises at the first over-long row.

The length report of a stream ([`StreamLengthReport`]) can only count what was read: it describes the current pass
over the stream (a new pass, e.g. the next evaluation, starts the counts again) in this process (rows read by
dataloader worker processes are counted there, not here). The first over-long row is logged as a warning, so no
truncation or drop goes unseen; `report.message()` gives the counts so far.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datasets import IterableDataset

from .length import RowLengthReport, check_too_long

logger = logging.getLogger(__name__)


def column_names(dataset) -> list[str]:
    """Column names of a `Dataset` or an `IterableDataset` (whose features may be unknown: then its first row's keys,
    as TRL's `get_dataset_column_names`)."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(first_row(dataset).keys())


def first_row(dataset, name: str = "dataset") -> dict[str, Any]:
    """The first row of a dataset or stream; a `ValueError` naming it when it has none."""
    try:
        return dict(next(iter(dataset)))
    except StopIteration:
        raise ValueError(f"{name} is empty") from None


@dataclass
class StreamLengthReport(RowLengthReport):
    """
    A [`RowLengthReport`] of a stream, updated as its rows are read: the counts cover the rows of the current pass
    read so far in this process (module docstring). `n_rows` is 0 until the stream is read.
    """

    warned: bool = field(default=False, repr=False)

    def reset(self) -> None:
        self.n_rows = self.n_too_long = self.n_truncated = self.n_dropped = self.longest = 0

    def message(self, name: str = "dataset") -> str:
        if self.n_rows == 0:
            return f"{name}: stream, no {self.unit} read yet"
        return f"{super().message(name)} (stream: counts of the {self.n_rows} {self.unit} read so far in this pass)"


def tokenize_stream(
    dataset: IterableDataset,
    encode_row: Callable[[dict[str, Any], int], dict[str, Any]],
    remove_columns: list[str],
    max_length: int | None,
    too_long: str,
    name: str,
    truncation: str | None = None,
    unit: str = "rows",
) -> tuple[IterableDataset, StreamLengthReport]:
    """
    Lazily validates and tokenizes a stream, applying the length policy per row.

    Args:
        dataset ([`~datasets.IterableDataset`]): the rows.
        encode_row (`Callable`): `encode_row(example, row)` validates the row (errors name `row`, its position in the
            stream) and returns its features with `length` (after its own cut, 0 if it cannot fit) and `full_length`.
        remove_columns (`list[str]`): input columns to remove.
        max_length (`int` or `None`): longest row kept as is.
        too_long (`str`): `"truncate"`, `"drop"` or `"error"`.
        name (`str`): dataset name used in messages.
        truncation (`str`, *optional*): how a truncated row was cut, for the report.
        unit (`str`): what a row is (`"pairs"`), for the report.

    Returns:
        `tuple[IterableDataset, StreamLengthReport]`: the tokenized stream (without `full_length`, over-long rows
        dropped when the policy says so) and its live report.
    """
    check_too_long(too_long)
    report = StreamLengthReport(
        n_rows=0,
        n_too_long=0,
        n_truncated=0,
        n_dropped=0,
        max_length=max_length,
        action=too_long,
        longest=0,
        unit=unit,
        **({"truncation": truncation} if truncation else {}),
    )

    def process(example: dict[str, Any], row: int) -> dict[str, Any]:
        if row == 0:
            report.reset()
        features = encode_row(example, row)
        full_length = features.pop("full_length")
        report.n_rows += 1
        report.longest = max(report.longest, full_length)
        if max_length is None or full_length <= max_length:
            return features
        if too_long == "error":
            raise ValueError(
                f"{name}: row {row} has {full_length} tokens, more than max_length={max_length} (too_long='error'). "
                "Set too_long='truncate' or 'drop', or raise max_length."
            )
        report.n_too_long += 1
        if too_long == "drop" or features["length"] == 0:
            report.n_dropped += 1
            features["length"] = 0
        else:
            report.n_truncated += 1
        if not report.warned:
            report.warned = True
            done = "dropped" if features["length"] == 0 else "truncated"
            logger.warning(
                f"{name}: row {row} of the stream has {full_length} tokens > max_length={max_length} and was {done}; "
                "later ones are counted in the stream's length report"
            )
        return features

    tokenized = dataset.map(process, with_indices=True, remove_columns=remove_columns)
    return tokenized.filter(lambda example: example["length"] > 0), report
