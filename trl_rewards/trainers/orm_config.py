"""Configuration of [`OutcomeRewardTrainer`]: TRL's `RewardConfig` plus the supervision mode."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RewardConfig

from .base_config import CalibrationField, TrainingFields, check_choice, resolve_host_defaults

ORM_SUPERVISIONS = ("final_token", "all_tokens")


@dataclass
class OutcomeRewardConfig(TrainingFields, CalibrationField, RewardConfig):
    """
    Configuration for [`OutcomeRewardTrainer`]: TRL's [`~trl.RewardConfig`] plus the options below.

    Parameters:
        supervision (`str`, *optional*, defaults to `"final_token"`):
            `"final_token"`: binary cross-entropy on the score the stock sequence-classification head reads (last
            token of a decoder, `[CLS]` of an encoder). `"all_tokens"`: the same loss on the score head applied to
            every completion token and the read-out token, averaged per sequence. Inference always reads the final
            token.
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest tokenized sequence (prompt + completion) kept as is; longer ones are handled as `too_long` says.
        too_long (`str`, *optional*, defaults to `"truncate"`):
            `"truncate"` keeps the leading special tokens and the end, `"drop"` removes the row, `"error"` stops.
        calibration_bins (`int`, *optional*, defaults to `10`):
            Number of confidence bins of the logged expected calibration error of P(correct) = σ(score).
    """

    supervision: str = field(
        default="final_token",
        metadata={
            "help": "final_token: BCE on the stock read-out score; all_tokens: BCE on the score of every completion "
            "token (and the read-out token), averaged per sequence. Inference always reads the final token.",
            "choices": list(ORM_SUPERVISIONS),
        },
    )

    def __post_init__(self):
        resolve_host_defaults(self)
        self.check_training_fields()
        self.check_calibration_field()
        check_choice("supervision", self.supervision, ORM_SUPERVISIONS)
        if self.center_rewards_coefficient is not None:
            raise ValueError(
                "center_rewards_coefficient is not used by OutcomeRewardTrainer: the BCE loss already fixes the "
                "score's offset (σ(score) is P(correct)); leave it unset"
            )
        if self.chat_template_path is not None:
            raise ValueError("chat_template_path is not used by OutcomeRewardTrainer: outcome rows are plain text")
        super().__post_init__()
