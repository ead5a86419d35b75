"""Configuration of [`PairwisePreferenceTrainer`]: TRL's `RewardConfig` plus the pairwise options."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RewardConfig

from .base_config import CalibrationField, TrainingFields, resolve_host_defaults


@dataclass
class PairwisePreferenceConfig(TrainingFields, CalibrationField, RewardConfig):
    """
    Configuration for [`PairwisePreferenceTrainer`]: TRL's [`~trl.RewardConfig`] plus the options below.

    Parameters:
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest tokenized sequence (template + prompt + both responses) kept as is; lowered to the model's
            position limit. What happens to longer pairs is set by `too_long`, and always reported.
        too_long (`str`, *optional*, defaults to `"truncate"`):
            `"truncate"` cuts the start of the prompt and never a response (a pair whose responses alone do not fit
            is dropped, counted); `"drop"` removes every over-long pair; `"error"` stops with the first one.
        label_smoothing (`float`, *optional*, defaults to `0.0`):
            `ε` in `[0, 0.5)`: the target P(A ≻ B) becomes `p (1 - ε) + (1 - p) ε` (with `p` the row's soft `label`,
            or 1), and `1 -` that for the swapped order.
        calibration_bins (`int`, *optional*, defaults to `10`):
            Number of confidence bins of the logged expected calibration error of the debiased win probability.
    """

    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "Label smoothing ε in [0, 0.5): target p becomes p(1-ε) + (1-p)ε (1 minus it when swapped)."
        },
    )

    def __post_init__(self):
        resolve_host_defaults(self)
        self.check_training_fields()
        self.check_calibration_field()
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.center_rewards_coefficient is not None:
            raise ValueError(
                "center_rewards_coefficient is not used by PairwisePreferenceTrainer: its logit is the log-odds of "
                "P(A ≻ B), whose offset the loss already fixes; leave it unset"
            )
        if self.chat_template_path is not None:
            raise ValueError(
                "chat_template_path is not used by PairwisePreferenceTrainer: the pairwise template is fixed text "
                "(trl_rewards.data.pairwise)"
            )
        super().__post_init__()
