"""The linear-interpolation check of weight averaging: the dev Bradley-Terry loss and accuracy along the straight path
`θ(α) = (1 - α) θ_a + α θ_b` between two reward models.

WARM (Ramé et al. 2024) rests on linear mode connectivity: reward models fine-tuned from one initialization stay in
one basin, so the loss along the path between two of them has no barrier, and the midpoint is often better than both
ends. A loss that rises in the middle says the members are not connected and their average is not a good model
(e.g. different initializations); a loss that falls supports averaging. The points are scored by the same
[`RewardScorer`] as any model (the α = 0 and α = 1 points are exactly the two members), so the figures compare with
`trl-rewards eval`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..inference.sequence_scoring import RewardScorer
from ..losses import bradley_terry_loss
from ..merge import load_members, mix_states
from .runner import evaluate_preferences

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def interpolation_check(
    model_a: str,
    model_b: str,
    dev_pairs,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    max_length: int | None = None,
    batch_size: int = 16,
    ties: str = "loss",
) -> list[dict[str, Any]]:
    """
    Scores the dev pairs with the reward models on the line between two members, `θ(α) = (1 - α) θ_a + α θ_b`.

    Args:
        model_a (`str`), model_b (`str`): reward-model folders, or LoRA adapter folders on one base (each merged into
            the base first, see [`average_reward_models`]); checked like the members of an average.
        dev_pairs ([`~datasets.Dataset`] or `list[dict]`): preference rows (`chosen`, `rejected`, optional `prompt`,
            optional soft `label`), as [`evaluate_preferences`] takes them.
        alphas (`Sequence[float]`, *optional*, defaults to `(0, 0.25, 0.5, 0.75, 1)`): points of the path, each in
            `[0, 1]` (0 is `model_a`, 1 is `model_b`).
        max_length (`int`, *optional*): truncation of the scorer (default: the model's position limit).
        batch_size (`int`, *optional*, defaults to `16`): sequences per forward pass.
        ties (`str`, *optional*, defaults to `"loss"`): tie policy of the accuracy.

    Returns:
        `list[dict]`: per α, `"alpha"`, `"loss"` (mean BT loss `-log σ(r_c - r_r)`, or its soft-label form with a
        `label` column), `"accuracy"`, `"ece"` and `"count"` (pairs scored).
    """
    alphas = [float(a) for a in alphas]
    if not alphas or any(not (math.isfinite(a) and 0.0 <= a <= 1.0) for a in alphas):
        raise ValueError(f"alphas must be numbers in [0, 1], got {alphas}")
    model, tokenizer, states = load_members([model_a, model_b])
    rows = []
    for alpha in alphas:
        model.load_state_dict(mix_states(states, [1.0 - alpha, alpha]))
        scorer = RewardScorer(model, tokenizer, batch_size=batch_size, max_length=max_length)
        report = evaluate_preferences(scorer, dev_pairs, ties=ties)
        scores = report["scores"]
        chosen = torch.tensor(scores["chosen"], dtype=torch.float64)
        rejected = torch.tensor(scores["rejected"], dtype=torch.float64)
        target = None if scores["label"] is None else torch.tensor(scores["label"], dtype=torch.float64)
        overall = report["overall"]
        rows.append(
            {
                "alpha": alpha,
                "loss": float(bradley_terry_loss(chosen, rejected, target=target)),
                "accuracy": overall["accuracy"],
                "ece": overall["ece"],
                "count": overall["count"],
            }
        )
    return rows


def format_interpolation(rows: list[dict[str, Any]]) -> str:
    """A markdown table of `interpolation_check`'s rows."""
    lines = ["| alpha | dev BT loss | accuracy | ECE | pairs |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['alpha']:.2f} | {row['loss']:.4f} | {row['accuracy']:.3f} | {row['ece']:.3f} | {row['count']} |"
        )
    return "\n".join(lines)
