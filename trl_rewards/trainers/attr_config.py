"""Configuration of [`AttributeRewardTrainer`]: TRL's `RewardConfig` plus the attribute columns and their weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import RewardConfig

from ..data.attributes import HELPSTEER2_ATTRIBUTES, check_attribute_names
from .base_config import TrainingFields, resolve_host_defaults


@dataclass
class AttributeRewardConfig(TrainingFields, RewardConfig):
    """
    Configuration for [`AttributeRewardTrainer`]: TRL's [`~trl.RewardConfig`] plus the options below.

    Parameters:
        attributes (`list[str]`, *optional*, defaults to HelpSteer2's five):
            The rating columns, in the order of the head's outputs (`num_labels = len(attributes)`): by default
            `helpfulness`, `correctness`, `coherence`, `complexity`, `verbosity`.
        attribute_weights (`list[float]` or `None`, *optional*, defaults to `None`):
            Weights combining the attribute scores into one reward (`Σ w_k s_k`), one per attribute; the pairwise
            accuracy on a preference eval set uses it, and it is stored in the model config as the default of
            [`AttributeScorer`] / [`AttributeRewardFunction`]. `None`: the mean of the attributes (`1/K` each).
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest tokenized sequence (prompt + completion) kept as is; longer ones are handled as `too_long` says.
        too_long (`str`, *optional*, defaults to `"truncate"`):
            `"truncate"` keeps the leading special tokens and the end, `"drop"` removes the row, `"error"` stops.
        init_head_bias (`bool`, *optional*, defaults to `True`):
            Start the bias of the head's output layer (when it has one: BERT's `classifier`, RoBERTa's `out_proj`;
            Llama's `score` has none) at each attribute's mean observed rating on the train set (not for a stream).
            Ratings sit far from 0 (HelpSteer2: 0-4) and Adam moves a bias by about `lr` per step.
        store_attribute_stats (`bool`, *optional*, defaults to `True`):
            After training, score the eval set (the train set if there is none) and store each attribute score's
            mean and std in the model config (`attribute_means`, `attribute_stds`), for normalized scoring.
    """

    attributes: list[str] = field(
        default_factory=lambda: list(HELPSTEER2_ATTRIBUTES),
        metadata={
            "help": "Rating columns, in head-output order (num_labels = their number); HelpSteer2's by default."
        },
    )
    attribute_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Weights combining the attribute scores into one reward (one per attribute), used for the "
            "pairwise accuracy on a preference eval set and stored in the model config; default: their mean."
        },
    )
    init_head_bias: bool = field(
        default=True,
        metadata={
            "help": "Start the head's bias (when it has one, e.g. BERT's classifier) at each attribute's mean rating "
            "on the train set; from 0, Adam moves a bias by about lr per step, so a small lr spends the run on the "
            "mean."
        },
    )
    store_attribute_stats: bool = field(
        default=True,
        metadata={
            "help": "After training, store each attribute score's mean/std on the eval set (train set if none) in "
            "the model config as `attribute_means`/`attribute_stds`."
        },
    )

    def __post_init__(self):
        resolve_host_defaults(self)
        self.check_training_fields()
        self.attributes = list(check_attribute_names(self.attributes))
        if self.attribute_weights is not None:
            self.attribute_weights = [float(w) for w in self.attribute_weights]
            if len(self.attribute_weights) != len(self.attributes):
                raise ValueError(
                    f"attribute_weights has {len(self.attribute_weights)} values but there are "
                    f"{len(self.attributes)} attributes {self.attributes}; give one weight per attribute"
                )
            if not all(math.isfinite(w) for w in self.attribute_weights):
                raise ValueError(f"attribute_weights must be finite, got {self.attribute_weights}")
            if not any(self.attribute_weights):
                raise ValueError("attribute_weights are all 0: the combined reward would be constant")
        if self.center_rewards_coefficient is not None:
            raise ValueError(
                "center_rewards_coefficient is not used by AttributeRewardTrainer: ratings are absolute, the "
                "regression loss already fixes each score's offset; leave it unset"
            )
        if self.chat_template_path is not None:
            raise ValueError("chat_template_path is not used by AttributeRewardTrainer; set the tokenizer's template")
        super().__post_init__()

    @property
    def combination_weights(self) -> list[float]:
        """The weights of the combined reward: `attribute_weights`, or `1/K` each."""
        k = len(self.attributes)
        return list(self.attribute_weights) if self.attribute_weights is not None else [1.0 / k] * k
