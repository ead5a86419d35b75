"""Collators: turn tokenized rows into padded tensors.

Kept apart from the data formats so that scoring and reward functions (which tokenize but never collate) do not
import TRL's trainer modules, and with them peft and bitsandbytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from trl.trainer.reward_trainer import DataCollatorForPreference


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
