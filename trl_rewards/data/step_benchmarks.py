"""Loaders of the published PRM benchmarks ProcessBench and PRMBench, with row-numbered validation.

Both give rows of one common shape: `{"id", "subset", "prompt", "steps"}` plus the benchmark's labels.

- **ProcessBench** (Zheng et al., 2024; `Qwen/ProcessBench`, one split per subset: `gsm8k`, `math`,
  `olympiadbench`, `omnimath`): rows `{"problem", "steps", "label"}`, `label` the 0-based index of the first wrong
  step or `-1` when every step is right, optional `"id"` and `"generator"`. Only the first error is annotated, so a
  row gets `"first_error"` (`None` when every step is right), not per-step labels. The subset is the row's
  `"subset"` field when it has one, else the `subset` argument, else the file's name without its suffix.
- **PRMBench** (Song et al., 2025; `hitsmy/PRMBench_Preview`): rows `{"question", "original_process",
  "modified_process", "error_steps", "classification", ...}`. The evaluated solution is `modified_process`; its
  steps listed in `error_steps` (1-based) are wrong, every other step is right (`"labels"`, one bool per step,
  `True` = right); the `classification` (error type) is the subset. The prompt is `modified_question` when the row
  has one (what PRMBench's own evaluation reads), else `question`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from .loading import load_table

BENCHMARK_FORMATS = ("processbench", "prmbench")


def _rows_and_source(path_or_rows, source: str | None) -> tuple[Iterable, str]:
    if isinstance(path_or_rows, str | os.PathLike):
        return load_table(str(path_or_rows)), source or Path(path_or_rows).name
    return path_or_rows, source or "rows"


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _text(row: Mapping, name: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        raise ValueError(f'{where}: "{name}" is missing')
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'{where}: "{name}" must be a non-empty string, got {value!r:.80}')
    return value


def _steps(row: Mapping, name: str, where: str) -> list[str]:
    steps = row.get(name)
    if steps is None:
        raise ValueError(f'{where}: "{name}" is missing')
    if isinstance(steps, str) or not isinstance(steps, list | tuple) or not steps:
        raise ValueError(f'{where}: "{name}" must be a non-empty list of steps, got {steps!r:.80}')
    for j, step in enumerate(steps):
        if not isinstance(step, str) or not step.strip():
            raise ValueError(f'{where}: "{name}"[{j}] must be a non-empty string, got {step!r:.80}')
    return list(steps)


def _row(row: Any, index: int, source: str, fields: tuple[str, ...]) -> tuple[Mapping, str]:
    where = f"{source} row {index}"
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a dict with keys {list(fields)}, got {type(row).__name__}")
    return row, where


def load_processbench(
    path_or_rows: str | os.PathLike | Iterable[Mapping] | Dataset,
    *,
    subset: str | None = None,
    source: str | None = None,
) -> list[dict[str, Any]]:
    """
    Reads ProcessBench rows (see the module docstring) and checks every one.

    Args:
        path_or_rows (`str`, `os.PathLike`, `Iterable[Mapping]` or [`~datasets.Dataset`]): a file `load_table` reads
            (`.jsonl`, `.json`, `.parquet`, ...) or the rows.
        subset (`str`, *optional*): subset of rows without a `"subset"` field; default: the file's stem
            (`gsm8k.jsonl` → `"gsm8k"`), or `"all"` for rows given in memory.
        source (`str`, *optional*): name of the data in error messages; default: the file name, or `"rows"`.

    Returns:
        `list[dict]`: `{"id", "subset", "prompt", "steps", "first_error"}` per row (`first_error` `None` when every
        step is right). A malformed row raises a `ValueError` naming its 0-based index and field.
    """
    is_file = isinstance(path_or_rows, str | os.PathLike)
    rows, source = _rows_and_source(path_or_rows, source)
    default_subset = subset or (Path(path_or_rows).name.split(".")[0] if is_file else "all")
    out = []
    for index, raw in enumerate(rows):
        row, where = _row(raw, index, source, ("problem", "steps", "label"))
        prompt = _text(row, "problem", where)
        steps = _steps(row, "steps", where)
        label = row.get("label")
        if label is None:
            raise ValueError(f'{where}: "label" is missing')
        if not _is_int(label) or not -1 <= label < len(steps):
            raise ValueError(
                f'{where}: "label" must be -1 (every step right) or the index of the first wrong step in '
                f"[0, {len(steps) - 1}], got {label!r}"
            )
        out.append(
            {
                "id": row.get("id") if row.get("id") is not None else str(index),
                "subset": row.get("subset") or default_subset,
                "prompt": prompt,
                "steps": steps,
                "first_error": None if label == -1 else int(label),
            }
        )
    if not out:
        raise ValueError(f"{source} has no rows")
    return out


def load_prmbench(
    path_or_rows: str | os.PathLike | Iterable[Mapping] | Dataset, *, source: str | None = None
) -> list[dict[str, Any]]:
    """
    Reads PRMBench rows (see the module docstring) and checks every one.

    Args:
        path_or_rows (`str`, `os.PathLike`, `Iterable[Mapping]` or [`~datasets.Dataset`]): a file `load_table` reads
            or the rows.
        source (`str`, *optional*): name of the data in error messages; default: the file name, or `"rows"`.

    Returns:
        `list[dict]`: `{"id", "subset", "prompt", "steps", "labels"}` per row, `labels[j]` `False` exactly for the
        steps `j + 1` in `error_steps`. A malformed row (e.g. an error step outside `1..len(modified_process)`, a
        0-based index) raises a `ValueError` naming its 0-based index and field.
    """
    rows, source = _rows_and_source(path_or_rows, source)
    out = []
    for index, raw in enumerate(rows):
        row, where = _row(raw, index, source, ("question", "modified_process", "error_steps", "classification"))
        prompt = _text(row, "modified_question" if row.get("modified_question") is not None else "question", where)
        steps = _steps(row, "modified_process", where)
        errors = row.get("error_steps")
        if errors is None:
            raise ValueError(f'{where}: "error_steps" is missing')
        if not isinstance(errors, list | tuple) or not all(_is_int(e) for e in errors):
            raise ValueError(f'{where}: "error_steps" must be a list of 1-based step numbers, got {errors!r:.80}')
        outside = [e for e in errors if not 1 <= e <= len(steps)]
        if outside:
            raise ValueError(
                f'{where}: "error_steps" holds {outside[0]}, outside 1..{len(steps)} (the steps of '
                '"modified_process", numbered from 1)'
            )
        wrong = {int(e) - 1 for e in errors}
        out.append(
            {
                "id": row.get("idx") if row.get("idx") is not None else str(index),
                "subset": _text(row, "classification", where),
                "prompt": prompt,
                "steps": steps,
                "labels": [j not in wrong for j in range(len(steps))],
            }
        )
    if not out:
        raise ValueError(f"{source} has no rows")
    return out
