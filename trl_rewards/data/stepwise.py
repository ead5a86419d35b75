"""Stepwise data for process reward models (PRMs): validation and converters from PRM800K and Math-Shepherd.

TRL's stepwise format holds one solution per row, split into steps, with one label per step:
`{"prompt": str, "completions": list[str], "labels": list[bool]}`.

Binarization. PRM800K rates a step 1 (good), 0 (neutral: reasonable but not progress) or -1 (bad). The default,
`binarize="nonnegative"`, counts a neutral step as good (rating >= 0): the usual choice, since a neutral step is not a
mistake. `binarize="positive"` (rating > 0, what TRL's `trl-lib/prm800k` script does with `rating == 1`) counts it as
bad. Math-Shepherd labels are already binary (`+` / `-`).

Which steps make a row:

- raw PRM800K (`from_prm800k_raw`): one row per labelled line, following the labeler's path. A step with a
  `chosen_completion` contributes that completion. At a step without one the labeler stopped: the first completion
  that binarizes as bad (normally a -1) ends the row as its last, bad step; when there is none the row ends before
  that step. A `human_completion` written after the error is not used: it is not a model sample, and it continues a
  path that the bad step does not. Unlike TRL's script, rejected alternatives do not become rows of their own.
- PRM800K stepwise-critic parquet (`from_prm800k_stepwise_critic`): one row per rated candidate step. Its prefix
  (`responses`) is the labeler's path so far, labelled good: in `phase1_train.stepwise-critic.parquet` every one of
  the 795,931 prefix steps is the preferred continuation at that point, rated 1 (630,344) or written by a human
  (165,587), so the labels are the same under both binarizations. Rows are not merged: sibling candidates are
  alternatives for one prefix and cannot share a trajectory, so each human rating is the last label of exactly one
  row and the prefix labels repeat; to count every rating once, train on the last step of each row only.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

from .loading import iter_rows

logger = logging.getLogger(__name__)

STEPWISE_FIELDS = ("prompt", "completions", "labels")
BINARIZATIONS = ("nonnegative", "positive")
# The stepwise-critic parquet strips this block from a final step and stores the answer in `answer`; the raw JSONL
# keeps it in the step text. Putting it back makes both sources give the same text for the same step.
PRM800K_ANSWER_HEADER = "\n\n# Answer\n\n"
_CRITIC_COLUMNS = ["instruction", "responses", "next_response", "answer", "rating", "is_human_response"]


@dataclass
class ConversionStats:
    """What a converter read, wrote and skipped, by reason."""

    source: str
    rows_read: int = 0
    rows_written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def message(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        return f"{self.source}: {self.rows_read} rows read, {self.rows_written} written; skipped: {skipped}"


def _read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _rows_and_source(path_or_rows: str | os.PathLike | Iterable[Mapping]) -> tuple[Iterable[Mapping], str]:
    if isinstance(path_or_rows, str | os.PathLike):
        return _read_jsonl(path_or_rows), Path(path_or_rows).name
    return path_or_rows, "rows"


def _check_stepwise_row(row: Any, where: str) -> None:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a dict with keys {list(STEPWISE_FIELDS)}, got {type(row).__name__}")
    for name in STEPWISE_FIELDS:
        if row.get(name) is None:
            raise ValueError(f'{where}: "{name}" is missing')
    prompt, steps, labels = row["prompt"], row["completions"], row["labels"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f'{where}: "prompt" must be a non-empty string, got {prompt!r:.80}')
    if not isinstance(steps, list | tuple):
        raise ValueError(f'{where}: "completions" must be a list of step strings, got {type(steps).__name__}')
    if not steps:
        raise ValueError(f'{where}: "completions" has no steps')
    for i, step in enumerate(steps):
        if not isinstance(step, str):
            raise ValueError(f'{where}: "completions"[{i}] must be a string, got {type(step).__name__}')
        if not step.strip():
            raise ValueError(f'{where}: "completions"[{i}] is empty or whitespace-only')
    if not isinstance(labels, list | tuple):
        raise ValueError(f'{where}: "labels" must be a list of booleans, got {type(labels).__name__}')
    if len(labels) != len(steps):
        raise ValueError(f'{where}: "labels" has {len(labels)} entries but "completions" has {len(steps)} steps')
    for i, label in enumerate(labels):
        if not isinstance(label, bool | np.bool_):
            raise ValueError(
                f'{where}: "labels"[{i}] is {label!r} ({type(label).__name__}); labels must be Python bool or '
                "numpy.bool_, ints and floats are rejected (binarize them explicitly)"
            )


def validate_stepwise_rows(rows: Iterable[Mapping] | Dataset, *, source: str = "dataset") -> None:
    """
    Checks every row of stepwise (process-supervision) data before any model is loaded.

    Raises `ValueError` naming the row (0-based) and the field for: a missing field, a prompt that is not a non-empty
    string, `completions` that is not a list or has no steps, an empty or whitespace-only step (with its index), a
    label that is not a Python `bool` or `numpy.bool_` (ints such as `1` are rejected), and a number of labels that
    differs from the number of steps. Extra fields are allowed.

    Args:
        rows (`Iterable[Mapping]` or [`~datasets.Dataset`]): rows in TRL's stepwise format.
        source (`str`, *optional*, defaults to `"dataset"`): name of the data, first word of every error message.

    Returns:
        `None`.
    """
    n_rows = 0
    for index, row in enumerate(iter_rows(rows)):
        _check_stepwise_row(row, f"{source} row {index}")
        n_rows += 1
    if n_rows == 0:
        raise ValueError(f"{source} has no rows")


def split_steps(text: str, separator: str = "\n\n") -> list[str]:
    """
    Splits a solution into steps.

    Args:
        text (`str`): the solution.
        separator (`str`, *optional*, defaults to `"\\n\\n"`): what separates two steps.

    Returns:
        `list[str]`: the steps, stripped, empty ones dropped.
    """
    return [step.strip() for step in text.split(separator) if step.strip()]


def first_error_step(labels: Sequence[bool]) -> int | None:
    """
    Index of the first bad step.

    Args:
        labels (`Sequence[bool]`): one label per step, `True` for a good step.

    Returns:
        `int` or `None`: the index of the first `False` label, `None` when every step is good.
    """
    return next((i for i, label in enumerate(labels) if not label), None)


def _check_binarize(binarize: str) -> None:
    if binarize not in BINARIZATIONS:
        raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {binarize!r}")


def _is_good(rating: float, binarize: str) -> bool:
    return rating >= 0 if binarize == "nonnegative" else rating > 0


def _to_dataset(rows: list[dict[str, Any]], stats: ConversionStats, return_stats: bool):
    if not rows:
        raise ValueError(f"{stats.message()}: no rows left to build a dataset")
    stats.rows_written = len(rows)
    logger.info(stats.message())
    dataset = Dataset.from_dict({name: [row[name] for row in rows] for name in STEPWISE_FIELDS})
    return (dataset, stats) if return_stats else dataset


def _prm800k_path(record: Mapping, where: str, binarize: str, stop_at_first_error: bool) -> dict[str, Any]:
    try:
        prompt, raw_steps = record["question"]["problem"], record["label"]["steps"]
    except (KeyError, TypeError) as err:
        raise ValueError(f'{where}: not a PRM800K record (needs "question.problem" and "label.steps")') from err
    steps, labels = [], []
    for i, step in enumerate(raw_steps or []):
        completions = step.get("completions") or []
        chosen = step.get("chosen_completion")
        if chosen is None:
            # The labeler stopped here (found an error, gave up, or rated every candidate bad and wrote one).
            rated = [c for c in completions if c.get("rating") is not None]
            bad = next((c for c in rated if not _is_good(c["rating"], binarize)), None)
            if bad is not None:
                steps.append(bad["text"])
                labels.append(False)
            break
        if not 0 <= chosen < len(completions):
            raise ValueError(f'{where}: "label.steps"[{i}] chose completion {chosen} of {len(completions)}')
        rating = completions[chosen].get("rating")
        if rating is None:
            raise ValueError(f'{where}: "label.steps"[{i}] chose completion {chosen}, which has no rating')
        steps.append(completions[chosen]["text"])
        labels.append(_is_good(rating, binarize))
        if stop_at_first_error and not labels[-1]:
            break
    return {"prompt": prompt, "completions": steps, "labels": labels}


def from_prm800k_raw(
    path_or_rows: str | os.PathLike | Iterable[Mapping],
    *,
    binarize: str = "nonnegative",
    stop_at_first_error: bool = True,
    return_stats: bool = False,
) -> Dataset | tuple[Dataset, ConversionStats]:
    """
    Converts PRM800K lines in OpenAI's original schema to the stepwise format, one row per labelled line.

    The row follows the labeler's path (see the module docstring): each step's `chosen_completion`; at the step where
    the labeler stopped, the first completion rated bad (if any) as the last step. Lines that yield no step (e.g.
    the first step has no completions) are skipped and counted.

    Args:
        path_or_rows (`str`, `os.PathLike` or `Iterable[Mapping]`): a JSONL file (optionally `.gz`) or parsed lines.
        binarize (`str`, *optional*, defaults to `"nonnegative"`): `"nonnegative"` (rating >= 0 is good, neutral
            counts as good) or `"positive"` (rating > 0 is good).
        stop_at_first_error (`bool`, *optional*, defaults to `True`): end the row at the first chosen step that
            binarizes as bad (a neutral step under `"positive"`). With `False` the path goes on past it.
        return_stats (`bool`, *optional*, defaults to `False`): also return the [`ConversionStats`].

    Returns:
        [`~datasets.Dataset`] with columns `prompt`, `completions`, `labels`, or `(dataset, stats)`.
    """
    _check_binarize(binarize)
    records, source = _rows_and_source(path_or_rows)
    stats, rows = ConversionStats(source), []
    for index, record in enumerate(records):
        stats.rows_read += 1
        where = f"{source} row {index}"
        row = _prm800k_path(record, where, binarize, stop_at_first_error)
        if not row["completions"]:
            stats.skip("without a rated step")
            continue
        _check_stepwise_row(row, where)
        rows.append(row)
    return _to_dataset(rows, stats, return_stats)


def _read_critic_table(path: str | os.PathLike, max_problems: int | None) -> pa.Table:
    table = pq.read_table(path, columns=_CRITIC_COLUMNS)
    if max_problems is None:
        return table
    if max_problems < 1:
        raise ValueError(f"max_problems must be >= 1 or None, got {max_problems}")
    instructions = table.column("instruction").to_pylist()
    # A problem's rows are not always contiguous (900 problems in 904 runs), so select by problem, not by a slice.
    keep = set(list(dict.fromkeys(instructions))[:max_problems])
    return table.filter(pa.array([instruction in keep for instruction in instructions]))


def from_prm800k_stepwise_critic(
    path: str | os.PathLike,
    *,
    binarize: str = "nonnegative",
    max_problems: int | None = None,
    return_stats: bool = False,
) -> Dataset | tuple[Dataset, ConversionStats]:
    """
    Converts the PRM800K stepwise-critic parquet (one row per rated candidate step) to the stepwise format.

    Each parquet row becomes `prompt=instruction`, `completions=responses + [next_response]` and
    `labels=[True] * len(responses) + [rating is good]`: the earlier steps are the labeler's accepted path (checked on
    the whole file, see the module docstring). A final step gets its `# Answer` block back from the `answer` column.
    Rows without a rating are skipped and counted: human-written steps (`is_human_response`) and unrated candidates.

    Args:
        path (`str` or `os.PathLike`): the parquet file, e.g. `prm800k/phase1_train.stepwise-critic.parquet`.
        binarize (`str`, *optional*, defaults to `"nonnegative"`): `"nonnegative"` (rating >= 0 is good, neutral
            counts as good) or `"positive"` (rating > 0 is good).
        max_problems (`int` or `None`, *optional*, defaults to `None`): keep only the rows of the first
            `max_problems` distinct problems, in file order.
        return_stats (`bool`, *optional*, defaults to `False`): also return the [`ConversionStats`].

    Returns:
        [`~datasets.Dataset`] with columns `prompt`, `completions`, `labels`, or `(dataset, stats)`.
    """
    _check_binarize(binarize)
    table = _read_critic_table(path, max_problems)
    columns = {name: table.column(name).to_pylist() for name in _CRITIC_COLUMNS}
    stats, rows = ConversionStats(Path(path).name), []
    for index, values in enumerate(zip(*columns.values(), strict=True)):
        instruction, responses, step, answer, rating, is_human = values
        stats.rows_read += 1
        if rating is None or math.isnan(rating):
            stats.skip("human-written steps" if is_human else "unrated candidate steps")
            continue
        if rating not in (-1, 0, 1):
            raise ValueError(f'{stats.source} row {index}: "rating" must be -1, 0 or 1, got {rating!r}')
        if answer is not None:
            step = f"{step}{PRM800K_ANSWER_HEADER}{answer}"
        row = {
            "prompt": instruction,
            "completions": [*responses, step],
            "labels": [True] * len(responses) + [_is_good(rating, binarize)],
        }
        _check_stepwise_row(row, f"{stats.source} row {index}")
        rows.append(row)
    return _to_dataset(rows, stats, return_stats)


def _parse_math_shepherd(record: Mapping, where: str, step_tag: str) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise ValueError(f'{where}: expected a dict with "input" and "label", got {type(record).__name__}')
    text, marked = record.get("input"), record.get("label")
    for name, value in (("input", text), ("label", marked)):
        if not isinstance(value, str):
            raise ValueError(f'{where}: "{name}" must be a string, got {type(value).__name__}')
    segments = text.split(step_tag)
    if len(segments) == 1:
        raise ValueError(f'{where}: "input" has no "{step_tag}" step tag')
    if segments[-1].strip():
        raise ValueError(f'{where}: "input" has text after its last "{step_tag}" tag, a step without a label')
    # "label" is "input" with each tag replaced by a single "+" or "-": read the mark where each tag was.
    marks, position = [], 0
    for segment in segments[:-1]:
        position += len(segment)
        marks.append(marked[position : position + 1])
        position += 1
    rebuilt = "".join(segment + mark for segment, mark in zip(segments, [*marks, ""], strict=True))
    if rebuilt != marked or not all(mark in ("+", "-") for mark in marks):
        n_marks = len(re.findall(r"[+-](?=\n|$)", marked))
        raise ValueError(
            f'{where}: "input" has {len(marks)} "{step_tag}" step tags but "label" has {n_marks} "+"/"-" step '
            'labels, or differs from "input" elsewhere'
        )
    # The problem and the first step share the first segment: the solution starts at "Step 1:".
    start = re.search(r"step 1:", segments[0], flags=re.IGNORECASE)
    if start is None:
        raise ValueError(f'{where}: "input" has no "Step 1:" before its first "{step_tag}" tag to end the problem at')
    steps = [segments[0][start.start() :], *segments[1:-1]]
    return {
        "prompt": segments[0][: start.start()].strip(),
        "completions": [step.strip() for step in steps],
        "labels": [mark == "+" for mark in marks],
    }


def from_math_shepherd(
    path_or_rows: str | os.PathLike | Iterable[Mapping],
    *,
    step_tag: str = "ки",
    skip_malformed: bool = False,
    return_stats: bool = False,
) -> Dataset | tuple[Dataset, ConversionStats]:
    """
    Converts raw Math-Shepherd lines to the stepwise format.

    A line's `input` is the problem followed by `Step 1: ... ки\\nStep 2: ... ки`; its `label` is the same text with
    each tag replaced by `+` (good step) or `-` (bad step). The prompt is the text before the first `Step 1:`; each
    step keeps its `Step k:` prefix, as in TRL's `trl-lib/math_shepherd`.

    Args:
        path_or_rows (`str`, `os.PathLike` or `Iterable[Mapping]`): a JSONL file (optionally `.gz`) or parsed lines.
        step_tag (`str`, *optional*, defaults to `"ки"`): the tag that ends every step in `input`.
        skip_malformed (`bool`, *optional*, defaults to `False`): skip and count lines whose tags and labels do not
            line up or that have no `Step 1:`, instead of raising a `ValueError` that names the row.
        return_stats (`bool`, *optional*, defaults to `False`): also return the [`ConversionStats`].

    Returns:
        [`~datasets.Dataset`] with columns `prompt`, `completions`, `labels`, or `(dataset, stats)`.
    """
    records, source = _rows_and_source(path_or_rows)
    stats, rows = ConversionStats(source), []
    for index, record in enumerate(records):
        stats.rows_read += 1
        where = f"{source} row {index}"
        try:
            row = _parse_math_shepherd(record, where, step_tag)
        except ValueError:
            if not skip_malformed:
                raise
            stats.skip("malformed")
            continue
        _check_stepwise_row(row, where)
        rows.append(row)
    return _to_dataset(rows, stats, return_stats)
