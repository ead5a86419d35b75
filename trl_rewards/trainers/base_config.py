"""What every trainer config shares: the length fields, calibration bins and host-dependent defaults (defined once).

Each trainer's config (`<kind>_config.py`) subclasses TRL's and lists these bases first, so their fields replace
TRL's of the same name. Every field carries `metadata={"help": ...}` (and `"choices"` for enumerations) and is
validated in `__post_init__`, so a wrong value fails before any model is loaded; the same dataclasses drive Python,
the CLI and YAML files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..data.length import TOO_LONG_POLICIES


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


def resolve_host_defaults(config) -> None:
    """Defaults that depend on the host (bf16, CPU DeepSpeed) and TRL/transformers renames; call first in
    `__post_init__` of every config."""
    _resolve_bf16(config)
    _resolve_checkpointing_alias(config)
    _resolve_cpu_deepspeed(config)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


@dataclass
class TrainingFields:
    """
    Settings shared by every trainer's config (one definition each): the length limit, what happens to longer rows,
    and a bf16 default that follows the hardware. Listed first among a config's bases, so these fields replace TRL's
    of the same name.
    """

    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Longest tokenized row (prompt + completion, or prompt + steps) kept as is; longer rows are "
            "handled as `too_long` says, and always reported."
        },
    )
    too_long: str = field(
        default="truncate",
        metadata={
            "help": "Rows longer than max_length: truncate (pairs and outcomes keep the start's special tokens and "
            "the end; stepwise rows are cut from the left, never a labelled token), drop, or error.",
            "choices": list(TOO_LONG_POLICIES),
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "Use bf16 mixed precision. If not set: on when the GPU supports bf16, off on CPU (TRL turns it on "
            "everywhere)."
        },
    )

    def check_training_fields(self) -> None:
        check_choice("too_long", self.too_long, TOO_LONG_POLICIES)
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {self.max_length}")
        # transformers accepts these and fails later (a ZeroDivisionError mid-setup) or trains 0 steps and saves the
        # untouched model as if trained.
        for name in ("gradient_accumulation_steps", "per_device_train_batch_size", "per_device_eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ValueError(f"num_train_epochs must be > 0 (or max_steps > 0), got {self.num_train_epochs}")
        if not self.learning_rate >= 0:
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")


@dataclass
class CalibrationField:
    calibration_bins: int = field(
        default=10, metadata={"help": "Number of confidence bins of the logged expected calibration error."}
    )

    def check_calibration_field(self) -> None:
        if self.calibration_bins < 1:
            raise ValueError(f"calibration_bins must be >= 1, got {self.calibration_bins}")
