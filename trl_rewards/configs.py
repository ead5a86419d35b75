"""Trainer configurations: one dataclass per trainer, subclassing TRL's, shared by Python, the CLI and YAML files.

Every field carries `metadata={"help": ...}` (and `"choices"` for enumerations) and is validated in `__post_init__`,
so a wrong value fails before any model is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from trl import RewardConfig

from .data.preference import TOO_LONG_POLICIES
from .metrics import TIE_POLICIES


def _resolve_bf16(config) -> None:
    # TRL defaults bf16 to True everywhere; on a CPU or a pre-Ampere GPU that means slow or unsupported autocast.
    # Default to bf16 only where the hardware runs it natively; an explicit value is always kept.
    if config.bf16 is None and not config.fp16:
        config.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _resolve_checkpointing_alias(config) -> None:
    # TRL sets `gradient_checkpointing` (default True); transformers>=5.2x renamed it `activation_checkpointing` and
    # warns (FutureWarning) whenever only the old name is set. Carry the value over to the new name instead.
    for old, new in (
        ("gradient_checkpointing", "activation_checkpointing"),
        ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
    ):
        if hasattr(config, new) and getattr(config, new) is None and getattr(config, old) is not None:
            setattr(config, new, getattr(config, old))


def _resolve_cpu_deepspeed(config) -> None:
    # DeepSpeed without a GPU (a CPU-only box, CI) only initialises its process group through accelerate's CPU path;
    # otherwise accelerate counts one process while DeepSpeed counts all of them, and batch sizes disagree.
    uses_deepspeed = config.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if uses_deepspeed and not torch.cuda.is_available():
        config.use_cpu = True


def _resolve_host_defaults(config) -> None:
    """Defaults that depend on the host (bf16, CPU DeepSpeed) and TRL/transformers renames; call first in
    `__post_init__` of every config."""
    _resolve_bf16(config)
    _resolve_checkpointing_alias(config)
    _resolve_cpu_deepspeed(config)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


@dataclass
class BradleyTerryConfig(RewardConfig):
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
            How a pair with equal rewards counts in the logged accuracy: `"loss"` (a tie is not a win), `"half"`
            or `"exclude"`.
        calibration_bins (`int`, *optional*, defaults to `10`):
            Number of confidence bins of the logged expected calibration error.
        store_reward_stats (`bool`, *optional*, defaults to `True`):
            After training, score the eval set (the train set if there is none) and store the reward mean and std
            in the model config as `reward_mean` / `reward_std`, for downstream normalization.
    """

    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Longest tokenized sequence (prompt + completion) kept as is; longer pairs are handled as "
            "`too_long` says, and always reported."
        },
    )
    too_long: str = field(
        default="truncate",
        metadata={
            "help": "What to do with pairs longer than `max_length`: truncate (keep the start's special tokens and "
            "the end), drop, or error.",
            "choices": list(TOO_LONG_POLICIES),
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Label smoothing ε in [0, 0.5): target p becomes p(1-ε) + (1-p)ε."},
    )
    tie_policy: str = field(
        default="loss",
        metadata={"help": "How equal rewards count in the logged accuracy.", "choices": list(TIE_POLICIES)},
    )
    calibration_bins: int = field(
        default=10, metadata={"help": "Number of confidence bins of the logged expected calibration error."}
    )
    store_reward_stats: bool = field(
        default=True,
        metadata={
            "help": "After training, store the reward mean/std measured on the eval set (train set if none) in the "
            "model config as `reward_mean`/`reward_std`."
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "Use bf16 mixed precision. If not set: on when the GPU supports bf16, off on CPU (TRL turns it on "
            "everywhere)."
        },
    )

    def __post_init__(self):
        _resolve_host_defaults(self)
        _check_choice("too_long", self.too_long, TOO_LONG_POLICIES)
        _check_choice("tie_policy", self.tie_policy, TIE_POLICIES)
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            raise ValueError(f"center_rewards_coefficient must be >= 0, got {self.center_rewards_coefficient}")
        if self.calibration_bins < 1:
            raise ValueError(f"calibration_bins must be >= 1, got {self.calibration_bins}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {self.max_length}")
        super().__post_init__()


@dataclass
class DatasetArguments:
    """
    Where the training data comes from; shared by every `trl-rewards train` sub-command.

    Parameters:
        dataset_name (`str`):
            A local file (`.jsonl`, `.json`, `.jsonl.gz`, `.parquet`, `.csv`), a folder saved with
            `Dataset.save_to_disk`, or a Hub dataset name.
        dataset_config (`str`, *optional*): Hub dataset configuration.
        dataset_train_split (`str`, *optional*, defaults to `"train"`): split used for training.
        eval_dataset_name (`str`, *optional*): separate file/folder/Hub name for evaluation; defaults to
            `dataset_name`'s `dataset_test_split` if it has one.
        dataset_test_split (`str`, *optional*, defaults to `"test"`): split used for evaluation.
        max_train_samples (`int`, *optional*): keep only the first N training rows.
        max_eval_samples (`int`, *optional*): keep only the first N evaluation rows.
    """

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Local file (.jsonl/.json/.jsonl.gz/.parquet/.csv), saved dataset folder, or Hub name."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Separate evaluation file/folder/Hub name (default: the test split)."}
    )
    dataset_test_split: str = field(default="test", metadata={"help": "Split used for evaluation."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})

    def __post_init__(self):
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
