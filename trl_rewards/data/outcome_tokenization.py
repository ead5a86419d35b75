"""Tokenizing outcome rows for outcome reward models (ORMs).

A row `{"prompt": str, "completion": str, "label": bool}` becomes the token ids of `prompt + completion` exactly as
[`RewardScorer.encode`] builds them for a text prompt (a decoder's sequence is closed with eos, the token the stock
sequence-classification head reads), plus, for `supervision="all_tokens"`, a `completion_mask` marking the tokens
that cover completion characters (a token straddling the boundary counts as completion; the appended eos too).

Over-long sequences are counted and truncated like preference pairs (leading special tokens and the end kept:
the end is where a decoder's score is read and where the final answer is), dropped, or reported as an error. A stream
(`IterableDataset`) is validated, tokenized and length-checked row by row as it is read (`data.streaming`).
"""

from __future__ import annotations

from datasets import Dataset, IterableDataset

from .encoding import encode_text
from .length import RowLengthReport, apply_length_policy, check_too_long, truncate_ids
from .outcome import _check_outcome_row, validate_outcome_rows
from .streaming import column_names, first_row, tokenize_stream

_TRUNCATION = "were truncated (leading special tokens and the end kept)"


def encode_outcome(tokenizer, prompt: str, completion: str, with_mask: bool = False) -> tuple[list[int], list[int]]:
    """
    Token ids of `prompt + completion` and, with `with_mask`, the completion mask (else an empty list).

    Args:
        tokenizer: the ORM's tokenizer (a fast one when `with_mask`: the mask comes from character offsets).
        prompt (`str`): the question.
        completion (`str`): the solution.
        with_mask (`bool`): also compute the completion mask.

    Returns:
        `tuple[list[int], list[int]]`: `(input_ids, completion_mask)`, both of length `seq_len` when `with_mask`.
    """
    text = prompt + completion
    ids = encode_text(tokenizer, text)
    if not with_mask:
        return ids, []
    try:
        encoding = tokenizer(text, return_offsets_mapping=True)
    except NotImplementedError as err:
        raise ValueError(
            f"supervision='all_tokens' needs character offsets, which {type(tokenizer).__name__} does not give; "
            "use a fast tokenizer or supervision='final_token'"
        ) from err
    if encoding["input_ids"] != ids[: len(encoding["input_ids"])]:
        raise RuntimeError("tokenizing with offsets gave other ids than without; cannot place the completion mask")
    mask = [int(end > len(prompt)) for _, end in encoding["offset_mapping"]]
    return ids, mask + [1] * (len(ids) - len(mask))


def tokenize_outcomes(
    dataset: Dataset | IterableDataset,
    tokenizer,
    max_length: int | None,
    too_long: str = "truncate",
    with_completion_mask: bool = False,
    num_proc: int | None = None,
    name: str = "dataset",
) -> tuple[Dataset | IterableDataset, RowLengthReport]:
    """
    Validates outcome rows (row-numbered errors) and tokenizes them into `input_ids`, `label` (float), `length` and,
    with `with_completion_mask`, `completion_mask`.

    Args:
        dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]): rows `{"prompt", "completion", "label"}`
            (other columns are removed). A stream is validated and tokenized lazily, row by row as it is read.
        tokenizer: the ORM's tokenizer.
        max_length (`int` or `None`): longest sequence kept as is.
        too_long (`str`): `"truncate"` (leading special tokens and the end kept), `"drop"` or `"error"`.
        with_completion_mask (`bool`): also return the completion mask (for `supervision="all_tokens"`).
        num_proc (`int`, *optional*): processes for `Dataset.map` (not used for a stream).
        name (`str`): dataset name used in messages.

    Returns:
        `tuple[Dataset | IterableDataset, RowLengthReport]`: the tokenized rows and what happened to over-long ones
        (logged; for a stream, a [`StreamLengthReport`] counting the rows read so far).
    """
    check_too_long(too_long)
    streaming = isinstance(dataset, IterableDataset)
    if streaming:
        first_row(dataset, name)
    else:
        validate_outcome_rows(dataset, source=name)
    special = set(tokenizer.all_special_ids)

    def encode(example):
        ids, mask = encode_outcome(tokenizer, example["prompt"], example["completion"], with_completion_mask)
        n_full = len(ids)
        if max_length is not None and n_full > max_length and too_long == "truncate":
            ids, mask = truncate_ids(ids, max_length, special, mask)
        row = {"input_ids": ids, "label": float(example["label"]), "length": len(ids), "full_length": n_full}
        return {**row, "completion_mask": mask} if with_completion_mask else row

    if streaming:

        def encode_row(example, row):
            _check_outcome_row(example, f"{name} row {row}")
            return encode(example)

        return tokenize_stream(dataset, encode_row, column_names(dataset), max_length, too_long, name, _TRUNCATION)
    tokenized = dataset.map(encode, remove_columns=dataset.column_names, num_proc=num_proc, desc=f"Tokenizing {name}")
    return apply_length_policy(tokenized, len(dataset), max_length, too_long, name, truncation=_TRUNCATION)
