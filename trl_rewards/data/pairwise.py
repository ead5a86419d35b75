"""Rows of a pairwise preference model (RLHFlow's pair-PM): one sequence holds the prompt and both responses.

**Template** (fixed; the trainer, the scorer and the reward function all build it with [`encode_pair_orders`]):

    <lead>[Prompt]\\n{prompt}\\n\\n[Response A]\\n{A}\\n\\n[Response B]\\n{B}<trail>

Each of the seven pieces is tokenized on its own (`add_special_tokens=False`) and the ids are joined, so where a
piece starts and ends is known in tokens and the length policy can cut the prompt without touching the responses.
`<lead>` and `<trail>` are the special tokens [`encode_text`] puts around a plain text (`[CLS]`/`[SEP]` for BERT,
`<s>` and a closing eos for a decoder, whose stock head reads the last token). The model's logit is the log-odds of
P(A ≻ B).

**Rows.** The preference formats of `data.preference` in text: `{"prompt", "chosen", "rejected"}` or the implicit
prompt `{"chosen", "rejected"}` (HH-RLHF), with an optional soft `label` = P(chosen ≻ rejected) (default 1). An
implicit row is split by [`split_implicit_prompt`]: the prompt is the shared prefix of `chosen` and `rejected` up to
and including its last `"\\n\\nAssistant:"` (HH-RLHF's turn marker), or, without one, up to its last whitespace; the
responses are the rest (HH-RLHF has a few empty ones, an assistant that said nothing: kept, as a BT model scores
them too). Conversational and pre-tokenized rows are refused (the template is text), as is a `margin` column (a
Bradley-Terry option the pairwise loss has no use for).

**Both orders.** [`tokenize_pairwise`] turns every pair into one row holding both orders: `ab_ids` (A = chosen,
B = rejected, target `label`) and `ba_ids` (swapped, target `1 - label`), so a batch always trains both and the model
cannot learn a position.

**Length.** The project's one policy (`data.length`), with the cut placed where it loses least: a row longer than
`max_length` loses the start of its prompt (the end, next to the responses, is kept) and never a response token. A
pair whose two responses alone do not fit cannot be truncated and is dropped (counted in the report); with
`too_long="drop"` every over-long pair is dropped, with `"error"` the first one stops. Scoring cannot drop a pair, so
[`encode_pair_orders`] with `cut_responses=True` (the scorer's setting) then also cuts the responses, each to an equal
share of what is left (the shorter one whole when it fits in half), keeping their starts; the scorer counts and
reports every such pair.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from datasets import Dataset, IterableDataset

from .encoding import encode_text, pad_right
from .length import RowLengthReport, apply_length_policy, check_too_long
from .preference import (
    CONVERSATIONAL,
    IMPLICIT_PROMPT,
    PRETOKENIZED,
    check_preference_row,
    detect_preference_format,
    rename_legacy_columns,
)
from .streaming import column_names, first_row, tokenize_stream

PROMPT_HEADER = "[Prompt]\n"
A_HEADER = "\n\n[Response A]\n"
B_HEADER = "\n\n[Response B]\n"
TURN_MARKER = "\n\nAssistant:"
_TRUNCATION = (
    "were truncated (the start of the prompt cut, both responses kept whole; a pair whose responses alone exceed "
    "max_length cannot be truncated)"
)


def split_implicit_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """
    `(prompt, chosen_response, rejected_response)` of an implicit-prompt pair: the prompt is the shared prefix of the
    two texts up to and including its last `"\\n\\nAssistant:"`, or without one up to its last whitespace (so no word
    is split), possibly empty; the responses are what follows.
    """
    shared = os.path.commonprefix([chosen, rejected])
    marker = shared.rfind(TURN_MARKER)
    if marker >= 0:
        cut = marker + len(TURN_MARKER)
    else:
        cut = max(shared.rfind(c) for c in " \n\t") + 1
    return chosen[:cut], chosen[cut:], rejected[cut:]


def pair_texts(example: dict[str, Any], fmt: str) -> tuple[str, str, str]:
    """`(prompt, chosen, rejected)` texts of a checked row in format `fmt` (explicit or implicit prompt)."""
    if fmt == IMPLICIT_PROMPT:
        return split_implicit_prompt(example["chosen"], example["rejected"])
    return example["prompt"], example["chosen"], example["rejected"]


def check_pairwise_format(fmt: str, columns) -> None:
    """Refuses what the pairwise template cannot read, with the reason."""
    if fmt in (CONVERSATIONAL, PRETOKENIZED):
        raise ValueError(
            f"pairwise preference rows must be text ({{'prompt', 'chosen', 'rejected'}} or {{'chosen', 'rejected'}}),"
            f" got the {fmt} format: the pairwise template joins the prompt and both responses as text"
        )
    if "margin" in columns:
        raise ValueError(
            'pairwise preference rows have no "margin": it is a Bradley-Terry option (chosen must win by m) and the '
            'pairwise loss has no use for it; remove the column, or express confidence with a soft "label"'
        )


def validate_pairwise_rows(dataset: Dataset, batch_size: int = 1000) -> str:
    """
    Checks every row of a pairwise preference dataset before any model loads (errors name the row and the field);
    returns the detected format (`"explicit_prompt"` or `"implicit_prompt"`).
    """
    if len(dataset) == 0:
        raise ValueError("preference dataset is empty")
    dataset = rename_legacy_columns(dataset)
    fmt = detect_preference_format(dataset.column_names, dataset[0])
    check_pairwise_format(fmt, dataset.column_names)
    start = 0
    for batch in dataset.iter(batch_size=batch_size):
        n = len(next(iter(batch.values())))
        for offset in range(n):
            check_preference_row(start + offset, {key: values[offset] for key, values in batch.items()}, fmt)
        start += n
    return fmt


class PairIds(NamedTuple):
    """Both orders of one pair: `ab` = (A, B) and `ba` = (B, A) token ids, equal in length; `full_length` before any
    cut; `prompt_cut` prompt tokens removed; `responses_cut` whether the responses were cut too. A pair that could not
    be fit without cutting a response (and `cut_responses=False`) has empty `ab` and `ba`."""

    ab: list[int]
    ba: list[int]
    full_length: int
    prompt_cut: int
    responses_cut: bool


def _segment(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def frame_ids(tokenizer) -> tuple[list[int], list[int]]:
    """`(leading, trailing)` special-token ids that [`encode_text`] puts around a text for this tokenizer."""
    probe = "a"
    ids, body = encode_text(tokenizer, probe), _segment(tokenizer, probe)
    for start in range(len(ids) - len(body) + 1):
        if ids[start : start + len(body)] == body:
            return ids[:start], ids[start + len(body) :]
    raise ValueError(f"{type(tokenizer).__name__} encodes {probe!r} differently with and without special tokens")


def _share(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    # symmetric in (a, b): both orders of a pair are cut the same way
    half = budget // 2
    if len(a) <= half:
        return a, b[: budget - len(a)]
    if len(b) <= half:
        return a[: budget - len(b)], b
    return a[:half], b[:half]


def encode_pair_orders(
    tokenizer, prompt: str | None, a: str, b: str, max_length: int | None = None, cut_responses: bool = False
) -> PairIds:
    """
    Token ids of `(prompt, A, B)` in both orders, in the module's template, fit to `max_length` by its length policy.

    Args:
        tokenizer: the pairwise model's tokenizer.
        prompt (`str` or `None`): the prompt (`None` is empty).
        a (`str`), b (`str`): the two responses.
        max_length (`int`, *optional*): most tokens per sequence.
        cut_responses (`bool`): when the responses alone exceed `max_length`, cut each to an equal share (the shorter
            one whole when it fits in half), keeping their starts, instead of returning empty ids (the scorer's
            setting; training drops such pairs).

    Returns:
        [`PairIds`].
    """
    lead, trail = frame_ids(tokenizer)
    p, x, y = (_segment(tokenizer, text) for text in (prompt or "", a, b))
    hp, ha, hb = (_segment(tokenizer, header) for header in (PROMPT_HEADER, A_HEADER, B_HEADER))
    fixed = len(lead) + len(hp) + len(ha) + len(hb) + len(trail)
    full = fixed + len(p) + len(x) + len(y)
    prompt_cut, responses_cut = 0, False
    if max_length is not None and full > max_length:
        budget = max_length - fixed
        if budget < 2:
            raise ValueError(
                f"max_length={max_length} leaves {budget} tokens for the prompt and the two responses after the "
                f"{fixed} tokens of the pairwise template; raise max_length"
            )
        prompt_cut = len(p) - max(0, budget - len(x) - len(y))
        p = p[prompt_cut:]
        if len(x) + len(y) > budget:
            if not cut_responses:
                return PairIds([], [], full, prompt_cut, False)
            (x, y), responses_cut = _share(x, y, budget), True

    def build(first: list[int], second: list[int]) -> list[int]:
        return lead + hp + p + ha + first + hb + second + trail

    return PairIds(build(x, y), build(y, x), full, prompt_cut, responses_cut)


def tokenize_pairwise(
    dataset: Dataset | IterableDataset,
    tokenizer,
    max_length: int | None,
    too_long: str = "truncate",
    num_proc: int | None = None,
    name: str = "dataset",
) -> tuple[Dataset | IterableDataset, RowLengthReport]:
    """
    Validates preference rows and tokenizes each pair into both orders: `ab_ids`, `ba_ids`, `label` (P(A ≻ B) of
    `ab_ids`, a float; 1 without a `label` column) and `length` (tokens of one order).

    Args:
        dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]): text preference rows (module docstring). A
            stream is validated and tokenized lazily, row by row as it is read (`data.streaming`).
        tokenizer: the pairwise model's tokenizer.
        max_length (`int` or `None`): longest sequence kept as is.
        too_long (`str`): `"truncate"` (the prompt's start cut; a pair whose responses do not fit is dropped),
            `"drop"` or `"error"`.
        num_proc (`int`, *optional*): processes for `Dataset.map` (not used for a stream).
        name (`str`): dataset name used in messages.

    Returns:
        `tuple[Dataset | IterableDataset, RowLengthReport]`: the tokenized pairs and what happened to over-long ones
        (logged; for a stream, a [`StreamLengthReport`] counting the pairs read so far).
    """
    check_too_long(too_long)
    dataset = rename_legacy_columns(dataset)
    streaming = isinstance(dataset, IterableDataset)
    columns = column_names(dataset)
    if streaming:
        fmt = detect_preference_format(columns, first_row(dataset, name))
        check_pairwise_format(fmt, columns)
    else:
        fmt = validate_pairwise_rows(dataset)

    def encode(example):
        prompt, chosen, rejected = pair_texts(example, fmt)
        ids = encode_pair_orders(tokenizer, prompt, chosen, rejected, max_length if too_long == "truncate" else None)
        label = float(example["label"]) if example.get("label") is not None else 1.0
        return {
            "ab_ids": ids.ab,
            "ba_ids": ids.ba,
            "label": label,
            "length": len(ids.ab),
            "full_length": ids.full_length,
        }

    if streaming:

        def encode_row(example, row):
            try:
                check_preference_row(row, example, fmt)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
            return encode(example)

        return tokenize_stream(dataset, encode_row, columns, max_length, too_long, name, _TRUNCATION, "pairs")
    tokenized = dataset.map(encode, remove_columns=columns, num_proc=num_proc, desc=f"Tokenizing {name}")
    return apply_length_policy(
        tokenized, len(dataset), max_length, too_long, name, truncation=_TRUNCATION, unit="pairs"
    )


@dataclass
class PairwiseCollator:
    """
    Pads tokenized pairwise rows on the right.

    Returns `input_ids` and `attention_mask` of shape `(2 * batch, seq_len)`: the (A, B) orders first, then the
    (B, A) orders of the same pairs, and `label` of shape `(batch,)`, P(A ≻ B) of the first half.

    Args:
        pad_token_id (`int`): id used to pad `input_ids`.
        pad_to_multiple_of (`int`, *optional*): pad `seq_len` to a multiple of this value.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences = [example["ab_ids"] for example in examples] + [example["ba_ids"] for example in examples]
        return {
            "input_ids": pad_right(sequences, self.pad_token_id, self.pad_to_multiple_of),
            "attention_mask": pad_right([[1] * len(s) for s in sequences], 0, self.pad_to_multiple_of),
            "label": torch.tensor([float(example["label"]) for example in examples], dtype=torch.float),
        }
