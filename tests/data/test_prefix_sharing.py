"""Packing for prefix sharing (`data.prefix_sharing`): layout, read positions and the block mask, on literal ids."""

import pytest
import torch

from trl_rewards.data.prefix_sharing import (
    PrefixSharingCollator,
    block_attention_mask,
    collate_packed,
    common_prefix_length,
    pack_shared_prefix,
    packed_length,
    read_index,
)

PAD = 0


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5, 6], [7, 6]]) == 0
    assert common_prefix_length([[5, 6]]) == 2
    assert common_prefix_length([]) == 0


def test_read_index_mirrors_the_sequence_classification_head():
    """The head reads the rightmost token that is not the pad token: with pad == eos (id 2 here) a trailing eos is
    skipped; without a pad token the last token; a sequence of pad tokens only reads position 0."""
    assert read_index([1, 7, 8, 2], pad_token_id=0) == 3
    assert read_index([1, 7, 8, 2], pad_token_id=2) == 2
    assert read_index([1, 7, 8, 2], pad_token_id=None) == 3
    assert read_index([2, 2], pad_token_id=2) == 0


def test_pack_two_branches():
    """prompt [1, 5, 6], chosen adds [7, 8, 2], rejected adds [9, 2]: prefix once, positions restart after it."""
    row = pack_shared_prefix([[1, 5, 6, 7, 8, 2], [1, 5, 6, 9, 2]], PAD)
    assert row.input_ids == [1, 5, 6, 7, 8, 2, 9, 2]
    assert row.position_ids == [0, 1, 2, 3, 4, 5, 3, 4]
    assert row.segment_ids == [0, 0, 0, 1, 1, 1, 2, 2]
    assert row.reward_index == [5, 7]
    assert row.prefix_length == 3
    assert len(row) == packed_length([[1, 5, 6, 7, 8, 2], [1, 5, 6, 9, 2]]) == 8


def test_pack_empty_prefix_and_sequence_equal_to_prefix():
    row = pack_shared_prefix([[3, 4], [5]], PAD)  # nothing shared: both branches start at position 0
    assert row.input_ids == [3, 4, 5] and row.position_ids == [0, 1, 0] and row.reward_index == [1, 2]
    row = pack_shared_prefix([[1, 2], [1, 2, 3]], PAD)  # the first sequence is the prefix: read inside it
    assert row.input_ids == [1, 2, 3] and row.segment_ids == [0, 0, 2] and row.reward_index == [1, 2]


def test_pack_rejects_empty_input():
    with pytest.raises(ValueError, match="no empty sequence"):
        pack_shared_prefix([[1], []], PAD)
    with pytest.raises(ValueError, match="at least one sequence"):
        pack_shared_prefix([], PAD)


def test_block_attention_mask_literal():
    """Segments [0, 0, 1, 1, 2, -1]: prefix causal; branch 1 sees the prefix and itself; branch 2 sees the prefix,
    not branch 1; the padding position sees only itself."""
    mask = block_attention_mask(torch.tensor([[0, 0, 1, 1, 2, -1]]))
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert mask.shape == (1, 1, 6, 6)
    assert torch.equal(mask[0, 0], expected)


def test_collate_pads_right():
    rows = [pack_shared_prefix([[1, 5, 7], [1, 5, 8, 9]], PAD), pack_shared_prefix([[1, 3], [1, 4]], PAD)]
    batch = collate_packed(rows, PAD, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[1, 5, 7, 8, 9, 0, 0, 0], [1, 3, 4, 0, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 2, 3, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0]]
    assert batch["segment_ids"].tolist() == [[0, 0, 1, 2, 2, -1, -1, -1], [0, 1, 2, -1, -1, -1, -1, -1]]
    assert batch["attention_mask"].sum(-1).tolist() == [5, 3]
    assert batch["reward_index"].tolist() == [[2, 4], [1, 2]]


def test_preference_collator_keeps_margin_and_label():
    collator = PrefixSharingCollator(pad_token_id=PAD)
    batch = collator(
        [
            {"chosen_ids": [1, 5, 7], "rejected_ids": [1, 5, 8], "margin": 0.5, "label": 1.0},
            {"chosen_ids": [1, 6], "rejected_ids": [1, 9, 9], "margin": 0.0, "label": 0.25},
        ]
    )
    assert batch["reward_index"].tolist() == [[2, 3], [1, 3]]
    assert batch["margin"].tolist() == [0.5, 0.0] and batch["label"].tolist() == [1.0, 0.25]
