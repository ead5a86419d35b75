"""Scoring completions that share a prompt (GRPO's groups) with the prompt encoded once, for decoder reward models.

[`shared_prefix_outputs`] is the machinery; [`score_shared_prefix`] (for [`RewardScorer`] with `prefix_sharing=True`,
one reward per sequence) and the PRM step scorer (`inference.step_scoring`, one output per step label) use it. Each
token sequence comes with a group key (its prompt). Sequences with the same key are cut into chunks of at most
`batch_size` completions; a chunk's common prefix (the longest common prefix of its token ids, at most all but the
last token of its shortest sequence) runs through the model once, and its KV cache, repeated once per completion,
serves every completion's remaining tokens, whose position ids continue the prefix. Each completion thus attends to
exactly the tokens it attends to alone, and each per-token output equals that of the sequence alone (up to float
summation order); an output wanted inside the shared prefix is read from the prefix pass. A sequence-classification
reward is read where a `*ForSequenceClassification` head reads it alone (`data.prefix_sharing.read_index`), from the
head's per-token output captured in either pass.

When it pays: `G` completions of `c` tokens after a `p`-token prompt cost `p + G c` token positions instead of
`G (p + c)`; each completion token still attends to the `p + c` tokens it sees alone. A group of one, or completions
that differ from their first token, gain nothing (they are scored alone, at the cost of a second, tiny pass).
Training packs pairs in one row instead (`data.prefix_sharing`): a KV cache would not be differentiated through by
every wrapper (DeepSpeed ZeRO-3, gradient checkpointing), a single forward pass is.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..data.encoding import pad_right
from ..data.prefix_sharing import (
    captured_head_output,
    check_packing_support,
    common_prefix_length,
    group_indices,
    read_index,
)
from ..modeling import is_decoder_model

TokenOutputs = Callable[[dict], torch.Tensor]
"""Runs a model on keyword arguments and returns its per-token outputs, `(batch, T, d)`."""


def split_group(lengths: Sequence[int], members: list[int], max_rows: int, max_tokens: int | None) -> list[list[int]]:
    """`members` (indices into `lengths`) cut into consecutive chunks of at most `max_rows` sequences whose padded size
    `rows × longest` stays within `max_tokens` (a sequence over the budget is a chunk of its own)."""
    chunks, current, longest = [], [], 0
    for i in members:
        wider = max(longest, lengths[i])
        if current and (
            len(current) == max_rows or (max_tokens is not None and (len(current) + 1) * wider > max_tokens)
        ):
            chunks.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        longest = wider
    return chunks + [current] if current else chunks


@dataclass
class _Chunk:
    members: list[int]
    prefix: list[int]  # shared tokens, run once (may be empty: then the chunk is scored without a cache)


def _chunk(sequences: Sequence[Sequence[int]], members: list[int]) -> _Chunk:
    seqs = [sequences[i] for i in members]
    # at least one token per completion after the prefix, so that every completion row has an input
    p = min(common_prefix_length(seqs), min(len(s) for s in seqs) - 1)
    return _Chunk(members, list(seqs[0][:p]))


def _unwrapped(model):
    while hasattr(model, "get_base_model") or hasattr(model, "module"):
        model = model.get_base_model() if hasattr(model, "get_base_model") else model.module
    return model


def _cache_kwarg(model) -> str:
    # transformers >= 5.2x renamed `past_key_values` to `cache` (the old name warns)
    return "cache" if "cache" in inspect.signature(type(_unwrapped(model)).forward).parameters else "past_key_values"


def _new_cache(model) -> DynamicCache:
    # passed in and filled in place: a token classifier's output does not return the cache it built
    config = _unwrapped(model).config
    return DynamicCache(config=config.get_text_config(decoder=True))


def tail_batches(lengths: Sequence[int], ratio: float = 2 / 3) -> list[list[int]]:
    """
    The rows of a tail pass (indices into `lengths`, their token counts after the prefix), longest first, cut where a
    row is shorter than `ratio` times its batch's longest: a group that mixes full and cut completions is then not
    padded to its longest one (the plain scorer pads only to completions of similar length); each batch reuses the
    same prefix cache.
    """
    order = sorted(range(len(lengths)), key=lambda r: -lengths[r])
    batches: list[list[int]] = []
    for r in order:
        if batches and lengths[r] >= ratio * lengths[batches[-1][0]]:
            batches[-1].append(r)
        else:
            batches.append([r])
    return batches


@torch.no_grad()  # outputs are detached anyway; and the prefix cache is copied per tail batch
def _run_chunks(
    model,
    token_outputs: TokenOutputs,
    chunks: list[_Chunk],
    sequences,
    positions,
    pad_token_id: int,
    device,
    out: list,
) -> None:
    """One prefix pass over the chunks' prefixes (right-padded), then passes over the completions' remaining tokens
    with the prefix cache, completions of similar length together ([`tail_batches`]); writes each sequence's outputs
    at its `positions` into `out`."""
    n_prefix = [len(c.prefix) for c in chunks]
    rows = [(c_index, i) for c_index, c in enumerate(chunks) for i in c.members]
    tails = [sequences[i][n_prefix[c] :] for c, i in rows]
    prefix_values = cache = prefix_mask = None
    if min(n_prefix) > 0:  # a micro-batch holds chunks that all have a prefix, or none that has one
        prefix_ids = pad_right([c.prefix for c in chunks], pad_token_id).to(device)
        prefix_mask = pad_right([[1] * len(c.prefix) for c in chunks], 0).to(device)
        cache = _new_cache(model)
        prefix_values = token_outputs(
            {"input_ids": prefix_ids, "attention_mask": prefix_mask, _cache_kwarg(model): cache, "use_cache": True}
        )
        prefix_values = prefix_values.detach().double().cpu()
    batches = tail_batches([len(t) for t in tails])
    tail_values: list = [None] * len(rows)
    for batch in batches:
        tail_ids = pad_right([tails[r] for r in batch], pad_token_id).to(device)
        tail_mask = pad_right([[1] * len(tails[r]) for r in batch], 0).to(device)
        offsets = torch.tensor([n_prefix[rows[r][0]] for r in batch], device=device).unsqueeze(1)
        kwargs = {"position_ids": offsets + torch.arange(tail_ids.shape[1], device=device), "use_cache": False}
        if cache is not None:
            chunk_of_row = torch.tensor([rows[r][0] for r in batch], device=device)
            # one copy of its chunk's prefix per completion row (the pass appends to the cache, so each batch but
            # the last gets its own copy)
            batch_cache = copy.deepcopy(cache) if batch is not batches[-1] else cache
            batch_cache.reorder_cache(chunk_of_row)
            kwargs.update({_cache_kwarg(model): batch_cache, "use_cache": True})
            tail_mask = torch.cat([prefix_mask[chunk_of_row], tail_mask], dim=1)
        values = token_outputs({"input_ids": tail_ids, "attention_mask": tail_mask, **kwargs}).detach().double().cpu()
        for k, r in enumerate(batch):
            tail_values[r] = values[k]
    for row, (c, i) in enumerate(rows):
        n = n_prefix[c]
        values = [prefix_values[c, at] if at < n else tail_values[row][at - n] for at in positions[i]]
        out[i] = torch.stack(values) if values else tail_values[row].new_zeros((0, tail_values[row].shape[-1]))


def shared_prefix_outputs(
    model,
    token_outputs: TokenOutputs,
    sequences: Sequence[Sequence[int]],
    keys: Sequence[Hashable],
    positions: Sequence[Sequence[int]],
    pad_token_id: int,
    device: torch.device,
    batch_size: int = 16,
    max_tokens_per_batch: int | None = None,
) -> list[torch.Tensor]:
    """
    Per-token outputs of a decoder at chosen positions of token `sequences`; sequences with equal `keys` (completions
    of one prompt) share one pass over their common prefix, whose KV cache serves every completion's remaining tokens.

    Args:
        model: the decoder (plain, PEFT), in eval mode, with `"sdpa"` or `"eager"` attention; used for its cache
            layout and the name of the cache argument.
        token_outputs (`Callable[[dict], torch.Tensor]`): runs the model on the keyword arguments it gets
            (`input_ids`, `attention_mask`, `position_ids` for the completion pass, the cache and `use_cache`) and
            returns its per-token outputs `(batch, T, d)` (a head's output, or logits).
        sequences (`Sequence[Sequence[int]]`): the non-empty token ids of each `(prompt, completion)`.
        keys (`Sequence[Hashable]`): one group key per sequence; unique keys share nothing.
        positions (`Sequence[Sequence[int]]`): per sequence, the indices (into it) whose outputs are wanted.
        pad_token_id (`int`): the padding token.
        device (`torch.device`): where the model runs.
        batch_size (`int`): most completions per forward pass (a larger group is cut into chunks, each running its
            prefix once).
        max_tokens_per_batch (`int`, *optional*): most padded tokens (`rows × longest sequence`) per forward pass.

    Returns:
        `list[torch.Tensor]`: per sequence, in input order, its outputs at `positions[i]`, `(len(positions[i]), d)`
        float64 on the CPU.
    """
    if not len(keys) == len(sequences) == len(positions):
        raise ValueError(f"got {len(sequences)} sequences but {len(keys)} group keys and {len(positions)} positions")
    if any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence needs at least one token")
    for i, (sequence, wanted) in enumerate(zip(sequences, positions, strict=True)):
        if any(not 0 <= at < len(sequence) for at in wanted):
            raise ValueError(f"sequence {i}: positions {list(wanted)} fall outside its {len(sequence)} tokens")
    check_packing_support(model)
    lengths = [len(s) for s in sequences]
    chunks = [
        _chunk(sequences, members)
        for group in group_indices(keys)
        for members in split_group(lengths, group, batch_size, max_tokens_per_batch)
    ]
    # micro-batches of chunks, the longest together; the chunks without a shared prefix run apart (no cache)
    chunks.sort(key=lambda c: (len(c.prefix) > 0, max(lengths[i] for i in c.members)))
    out: list = [None] * len(sequences)
    batch: list[_Chunk] = []
    for chunk in chunks:
        rows = sum(len(c.members) for c in batch) + len(chunk.members)
        longest = max(lengths[i] for c in batch + [chunk] for i in c.members)
        over_tokens = max_tokens_per_batch is not None and rows * longest > max_tokens_per_batch
        if batch and (rows > batch_size or over_tokens or (len(batch[0].prefix) > 0) != (len(chunk.prefix) > 0)):
            _run_chunks(model, token_outputs, batch, sequences, positions, pad_token_id, device, out)
            batch = []
        batch.append(chunk)
    if batch:
        _run_chunks(model, token_outputs, batch, sequences, positions, pad_token_id, device, out)
    return out


def score_shared_prefix(
    model,
    sequences: Sequence[Sequence[int]],
    keys: Sequence[Hashable],
    pad_token_id: int,
    device: torch.device,
    batch_size: int = 16,
    max_tokens_per_batch: int | None = None,
) -> torch.Tensor:
    """
    Raw scores of token `sequences` from a decoder sequence-classification model; sequences with equal `keys`
    (completions of one prompt) share one pass over their common prefix ([`shared_prefix_outputs`] reading the
    `score` head's per-token output where the head reads a sequence alone).

    Args:
        model: the reward model, in eval mode, with `"sdpa"` or `"eager"` attention.
        sequences (`Sequence[Sequence[int]]`): the non-empty token ids of each `(prompt, completion)`.
        keys (`Sequence[Hashable]`): one group key per sequence; unique keys share nothing.
        pad_token_id (`int`): the model's pad token (padding and read positions).
        device (`torch.device`): where the model runs.
        batch_size (`int`): most completions per forward pass.
        max_tokens_per_batch (`int`, *optional*): most padded tokens (`rows × longest sequence`) per forward pass.

    Returns:
        `torch.Tensor`: `(len(sequences),)` float64 scores, in input order.
    """
    if len(keys) != len(sequences):
        raise ValueError(f"got {len(sequences)} sequences but {len(keys)} group keys")
    if any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence needs at least one token")

    def head_outputs(kwargs: dict) -> torch.Tensor:
        with captured_head_output(model) as captured:
            model(**kwargs)
        return captured[-1]

    positions = [[read_index(s, pad_token_id)] for s in sequences]
    outputs = shared_prefix_outputs(
        model, head_outputs, sequences, keys, positions, pad_token_id, device, batch_size, max_tokens_per_batch
    )
    return torch.stack([o[0, 0] for o in outputs]) if outputs else torch.empty(0, dtype=torch.float64)


def check_shared_prefix_model(model) -> None:
    """Raises a `ValueError` unless `model` can share a prefix exactly: a causal (decoder) model whose attention
    takes a custom mask (`"sdpa"` or `"eager"`, see `check_packing_support`)."""
    if not is_decoder_model(model):
        raise ValueError(
            "prefix_sharing=True needs a causal (decoder) reward model: in a bidirectional encoder the prompt's "
            "encoding depends on the completion after it, so it cannot be computed once per group"
        )
    check_packing_support(model)
