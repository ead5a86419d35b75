"""Reading the command line's inputs and outputs with errors that name the file, the line or row, and the field.

`datasets` reports a broken file as a parser exception from deep inside its builders (a `StopIteration` for an empty
file, an `EOFError` for a truncated `.gz`, an Arrow error for a bad JSON line). The commands read through
[`read_split`], which turns such a failure into one `ValueError` naming the file and, for JSON lines, the first line
that does not parse; and they check output paths before any model loads, so no computed work is lost to a bad path.
"""

from __future__ import annotations

import gzip
import json
import os

from ..data.loading import load_table


class InputError(ValueError):
    """A bad input file or option; the CLI prints its message as one line."""


def _first_bad_json_line(path: str) -> str | None:
    """Where a JSON-lines file stops parsing: `"line N: reason"`, or `None` when every line parses."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            n = 0
            for n, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    return f"line {n}: not UTF-8 text ({error.reason} at byte {error.start})"
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as error:
                    return f"line {n}: invalid JSON ({error.msg} at column {error.colno})"
                if not isinstance(value, dict):
                    return f"line {n}: a JSON object (one row) is expected, got {type(value).__name__}"
            if n == 0:
                return "the file is empty"
    except (EOFError, OSError, gzip.BadGzipFile) as error:
        return f"the compressed file is damaged or truncated ({type(error).__name__}: {error})"
    return None


def _is_json(name: str) -> bool:
    return os.path.isfile(name) and name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz"))


def read_split(name: str, split: str, config: str | None, max_rows: int | None, role: str):
    """`load_table(...)`, with any failure to read raised as one [`InputError`] naming `role` (e.g. "train data"),
    the file and, for JSON lines, the first bad line."""
    if os.path.isfile(name) and os.path.getsize(name) == 0:
        raise InputError(f"{role} {name!r}: the file is empty")
    try:
        dataset = load_table(name, split, config, max_rows)
    except (FileNotFoundError, KeyError) as error:
        raise InputError(f"{role} {name!r}: {error}") from error
    except Exception as error:
        where = None
        if _is_json(name):
            where = _first_bad_json_line(name)
        detail = where or f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise InputError(f"{role} {name!r} cannot be read: {detail}") from error
    if len(dataset) == 0:
        raise InputError(f"{role} {name!r} has no rows")
    return dataset


def check_rows(validate, dataset, role: str, name: str):
    """Runs a row validator (row-numbered `ValueError`s) and prefixes its message with which file is at fault."""
    try:
        return validate(dataset)
    except UnicodeDecodeError as error:  # `datasets` decodes some files lazily, on first access
        detail = _first_bad_json_line(name) if _is_json(name) else None
        raise InputError(f"{role} {name!r} cannot be read: {detail or error}") from error
    except ValueError as error:
        raise InputError(f"{role} {name!r}: {error}") from error


def check_output_file(path: str, flag: str = "--output") -> None:
    """Fails now, before any scoring, when `path` cannot be written: a folder, or a parent that cannot be created."""
    if os.path.isdir(path):
        raise InputError(f"{flag} {path!r} is a folder; give a file path")
    check_output_dir(os.path.dirname(os.path.abspath(path)), flag)


def check_output_dir(path: str, flag: str = "--output_dir") -> None:
    """Fails now when `path` is a file or cannot be created or written."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{flag} {path!r} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise InputError(f"{flag} {path!r} cannot be created: {error.strerror}") from error
    if not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path!r} is not writable")
