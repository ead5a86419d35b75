"""The one micro-batcher of the scorers: length-sorted batches bounded by a row count and a padded-token budget."""

from __future__ import annotations

from collections.abc import Sequence


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_tokens_per_batch: int | None = None
) -> list[list[int]]:
    """
    Groups row indices into micro-batches of rows of similar length, so little padding is computed.

    Rows are sorted by length (ties in input order) and cut into consecutive batches of at most `batch_size` rows
    whose padded size, `rows × longest`, stays within `max_tokens_per_batch` (a row longer than the budget runs
    alone). Scores do not depend on this grouping: each scorer pads so that no real token moves.

    Args:
        lengths (`Sequence[int]`): token count of each row.
        batch_size (`int`): most rows per batch, >= 1.
        max_tokens_per_batch (`int`, *optional*): most padded tokens per batch.

    Returns:
        `list[list[int]]`: row indices, each batch sorted by increasing length.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        longest = lengths[i]  # sorted ascending: the newest row is the longest
        over_budget = max_tokens_per_batch is not None and (len(current) + 1) * longest > max_tokens_per_batch
        if current and (len(current) == batch_size or over_budget):
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches
