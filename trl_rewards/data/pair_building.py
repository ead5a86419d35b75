"""Preference pairs built from a policy's own samples: the selection rules of `trl-rewards make-pairs`.

Two recipes, both writing TRL's preference format (`prompt`, `chosen`, `rejected`; conversational when the prompt
is a list of messages, then each side is a one-message assistant turn), which `DPOTrainer` and our BT trainer read:

- **best vs worst** (Self-Rewarding Language Models, Yuan et al. 2024): N samples of a prompt are scored by a reward
  function; the highest-scored sample is `chosen` and the lowest `rejected`. Samples without a score (`None`, NaN)
  or with empty text are left out. Among equal top (or bottom) scores the first sample wins, so a seed gives one
  file. No pair is kept when fewer than two samples are scored, when the best and worst scores are equal (the paper
  discards such prompts: there is no preference to learn), when the gap is below `min_gap`, or when the two texts
  are identical (our validator would refuse the pair). Each row records `score_chosen` and `score_rejected`.
- **SPIN** (Self-Play Fine-Tuning, Chen et al. 2024): the dataset's reference answer is `chosen` and the policy's
  own sample `rejected`; a sample that is empty or equal to the reference gives no pair.

Everything here takes the scores and texts already computed (no model), so each rule is checked by hand in
`tests/data/test_pair_building.py`; generation and scoring live in `scripts/make_pairs.py`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

# Why a prompt gave no pair (the keys of `PairCounts`), in the order the rules are applied.
SKIP_REASONS = ("unscored", "tie", "small_gap", "identical", "empty_sample")


def completion_text(value: Any) -> str:
    """The text of a completion: a string, or the contents of a list of messages joined."""
    if isinstance(value, str):
        return value
    return "".join(str(message.get("content") or "") for message in value)


def _usable(score: Any) -> bool:
    return score is not None and not (isinstance(score, float) and math.isnan(score))


def as_completion(prompt: Any, text: str) -> str | list[dict[str, str]]:
    """`text` in the prompt's format: a string for a text prompt, one assistant message for a conversation."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def select_best_worst(
    completions: Sequence[Any], scores: Sequence[float | None], min_gap: float = 0.0
) -> tuple[int, int] | str:
    """
    The indices `(best, worst)` of the pair kept from one prompt's samples, or the reason none is kept.

    Args:
        completions (`Sequence`): the N samples (strings or message lists).
        scores (`Sequence[float | None]`): their rewards; `None` or NaN means "no score".
        min_gap (`float`, *optional*, defaults to `0.0`): the smallest `score[best] - score[worst]` kept; a gap of 0
            is never kept, whatever `min_gap`.

    Returns:
        `tuple[int, int]` or `str`: the pair's indices, or one of `"unscored"` (fewer than two scored, non-empty
        samples), `"tie"`, `"small_gap"`, `"identical"` (see [`SKIP_REASONS`]).
    """
    if len(completions) != len(scores):
        raise ValueError(f"got {len(completions)} completions but {len(scores)} scores")
    if min_gap < 0:
        raise ValueError(f"min_gap must be >= 0, got {min_gap}")
    candidates = [
        i
        for i, (c, s) in enumerate(zip(completions, scores, strict=True))
        if _usable(s) and completion_text(c).strip()
    ]
    if len(candidates) < 2:
        return "unscored"
    best = max(candidates, key=lambda i: (scores[i], -i))  # the first of equal top scores
    worst = min(candidates, key=lambda i: (scores[i], i))  # the first of equal bottom scores
    gap = scores[best] - scores[worst]
    if gap <= 0:
        return "tie"
    if gap < min_gap:
        return "small_gap"
    if completion_text(completions[best]).strip() == completion_text(completions[worst]).strip():
        return "identical"
    return best, worst


class PairCounts(Counter):
    """How many prompts gave a pair (`"kept"`) and why the others did not (one key of [`SKIP_REASONS`] each)."""

    @property
    def skipped(self) -> int:
        return sum(self[reason] for reason in SKIP_REASONS)

    def summary(self) -> str:
        reasons = ", ".join(f"{reason} {self[reason]}" for reason in SKIP_REASONS if self[reason])
        return f"kept {self['kept']} pairs, skipped {self.skipped} prompts" + (f" ({reasons})" if reasons else "")


def best_worst_pairs(
    prompts: Sequence[Any],
    completions: Sequence[Sequence[Any]],
    scores: Sequence[Sequence[float | None]],
    min_gap: float = 0.0,
) -> tuple[list[dict[str, Any]], PairCounts]:
    """
    Self-rewarding pairs: for each prompt, its best- and worst-scored samples (see [`select_best_worst`]).

    Args:
        prompts (`Sequence`): one prompt per row (text or messages).
        completions (`Sequence[Sequence]`): the samples of each prompt (texts; wrapped as assistant messages for a
            conversational prompt).
        scores (`Sequence[Sequence[float | None]]`): their rewards, same shape as `completions`.
        min_gap (`float`, *optional*, defaults to `0.0`): see [`select_best_worst`].

    Returns:
        `(rows, counts)`: rows `{"prompt", "chosen", "rejected", "score_chosen", "score_rejected"}` in prompt order,
        and a [`PairCounts`].
    """
    if not len(prompts) == len(completions) == len(scores):
        raise ValueError(
            f"got {len(prompts)} prompts, {len(completions)} sample groups and {len(scores)} score groups"
        )
    rows, counts = [], PairCounts()
    for i, (prompt, samples, values) in enumerate(zip(prompts, completions, scores, strict=True)):
        try:
            picked = select_best_worst(samples, values, min_gap)
        except ValueError as error:
            raise ValueError(f"row {i}: {error}") from error
        if isinstance(picked, str):
            counts[picked] += 1
            continue
        best, worst = picked
        rows.append(
            {
                "prompt": prompt,
                "chosen": as_completion(prompt, completion_text(samples[best])),
                "rejected": as_completion(prompt, completion_text(samples[worst])),
                "score_chosen": float(values[best]),
                "score_rejected": float(values[worst]),
            }
        )
        counts["kept"] += 1
    return rows, counts


def spin_pairs(
    prompts: Sequence[Any], references: Sequence[Any], samples: Sequence[Sequence[Any]]
) -> tuple[list[dict[str, Any]], PairCounts]:
    """
    SPIN pairs: the reference answer is `chosen`, each of the policy's samples of the prompt a `rejected`.

    Args:
        prompts (`Sequence`): one prompt per row (text or messages).
        references (`Sequence`): the reference answer of each row (text, or messages whose contents are joined).
        samples (`Sequence[Sequence]`): the policy's samples of each prompt (usually one).

    Returns:
        `(rows, counts)`: rows `{"prompt", "chosen", "rejected"}`, one per usable sample; a sample that is empty
        (`"empty_sample"`) or equal to the reference (`"identical"`) is counted instead.
    """
    if not len(prompts) == len(references) == len(samples):
        raise ValueError(f"got {len(prompts)} prompts, {len(references)} references and {len(samples)} sample groups")
    rows, counts = [], PairCounts()
    for prompt, reference, group in zip(prompts, references, samples, strict=True):
        chosen = completion_text(reference)
        for sample in group:
            text = completion_text(sample)
            if not text.strip():
                counts["empty_sample"] += 1
            elif text.strip() == chosen.strip():
                counts["identical"] += 1
            else:
                rows.append(
                    {
                        "prompt": prompt,
                        "chosen": as_completion(prompt, chosen),
                        "rejected": as_completion(prompt, text),
                    }
                )
                counts["kept"] += 1
    return rows, counts


def check_prompt_rows(rows: Sequence[dict[str, Any]], prompt_column: str, reference_column: str | None = None):
    """
    Raises `ValueError` naming the row and the field for a prompt that is neither non-empty text nor a list of
    `{"role", "content"}` messages, or a reference (SPIN) that is not non-empty text (or messages).
    """
    for i, row in enumerate(rows):
        if prompt_column not in row:
            raise ValueError(f"row {i}: no {prompt_column!r} column; columns are {sorted(row)}")
        prompt = row[prompt_column]
        if isinstance(prompt, list):
            if not prompt or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
                raise ValueError(f'row {i}: "{prompt_column}" must be text or a non-empty list of {{role, content}}')
        elif not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f'row {i}: "{prompt_column}" must be non-empty text or messages, got {prompt!r}')
        if reference_column is None:
            continue
        if reference_column not in row:
            raise ValueError(f"row {i}: no {reference_column!r} column (the reference answer); columns: {sorted(row)}")
        reference = row[reference_column]
        if isinstance(reference, list) and all(isinstance(m, dict) for m in reference):
            reference = completion_text(reference)
        if not isinstance(reference, str) or not reference.strip():
            raise ValueError(
                f'row {i}: "{reference_column}" must be a non-empty answer, got {row[reference_column]!r}'
            )
