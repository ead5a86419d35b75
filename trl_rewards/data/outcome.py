"""Outcome data for outcome reward models (ORMs): one correctness label per complete solution.

Format: `{"prompt": str, "completion": str, "label": bool}`; extra columns (`question_id`, `source`, ...) are kept.

The GSM8K verifier data (`gsm8k-verifier/model_solutions.train.jsonl`) gives each question a reference solution and
four model solutions, each with an `is_correct` flag; that flag is the label, no binarization is involved. It agrees
with comparing the final `A: N` line to the reference's (`extract_numeric_answer` on both) on all 4,000 solutions.
Several solutions share a question, so held-out evaluation (best-of-4 included) must split by question:
`split_by_question`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from datasets import Dataset

from .loading import iter_rows

logger = logging.getLogger(__name__)

OUTCOME_FIELDS = ("prompt", "completion", "label")
GSM8K_VERIFIER_SOURCES = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
REFERENCE_SOURCE = "reference"

# Final-answer markers, by convention: GSM8K "#### N", the verifier data's "A: N" line, "The answer is N" (and
# Math-Shepherd's "The answer is: N"), PRM800K's "# Answer\n\nN".
_ANSWER_MARKER = re.compile(r"####|^A:|^# Answer|\b[Tt]he (?:final )?answer is:?", re.MULTILINE)
# Well-formed thousands groups or plain digits, an optional decimal part; a fraction ("5/9") or a malformed group
# ("1,00") is not a number here, so no prefix of it is returned either.
_NUMBER = re.compile(r"(?:\s|\\?\$)*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+)(?![\d/]|[.,]\d)")


def _check_outcome_row(row: Any, where: str) -> None:
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a dict with keys {list(OUTCOME_FIELDS)}, got {type(row).__name__}")
    for name in OUTCOME_FIELDS:
        if row.get(name) is None:
            raise ValueError(f'{where}: "{name}" is missing')
    for name in ("prompt", "completion"):
        if not isinstance(row[name], str) or not row[name].strip():
            raise ValueError(f'{where}: "{name}" must be a non-empty string, got {row[name]!r:.80}')
    if not isinstance(row["label"], bool | np.bool_):
        raise ValueError(
            f'{where}: "label" is {row["label"]!r} ({type(row["label"]).__name__}); labels must be Python bool '
            "or numpy.bool_, ints and floats are rejected (binarize them explicitly)"
        )


def validate_outcome_rows(rows: Iterable[Mapping] | Dataset, *, source: str = "dataset") -> None:
    """
    Checks every row of outcome data before any model is loaded.

    Raises `ValueError` naming the row (0-based) and the field for: a missing field, a prompt or completion that is
    not a non-empty string (whitespace-only counts as empty), and a label that is not a Python `bool` or
    `numpy.bool_` (ints such as `1` are rejected). Extra fields are allowed.

    Args:
        rows (`Iterable[Mapping]` or [`~datasets.Dataset`]): rows in the outcome format.
        source (`str`, *optional*, defaults to `"dataset"`): name of the data, first word of every error message.

    Returns:
        `None`.
    """
    n_rows = 0
    for index, row in enumerate(iter_rows(rows)):
        _check_outcome_row(row, f"{source} row {index}")
        n_rows += 1
    if n_rows == 0:
        raise ValueError(f"{source} has no rows")


def _normalize_number(raw: str) -> str:
    negative = raw.startswith("-")
    whole, _, fraction = raw.lstrip("-").replace(",", "").partition(".")
    fraction = fraction.rstrip("0")
    digits = (whole.lstrip("0") or "0") + (f".{fraction}" if fraction else "")
    return f"-{digits}" if negative and digits != "0" else digits


def extract_numeric_answer(text: str) -> str | None:
    """
    Final numeric answer of a solution, in a normalized string form.

    The answer is the number right after the last marker: `#### 18` (GSM8K), an `A: 18` line (GSM8K verifier data),
    `The answer is 18` / `The answer is: 18`, or a `# Answer` line (PRM800K); spaces and `$` (or LaTeX `\\$`) in
    between are skipped.
    Normalization drops thousands separators, trailing decimal zeros, leading zeros and the sign of zero:
    `"1,000"` -> `"1000"`, `"2.50"` -> `"2.5"`, `"-3"` -> `"-3"`, `"18.0"` -> `"18"`.

    Args:
        text (`str`): the solution.

    Returns:
        `str` or `None`: the answer, or `None` when there is no marker or no plain number after the last one (a
        fraction such as `5/9` gives `None`).
    """
    markers = list(_ANSWER_MARKER.finditer(text))
    if not markers:
        return None
    match = _NUMBER.match(text, markers[-1].end())
    return _normalize_number(match.group(1)) if match else None


def _read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_gsm8k_verifier(
    path: str | os.PathLike,
    *,
    sources: Sequence[str] | None = None,
    include_reference: bool = False,
) -> Dataset:
    """
    Loads the GSM8K verifier data as outcome rows, one per (question, solution).

    Rows come in file order, a question's solutions in the order of `sources`, its reference solution last.

    Args:
        path (`str` or `os.PathLike`): `gsm8k-verifier/model_solutions.train.jsonl`.
        sources (`Sequence[str]` or `None`, *optional*, defaults to `None`): which model solutions to keep, among
            `"6b_finetuning"`, `"6b_verification"`, `"175b_finetuning"`, `"175b_verification"`; `None` keeps all four.
        include_reference (`bool`, *optional*, defaults to `False`): also add each question's reference solution
            (`ground_truth`) as a positive example with `source="reference"`.

    Returns:
        [`~datasets.Dataset`] with columns `prompt` (the question), `completion` (the solution, its `A: N` line
        included), `label` (`is_correct`), `question_id` (0-based line number in the file, the same whatever
        `sources`), `source` and `gold_answer` (the reference's final answer, normalized by
        `extract_numeric_answer`).
    """
    sources = tuple(GSM8K_VERIFIER_SOURCES if sources is None else sources)
    unknown = sorted(set(sources) - set(GSM8K_VERIFIER_SOURCES))
    if unknown or not sources:
        raise ValueError(f"sources must be a non-empty subset of {GSM8K_VERIFIER_SOURCES}, got {list(sources)}")
    name = os.path.basename(path)
    records, rows = _read_jsonl(path), []
    for question_id, record in enumerate(records):
        where = f"{name} row {question_id}"
        missing = [key for key in ("question", "ground_truth", *sources) if key not in record]
        if missing:
            raise ValueError(f"{where}: missing {missing}")
        gold_answer = extract_numeric_answer(record["ground_truth"])
        if gold_answer is None:
            raise ValueError(f'{where}: "ground_truth" has no final "A: N" answer line')
        solutions = [(source, record[source]["solution"], record[source]["is_correct"]) for source in sources]
        if include_reference:
            solutions.append((REFERENCE_SOURCE, record["ground_truth"], True))
        for source, completion, label in solutions:
            row = {"prompt": record["question"], "completion": completion, "label": label}
            _check_outcome_row(row, f"{where} ({source})")
            rows.append({**row, "question_id": question_id, "source": source, "gold_answer": gold_answer})
    logger.info(f"{name}: {len(rows)} solutions of {len(records)} questions")
    return Dataset.from_list(rows)


def split_by_question(dataset: Dataset, test_size: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """
    Splits outcome rows into train and test sets whose questions are disjoint.

    Every solution of a question lands on the same side, so a model is never tested on a question it was trained on
    and best-of-N can be evaluated on held-out questions.

    Args:
        dataset ([`~datasets.Dataset`]): rows with a `question_id` column.
        test_size (`float`, *optional*, defaults to `0.2`): fraction of the questions, in `(0, 1)`, that go to the
            test set (rounded, at least one question on each side).
        seed (`int`, *optional*, defaults to `0`): seed of the shuffle of the questions.

    Returns:
        `tuple[Dataset, Dataset]`: `(train, test)`, each keeping the original row order.
    """
    if "question_id" not in dataset.column_names:
        raise ValueError(f'split_by_question needs a "question_id" column; columns are {dataset.column_names}')
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must lie in (0, 1), got {test_size}")
    question_ids = dataset["question_id"]
    questions = sorted(set(question_ids))
    if len(questions) < 2:
        raise ValueError(f"split_by_question needs at least 2 questions, got {len(questions)}")
    random.Random(seed).shuffle(questions)
    n_test = min(max(round(test_size * len(questions)), 1), len(questions) - 1)
    test_questions = set(questions[:n_test])
    in_test = [question_id in test_questions for question_id in question_ids]
    train = dataset.select([i for i, test in enumerate(in_test) if not test])
    test = dataset.select([i for i, test in enumerate(in_test) if test])
    return train, test
