"""Collators: tokenized rows → padded tensors, one per kind of row (pairs, stepwise rows, outcome rows).

Only trainers import this module: `PreferenceCollator` subclasses TRL's trainer-side collator, whose module imports
the Trainer stack (peft, bitsandbytes when installed); scorers and reward functions pad with `encoding.pad_right`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from trl.trainer.reward_trainer import DataCollatorForPreference

from ..step_format import IGNORE_INDEX
from .encoding import pad_right


@dataclass
class PreferenceCollator(DataCollatorForPreference):
    """
    TRL's preference collator plus soft labels.

    Returns `input_ids` and `attention_mask` of shape `(2 * batch, seq_len)` (chosen rows first, then rejected), and
    when present `margin` and `label`, each of shape `(batch,)`.
    """

    extra_float_fields: tuple[str, ...] = field(default=("label",))

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        for name in self.extra_float_fields:
            if name in examples[0]:
                output[name] = torch.tensor([example[name] for example in examples], dtype=torch.float)
        return output


@dataclass
class _RightPadCollator:
    """Right-pads `input_ids` (with `pad_token_id`) and builds the `attention_mask`, both `(batch, seq_len)`."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def _pad(self, sequences: list, value: int) -> torch.Tensor:
        return pad_right(sequences, value, self.pad_to_multiple_of)

    def _inputs(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [example["input_ids"] for example in examples]
        return {
            "input_ids": self._pad(ids, self.pad_token_id),
            "attention_mask": self._pad([[1] * len(s) for s in ids], 0),
        }


@dataclass
class StepCollator(_RightPadCollator):
    """
    Pads tokenized stepwise rows on the right.

    Returns `input_ids` and `attention_mask` of shape `(batch, seq_len)`, and `labels` of shape `(batch, seq_len)`
    (-100 at unlabelled and padded positions).

    Args:
        pad_token_id (`int`): id used to pad `input_ids`.
        pad_to_multiple_of (`int`, *optional*): pad `seq_len` to a multiple of this value.
    """

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            **self._inputs(examples),
            "labels": self._pad([example["labels"] for example in examples], IGNORE_INDEX),
        }


@dataclass
class OutcomeCollator(_RightPadCollator):
    """
    Pads tokenized outcome rows on the right.

    Returns `input_ids` and `attention_mask` of shape `(batch, seq_len)`, `label` of shape `(batch,)` (float), and
    `completion_mask` of shape `(batch, seq_len)` when the rows have one.

    Args:
        pad_token_id (`int`): id used to pad `input_ids`.
        pad_to_multiple_of (`int`, *optional*): pad `seq_len` to a multiple of this value.
    """

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        output = self._inputs(examples)
        output["label"] = torch.tensor([float(example["label"]) for example in examples], dtype=torch.float)
        if "completion_mask" in examples[0]:
            output["completion_mask"] = self._pad([example["completion_mask"] for example in examples], 0)
        return output
