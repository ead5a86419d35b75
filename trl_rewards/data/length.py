"""The one policy for rows longer than `max_length`: truncate, drop or error, always counted and reported.

Every row tokenizer ([`tokenize_preferences`], [`tokenize_stepwise`], [`tokenize_outcomes`]) encodes its rows, records
each row's length before (`full_length`) and after (`length`) its own cut, and hands the result to
[`apply_length_policy`], which raises, drops or keeps rows and writes one report. How a row is cut depends on where
its reward is read: sequence rewards keep the leading special tokens and the end ([`truncate_ids`]); stepwise rows
lose left context at step boundaries, whole leading steps with their labels, counted (`EncodedSteps.fit`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from datasets import Dataset

from .encoding import leading_special_count

logger = logging.getLogger(__name__)

TOO_LONG_POLICIES = ("truncate", "drop", "error")


def check_too_long(too_long: str) -> None:
    if too_long not in TOO_LONG_POLICIES:
        raise ValueError(f"too_long must be one of {TOO_LONG_POLICIES}, got {too_long!r}")


def truncate_ids(ids: list[int], max_length: int, special_ids: set[int], *aligned: list) -> list[int] | tuple:
    """
    Keeps the leading special tokens (`<s>`, `[CLS]`) and the last tokens up to `max_length`: the reward is read at
    the end of a decoder's sequence, and an encoder's `[CLS]` must stay at position 0. Lists in `aligned` (one entry
    per token, e.g. a completion mask; empty lists stay empty) are cut the same way and returned after the ids.
    """
    if len(ids) <= max_length:
        return (ids, *aligned) if aligned else ids
    head = min(leading_special_count(ids, special_ids), max_length - 1)
    tail = len(ids) - (max_length - head)
    cut = ids[:head] + ids[tail:]
    if not aligned:
        return cut
    return (cut, *[(values[:head] + values[tail:]) if values else values for values in aligned])


@dataclass
class RowLengthReport:
    """
    What a row tokenizer did with rows (or pairs: `unit`) longer than `max_length`.

    Parameters:
        n_rows (`int`): rows seen.
        n_too_long (`int`): rows longer than `max_length`.
        n_truncated (`int`): over-long rows kept, cut.
        n_dropped (`int`): rows removed (all over-long ones with `"drop"`, those that could not be cut with
            `"truncate"`).
        max_length (`int` or `None`): the limit.
        action (`str`): the `too_long` policy.
        longest (`int`): tokens of the longest row before any cut.
        truncation (`str`): how a kept row was cut, for the message.
        unit (`str`): what a row is (`"rows"`, `"pairs"`).
        n_dropped_labels (`int`): labels that went with the text cut away from kept rows (stepwise rows lose whole
            leading steps, labels included).
    """

    n_rows: int
    n_too_long: int
    n_truncated: int
    n_dropped: int
    max_length: int | None
    action: str
    longest: int
    truncation: str = "were truncated"
    unit: str = "rows"
    n_dropped_labels: int = 0

    @property
    def n_kept(self) -> int:
        return self.n_rows - self.n_dropped

    def message(self, name: str = "dataset") -> str:
        if self.n_too_long == 0:
            return (
                f"{name}: {self.n_rows} {self.unit}, none longer than max_length={self.max_length} "
                f"(longest {self.longest})"
            )
        head = (
            f"{name}: {self.n_too_long} of {self.n_rows} {self.unit} ({100 * self.n_too_long / self.n_rows:.1f}%) "
            f"exceed max_length={self.max_length} (longest {self.longest} tokens): "
        )
        if self.action == "truncate":
            labels = f", losing {self.n_dropped_labels} step labels with them" if self.n_dropped_labels else ""
            return head + (
                f"{self.n_truncated} {self.truncation}{labels}, {self.n_dropped} that could not be truncated were "
                f"dropped; {self.n_kept} {self.unit} kept"
            )
        return head + f"dropped; {self.n_kept} {self.unit} kept"


def apply_length_policy(
    tokenized: Dataset,
    n_rows: int,
    max_length: int | None,
    too_long: str,
    name: str,
    truncation: str | None = None,
    unit: str = "rows",
) -> tuple[Dataset, RowLengthReport]:
    """
    The over-long-row policy, applied after encoding. `tokenized` has `full_length` (tokens before any cut) and
    `length` (after; 0 for a row that could not be truncated to fit), and optionally `dropped_labels` (labels cut away
    from a kept row). `"error"` raises at the first over-long row, `"drop"` removes them, `"truncate"` keeps the cut
    rows and drops only those of length 0. Returns the rows without `full_length` / `dropped_labels` and the (logged)
    report.
    """
    check_too_long(too_long)
    full_lengths = tokenized["full_length"]
    too_long_rows = [i for i, n in enumerate(full_lengths) if max_length is not None and n > max_length]
    if too_long_rows and too_long == "error":
        row = too_long_rows[0]
        raise ValueError(
            f"{name}: {len(too_long_rows)} {unit} exceed max_length={max_length}; first is row {row} "
            f"({full_lengths[row]} tokens). Set too_long='truncate' or 'drop', or raise max_length."
        )
    lengths = tokenized["length"]
    dropped = set(too_long_rows) if too_long == "drop" else {i for i in too_long_rows if lengths[i] == 0}
    if len(dropped) == len(tokenized):
        raise ValueError(
            f"{name}: all {len(tokenized)} {unit} exceed max_length={max_length} (too_long={too_long!r}; shortest "
            f"{min(full_lengths)} tokens), nothing is left; raise max_length"
        )
    n_dropped_labels = 0
    if "dropped_labels" in tokenized.column_names:
        counts = tokenized["dropped_labels"]
        n_dropped_labels = sum(counts[i] for i in range(len(counts)) if i not in dropped)
        tokenized = tokenized.remove_columns("dropped_labels")
    if dropped:
        tokenized = tokenized.select([i for i in range(len(tokenized)) if i not in dropped])
    report = RowLengthReport(
        n_rows=n_rows,
        n_too_long=len(too_long_rows),
        n_truncated=len(too_long_rows) - len(dropped),
        n_dropped=len(dropped),
        max_length=max_length,
        action=too_long,
        longest=max(full_lengths),
        unit=unit,
        n_dropped_labels=n_dropped_labels,
        **({"truncation": truncation} if truncation else {}),
    )
    (logger.warning if report.n_too_long else logger.info)(report.message(name))
    return tokenized.remove_columns("full_length"), report
