"""The one micro-batcher of the scorers: rows grouped by length, within a row count and a padded-token budget."""

import pytest

from trl_rewards.inference.batching import length_sorted_batches


def test_token_budget_splits_long_batches():
    """A 60-token budget with sequences of 5..80 tokens: no micro-batch exceeds it unless a single sequence does."""
    lengths = [5, 80, 12, 12, 30, 7, 29]
    batches = length_sorted_batches(lengths, batch_size=8, max_tokens_per_batch=60)
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 60
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


def test_batches_by_hand():
    """Sorted lengths 5(0) 7(5) 12(2) 12(3) 29(6) 30(4) 80(1). With batch_size=3 and a budget of 40: [0,5,2]
    (3*12=36), then 3 alone (adding 29 gives 2*29=58 > 40), [6] (2*30 > 40), [4], [1] (80 alone)."""
    lengths = [5, 80, 12, 12, 30, 7, 29]
    assert length_sorted_batches(lengths, 3, 40) == [[0, 5, 2], [3], [6], [4], [1]]
    assert length_sorted_batches(lengths, 3) == [[0, 5, 2], [3, 6, 4], [1]]
    assert length_sorted_batches([], 4) == []


def test_rejects_a_batch_size_below_one():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_sorted_batches([3], 0)
