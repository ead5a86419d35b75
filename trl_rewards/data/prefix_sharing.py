"""Prefix sharing for causal (decoder) reward models: sequences that start alike are encoded with their common prefix
once.

A preference pair `prompt + chosen` / `prompt + rejected`, or GRPO's `G` completions of one prompt, repeat the same
leading tokens. In a causal model the hidden state of a token depends only on the tokens before it, so the shared
prefix has the same hidden states in every sequence. [`pack_shared_prefix`] lays the sequences out as one row,
`prefix + branch_1 + ... + branch_k`, where `branch_i` is what sequence `i` adds to the longest common prefix (of the
token ids, so no prompt boundary is needed and a common start of the completions is shared too). With
[`block_attention_mask`] every branch token sees the prefix and the earlier tokens of its own branch only, and its
position id continues from the prefix as in the unpacked sequence: each branch's hidden states, hence its reward,
equal those of its sequence encoded alone (up to float summation order). [`packed_rewards`] runs the model on such a
batch and reads each branch's reward at the token a sequence-classification head reads when the sequence is alone
(the rightmost token that is not the pad token).

Bidirectional encoders cannot share a prefix exactly (a prompt token's state depends on the completion after it);
they are never packed. What it saves: a pair of lengths `p + c` and `p + r` costs `p + c + r` tokens packed instead
of `2p + c + r`; `G` completions cost `p + Σ c_i` instead of `G p + Σ c_i`. The attention of a packed row is
computed densely (masked, `T^2` for a row of `T` tokens), so packing many long branches in one row pays less than
the token count suggests.

Layout of one packed row (shapes without the batch dimension, `T` = packed length):

- `input_ids` `(T,)`: the prefix, then each branch;
- `position_ids` `(T,)`: `0..p-1`, then each branch `p..p+c_i-1`;
- `segment_ids` `(T,)`: 0 for the prefix, `i` (1-based) for branch `i`, -1 for padding (added by the collator);
- `reward_index` `(k,)`: where branch `i`'s reward is read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

PAD_SEGMENT = -1
SUPPORTED_ATTENTION = ("sdpa", "eager")
HEAD_NAMES = ("score",)


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of `sequences` (0 for none; the whole sequence for one)."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    n = 0
    while n < shortest and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


def group_indices(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices of equal keys, groups in order of first appearance (`["a", "b", "a"]` → `[[0, 2], [1]]`)."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def read_index(sequence: Sequence[int], pad_token_id: int | None) -> int:
    """Where a sequence-classification head reads the reward of `sequence` alone: the rightmost token that is not
    `pad_token_id` (the last token when there is no pad token; 0 when every token is the pad token), as transformers'
    `*ForSequenceClassification` does. A pad token equal to eos thus moves the read before a trailing eos."""
    if pad_token_id is None:
        return len(sequence) - 1
    for i in range(len(sequence) - 1, -1, -1):
        if sequence[i] != pad_token_id:
            return i
    return 0


@dataclass
class PackedRow:
    """One packed row (see the module docstring): `input_ids`, `position_ids`, `segment_ids` of length `T`,
    `reward_index` of length `k` (one per branch), and `prefix_length`."""

    input_ids: list[int]
    position_ids: list[int]
    segment_ids: list[int]
    reward_index: list[int]
    prefix_length: int

    def __len__(self) -> int:
        return len(self.input_ids)


def pack_shared_prefix(sequences: Sequence[Sequence[int]], pad_token_id: int | None) -> PackedRow:
    """
    Packs `k` token sequences into one row: their longest common prefix once, then what each adds to it.

    Args:
        sequences (`Sequence[Sequence[int]]`): `k >= 1` non-empty token sequences (e.g. `prompt + chosen`,
            `prompt + rejected`).
        pad_token_id (`int` or `None`): the model's pad token, for the read position ([`read_index`]).

    Returns:
        [`PackedRow`]: `T = p + Σ (len_i - p)` tokens for a common prefix of `p` tokens. A sequence equal to the
        prefix (an empty branch) has its reward read inside the prefix.
    """
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pack_shared_prefix needs at least one sequence and no empty sequence")
    p = common_prefix_length(sequences)
    input_ids, position_ids = list(sequences[0][:p]), list(range(p))
    segment_ids, reward_index = [0] * p, []
    for branch, sequence in enumerate(sequences, start=1):
        start = len(input_ids)
        input_ids += sequence[p:]
        position_ids += range(p, len(sequence))
        segment_ids += [branch] * (len(sequence) - p)
        i = read_index(sequence, pad_token_id)
        reward_index.append(i if i < p else start + i - p)
    return PackedRow(input_ids, position_ids, segment_ids, reward_index, p)


def packed_length(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens of the packed row of `sequences`: `Σ len_i - (k - 1) p` (the length-grouping key)."""
    return sum(len(s) for s in sequences) - (len(sequences) - 1) * common_prefix_length(sequences)


def collate_packed(rows: Sequence[PackedRow], pad_token_id: int, pad_to_multiple_of: int | None = None) -> dict:
    """
    Right-pads packed rows into tensors.

    Returns:
        `dict`: `input_ids`, `position_ids` (0 at padding), `segment_ids` (-1 at padding), `attention_mask` (1 at
        real tokens, for token counts; the model gets [`block_attention_mask`]), each `(batch, T)` long; and when
        every row has the same number of branches `k`, `reward_index` `(batch, k)` long.
    """
    width = max(len(row) for row in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    shape = (len(rows), width)
    out = {
        "input_ids": torch.full(shape, pad_token_id, dtype=torch.long),
        "position_ids": torch.zeros(shape, dtype=torch.long),
        "segment_ids": torch.full(shape, PAD_SEGMENT, dtype=torch.long),
        "attention_mask": torch.zeros(shape, dtype=torch.long),
    }
    for r, row in enumerate(rows):
        n = len(row)
        out["input_ids"][r, :n] = torch.tensor(row.input_ids, dtype=torch.long)
        out["position_ids"][r, :n] = torch.tensor(row.position_ids, dtype=torch.long)
        out["segment_ids"][r, :n] = torch.tensor(row.segment_ids, dtype=torch.long)
        out["attention_mask"][r, :n] = 1
    if len({len(row.reward_index) for row in rows}) == 1:
        out["reward_index"] = torch.tensor([row.reward_index for row in rows], dtype=torch.long)
    return out


def block_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """
    The boolean attention mask of packed rows, `(batch, 1, T, T)` from `segment_ids` `(batch, T)`: query `q` sees key
    `k` when `k <= q` and `k` is in the prefix (segment 0) or in the segment of `q`. A padding position sees only
    itself (a fully masked row would make SDPA return NaN, and NaN times a zero gradient is still NaN).
    """
    q, k = segment_ids.unsqueeze(-1), segment_ids.unsqueeze(-2)
    width = segment_ids.shape[-1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    visible = causal & (k != PAD_SEGMENT) & (q != PAD_SEGMENT) & ((k == 0) | (k == q))
    diagonal = torch.eye(width, dtype=torch.bool, device=segment_ids.device)
    return (visible | (diagonal & (q == PAD_SEGMENT))).unsqueeze(1)


def _attention_implementation(model) -> str | None:
    while hasattr(model, "module"):  # DDP / DeepSpeed engine (whose own `config` is DeepSpeed's)
        model = model.module
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(config, "_attn_implementation", None)


def check_packing_support(model) -> None:
    """Raises a `ValueError` when the model's attention implementation cannot take a custom 4-D mask (flash
    attention kernels take no mask, only padding); `"sdpa"` and `"eager"` can."""
    implementation = _attention_implementation(model)
    if implementation not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"prefix sharing needs a custom 4-D attention mask, which attn_implementation={implementation!r} does not "
            f"take; load the model with attn_implementation in {list(SUPPORTED_ATTENTION)}, or disable prefix sharing"
        )


def model_attention_mask(mask: torch.Tensor, model, dtype: torch.dtype) -> torch.Tensor:
    """`mask` (boolean, True = attend) in the form the model's attention adds or applies: boolean for SDPA, an
    additive float mask of `dtype` (0 or its minimum) for eager attention."""
    check_packing_support(model)
    if _attention_implementation(model) == "sdpa":
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def _reward_head(model) -> torch.nn.Module:
    # the outermost `score` module: PEFT's ModulesToSaveWrapper when the head is trained with an adapter
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in HEAD_NAMES:
            return module
    raise ValueError(
        f"prefix sharing reads per-token rewards from a sequence-classification head named {HEAD_NAMES}; "
        f"{type(model).__name__} has none (decoder *ForSequenceClassification models have `score`)"
    )


@contextlib.contextmanager
def captured_head_output(model):
    """Within the block, every output of the model's `score` head, `(batch, T, 1)` per call (a list, in call order),
    is appended to the list this yields: the per-token rewards, where the model itself returns one pooled value per
    row. The model is still called whole (wrappers' hooks run)."""
    captured: list[Any] = []
    handle = _reward_head(model).register_forward_hook(lambda _module, _args, output: captured.append(output))
    try:
        yield captured
    finally:
        handle.remove()


def _compute_dtype(model) -> torch.dtype:
    while hasattr(model, "module"):  # DDP / DeepSpeed engine
        model = model.module
    dtype = model.get_input_embeddings().weight.dtype
    return dtype if dtype.is_floating_point else torch.float32


def packed_token_rewards(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """
    The reward head's output at every position of a packed batch ([`collate_packed`]), `(batch, T)`.

    The model (plain, PEFT, or wrapped by DDP/DeepSpeed: it is called whole, so every wrapper's hooks run) gets the
    packed `input_ids`, `position_ids` and [`block_attention_mask`]; the per-token output of its `score` head,
    `(batch, T, 1)`, is captured with a forward hook (the head's own pooled output, read at the row's last non-pad
    token, is not used).
    """
    mask = model_attention_mask(block_attention_mask(batch["segment_ids"]), model, _compute_dtype(model))
    with captured_head_output(model) as captured:
        model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False)
    return captured[-1].squeeze(-1)


def packed_rewards(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rewards of every branch of a packed batch, `(batch, k)`: [`packed_token_rewards`] read at `reward_index`."""
    token_rewards = packed_token_rewards(model, batch)
    return token_rewards.gather(1, batch["reward_index"].to(token_rewards.device))


@dataclass
class PrefixSharingCollator:
    """
    Packs preference rows (`chosen_ids`, `rejected_ids`, optional `margin` and `label`) as `prompt + chosen +
    rejected` ([`pack_shared_prefix`], [`collate_packed`]): `input_ids`, `position_ids`, `segment_ids`,
    `attention_mask` `(batch, T)`, `reward_index` `(batch, 2)` (chosen, rejected), `margin` / `label` `(batch,)`.

    Args:
        pad_token_id (`int`): the model's pad token (padding, and the read position of each side).
        pad_to_multiple_of (`int`, *optional*): pad `T` to a multiple of this value.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [pack_shared_prefix([e["chosen_ids"], e["rejected_ids"]], self.pad_token_id) for e in examples]
        output = collate_packed(rows, self.pad_token_id, self.pad_to_multiple_of)
        for name in ("margin", "label"):
            if name in examples[0]:
                output[name] = torch.tensor([float(e[name]) for e in examples], dtype=torch.float)
        return output


def group_outcomes(input_ids: Sequence[Sequence[int]], labels: Sequence[float], keys: Sequence[Hashable], k: int):
    """
    Outcome rows (one completion each) regrouped as packed-row examples: the rows with equal `keys` (their prompt),
    in order of first appearance, cut into consecutive groups of at most `k`.

    Returns:
        `list[dict]`: `{"sequences": [ids, ...], "labels": [float, ...], "length": packed length}` per group.
    """
    if not len(input_ids) == len(labels) == len(keys):
        raise ValueError(f"got {len(input_ids)} rows, {len(labels)} labels and {len(keys)} keys")
    out = []
    for members in group_indices(keys):
        for start in range(0, len(members), k):
            chunk = members[start : start + k]
            sequences = [list(input_ids[i]) for i in chunk]
            out.append(
                {
                    "sequences": sequences,
                    "labels": [float(labels[i]) for i in chunk],
                    "length": packed_length(sequences),
                }
            )
    return out


@dataclass
class PackedOutcomeCollator:
    """
    Packs grouped outcome examples ([`group_outcomes`]: `sequences`, `labels`), one packed row per example
    ([`pack_shared_prefix`], [`collate_packed`]): `input_ids`, `position_ids`, `segment_ids`, `attention_mask`
    `(batch, T)`; for the `n` completions of the batch, row by row, `completion_index` `(n, 2)` long (packed row,
    position where the reward is read) and `label` `(n,)` float.

    Args:
        pad_token_id (`int`): the model's pad token (padding, and the read position of each completion).
        pad_to_multiple_of (`int`, *optional*): pad `T` to a multiple of this value.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [pack_shared_prefix(e["sequences"], self.pad_token_id) for e in examples]
        output = collate_packed(rows, self.pad_token_id, self.pad_to_multiple_of)
        output.pop("reward_index", None)
        output["completion_index"] = torch.tensor(
            [[r, i] for r, row in enumerate(rows) for i in row.reward_index], dtype=torch.long
        )
        output["label"] = torch.tensor([float(y) for e in examples for y in e["labels"]], dtype=torch.float)
        return output
