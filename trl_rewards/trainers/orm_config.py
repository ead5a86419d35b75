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
        prefix_sharing (`bool`, *optional*, defaults to `False`):
            Encode the prompt shared by several completions once: the rows of one prompt (equal `prompt` text) are
            packed, at most `completions_per_row` at a time, as `prefix + completion_1 + ... + completion_k` in one
            row with a block attention mask and position ids that continue the prefix in every completion
            (`data.prefix_sharing`); each score is read at its completion's last token. Exact for causal (decoder)
            models with `"sdpa"` or `"eager"` attention (an encoder is rejected), with `supervision="final_token"`
            on a map-style dataset. `per_device_train_batch_size` then counts packed rows.
        completions_per_row (`int`, *optional*, defaults to `8`):
            With `prefix_sharing`, most completions packed in one row (the attention of a packed row is dense, so
            very long rows cost more than their token count).
    """

    supervision: str = field(
        default="final_token",
        metadata={
            "help": "final_token: BCE on the stock read-out score; all_tokens: BCE on the score of every completion "
            "token (and the read-out token), averaged per sequence. Inference always reads the final token.",
            "choices": list(ORM_SUPERVISIONS),
        },
    )

    prefix_sharing: bool = field(
        default=False,
        metadata={
            "help": "Encode the prompt shared by several completions once: pack prompt + completion_1 + ... + "
            "completion_k in one row with a block attention mask (exact; decoders with sdpa/eager attention only)."
        },
    )
    completions_per_row: int = field(
        default=8,
        metadata={"help": "With prefix_sharing: most completions of one prompt packed in one row."},
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
        if not isinstance(self.prefix_sharing, bool):
            raise ValueError(f"prefix_sharing must be True or False, got {self.prefix_sharing!r}")
        if isinstance(self.completions_per_row, bool) or not isinstance(self.completions_per_row, int):
            raise ValueError(f"completions_per_row must be an integer >= 1, got {self.completions_per_row!r}")
        if self.completions_per_row < 1:
            raise ValueError(f"completions_per_row must be an integer >= 1, got {self.completions_per_row!r}")
        if self.prefix_sharing and self.supervision != "final_token":
            raise ValueError(
                "prefix_sharing=True supports supervision='final_token' only (the score read at each completion's "
                f"last token), got supervision={self.supervision!r}"
            )
        if self.prefix_sharing and self.too_long == "drop":
            raise ValueError(
                "prefix_sharing=True groups rows by prompt after tokenization and needs every row kept: use "
                "too_long='truncate' or 'error', not 'drop'"
            )
        if self.chat_template_path is not None:
            raise ValueError("chat_template_path is not used by OutcomeRewardTrainer: outcome rows are plain text")
        super().__post_init__()
