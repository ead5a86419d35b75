"""Configuration of [`ProcessGRPOTrainer`]: TRL's `GRPOConfig` plus the weights of the dense (per-token) advantage."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import GRPOConfig


@dataclass
class ProcessGRPOConfig(GRPOConfig):
    r"""
    Configuration for [`ProcessGRPOTrainer`]: TRL's [`~trl.GRPOConfig`] plus the options below.

    Every token's advantage is `outcome_advantage_weight · A_outcome + process_advantage_weight · A_process`, where
    `A_outcome` is GRPO's own advantage of the completion (from `reward_funcs`, with `reward_weights`,
    `scale_rewards` and `multi_objective_aggregation` as in TRL), broadcast over its tokens, and `A_process` is
    DeepSeekMath's process advantage: the sum, over the step reward functions, of `step_reward_weights[k]` times the
    sum of the group-normalized step rewards of the steps ending at or after the token (normalized as
    `scale_rewards` says: `"group"` is DeepSeekMath's group mean/std over steps).

    Parameters:
        outcome_advantage_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the outcome advantage; `0` trains on the process advantage only (the outcome rewards are then
            only logged).
        process_advantage_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the process advantage; `0` is plain GRPO (the step rewards are then only logged).
        step_reward_weights (`list[float]`, *optional*):
            One weight per step reward function; all `1.0` by default.
        bad_step_threshold (`float`, *optional*, defaults to `0.5`):
            A step whose raw reward is below it counts as bad in the logged `steps/{name}/first_bad_found` (share of
            completions where a first bad step is located) and `first_bad_position`.
    """

    outcome_advantage_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of GRPO's outcome advantage, broadcast over the tokens (0: process-only)."},
    )
    process_advantage_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the per-token process advantage from the step rewards (0: plain GRPO)."},
    )
    step_reward_weights: list[float] | None = field(
        default=None,
        metadata={"help": "One weight per step reward function (default: all 1.0)."},
    )
    bad_step_threshold: float = field(
        default=0.5,
        metadata={"help": "A step whose raw reward is below this counts as bad in the step metrics."},
    )

    def __post_init__(self):
        for name in ("outcome_advantage_weight", "process_advantage_weight", "bad_step_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name in ("outcome_advantage_weight", "process_advantage_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.outcome_advantage_weight == 0 and self.process_advantage_weight == 0:
            raise ValueError("outcome_advantage_weight and process_advantage_weight are both 0: no advantage is left")
        if self.step_reward_weights is not None:
            weights = list(self.step_reward_weights)
            bad = [w for w in weights if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w)]
            if not weights or bad:
                raise ValueError(f"step_reward_weights must be a non-empty list of finite numbers, got {weights!r}")
            self.step_reward_weights = [float(w) for w in weights]
        super().__post_init__()
