"""Configuration of [`BradleyTerryTrainer`]: TRL's `RewardConfig` plus pairwise options."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RewardConfig

from ..evaluation.metrics import TIE_POLICIES
from .base_config import CalibrationField, TrainingFields, check_choice, resolve_host_defaults


@dataclass
class BradleyTerryConfig(TrainingFields, CalibrationField, RewardConfig):
    """
    Configuration for [`BradleyTerryTrainer`]: TRL's [`~trl.RewardConfig`] plus the options below.

    Parameters:
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest tokenized sequence (prompt + completion) kept as is. What happens to longer pairs is set by
            `too_long`, and always reported.
        too_long (`str`, *optional*, defaults to `"truncate"`):
            `"truncate"` keeps the leading special tokens and the end of the sequence, `"drop"` removes the pair,
            `"error"` stops with the first offending row.
        label_smoothing (`float`, *optional*, defaults to `0.0`):
            `ε` in `[0, 0.5)`: the target probability that `chosen` is better becomes `p (1 - ε) + (1 - p) ε`
            (with `p` the row's soft `label`, or 1).
        tie_policy (`str`, *optional*, defaults to `"loss"`):
            How a pair with equal rewards (or a soft `label` of 0.5) counts in the logged accuracy: `"loss"` (a tie
            is not a win), `"half"` or `"exclude"` (a log where every pair ties reports a NaN accuracy beside
            `tie_rate`, with one warning).
        calibration_bins (`int`, *optional*, defaults to `10`):
            Number of confidence bins of the logged expected calibration error.
        store_reward_stats (`bool`, *optional*, defaults to `True`):
            After training, score the eval set (the train set if there is none) and store the reward mean and std
            in the model config as `reward_mean` / `reward_std`, for downstream normalization.
        prefix_sharing (`bool`, *optional*, defaults to `False`):
            Encode the tokens `chosen` and `rejected` share (the prompt) once: each pair is packed as
            `prefix + chosen + rejected` in one row with a block attention mask in which the rejected tokens do not
            see the chosen ones, and position ids that restart after the prefix (`data.prefix_sharing`). Exact for
            causal (decoder) reward models with `"sdpa"` or `"eager"` attention; an encoder is rejected.
            Length-grouped batching then groups by packed length.
    """

    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Label smoothing ε in [0, 0.5): target p becomes p(1-ε) + (1-p)ε."},
    )
    tie_policy: str = field(
        default="loss",
        metadata={
            "help": "How equal rewards (or a label of 0.5) count in the logged accuracy; under 'exclude' a log of "
            "only ties reports NaN.",
            "choices": list(TIE_POLICIES),
        },
    )
    store_reward_stats: bool = field(
        default=True,
        metadata={
            "help": "After training, store the reward mean/std measured on the eval set (train set if none) in the "
            "model config as `reward_mean`/`reward_std`."
        },
    )

    prefix_sharing: bool = field(
        default=False,
        metadata={
            "help": "Encode the prompt shared by chosen and rejected once: pack prefix + chosen + rejected in one row "
            "with a block attention mask (exact; decoder reward models with sdpa/eager attention only)."
        },
    )

    def __post_init__(self):
        resolve_host_defaults(self)
        self.check_training_fields()
        self.check_calibration_field()
        check_choice("tie_policy", self.tie_policy, TIE_POLICIES)
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            raise ValueError(f"center_rewards_coefficient must be >= 0, got {self.center_rewards_coefficient}")
        if not isinstance(self.prefix_sharing, bool):
            raise ValueError(f"prefix_sharing must be True or False, got {self.prefix_sharing!r}")
        super().__post_init__()
