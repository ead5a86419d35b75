"""Pairwise preference trainer (RLHFlow's pair-PM): one model reads the prompt and both responses, outputs P(A ≻ B).

The model is TRL's stock reward model, `AutoModelForSequenceClassification(num_labels=1)`, whose logit is read as the
log-odds that the first response of its input beats the second; the input is the fixed template of `data.pairwise`.
What differs from `trl.RewardTrainer`, and nothing else is overridden:

- data preparation (`data.pairwise.tokenize_pairwise`): text preference rows (explicit or implicit prompt, optional
  soft `label`), row-numbered validation, every pair in *both* orders within one row, over-long pairs cut at the start
  of the prompt (never in a response) or dropped, always reported;
- the loss: `losses.pairwise_preference_loss`, binary cross-entropy on `l_AB` with target `p` and on `l_BA` with
  target `1 - p`, averaged (label smoothing optional), so position carries no signal;
- metrics over every pair since the last log (the whole eval set at evaluation, [`RewardTrainerMixin`]): accuracy of
  the position-debiased win probability, position consistency, position bias, ECE and Brier score
  (`evaluation.pairwise_eval`);
- non-finite logits stop training with an error naming the step and the likely causes.

Inference: [`~trl_rewards.inference.pairwise_scoring.PairwiseScorer`]; as a GRPO/RLOO reward:
[`~trl_rewards.rewards.pairwise_rewards.PairwiseRewardFunction`].
"""

from __future__ import annotations

import numpy as np
import torch
from trl import RewardTrainer

from ..data.pairwise import PairwiseCollator, tokenize_pairwise
from ..data.streaming import column_names
from ..evaluation.pairwise_eval import pairwise_preference_metrics
from ..losses import pairwise_preference_loss, smoothed_target
from .base import RewardTrainerMixin, check_config, clamp_max_length
from .pairwise_config import PairwisePreferenceConfig

_LOGGED = ("accuracy", "position_consistency", "position_bias", "ece", "brier", "win_probability")


class PairwisePreferenceTrainer(RewardTrainerMixin, RewardTrainer):
    """
    Trains a pairwise preference model. Same arguments as [`~trl.RewardTrainer`], with a
    [`PairwisePreferenceConfig`]; rows are text preference pairs (`data.pairwise`).

    Example:

    ```python
    >>> from trl_rewards import PairwisePreferenceConfig, PairwisePreferenceTrainer
    >>> trainer = PairwisePreferenceTrainer(model=model, args=PairwisePreferenceConfig("pair-pm"),
    ...                                     train_dataset=pairs, processing_class=tokenizer)
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "reward-trainer", "trl-rewards", "pairwise-preference-model"]

    def __init__(self, model, args: PairwisePreferenceConfig | None = None, *pos, **kwargs):
        args = check_config(args, PairwisePreferenceConfig, "pairwise-preference-model")
        clamp_max_length(args, model, kwargs.get("processing_class"))
        self.length_reports = {}
        super().__init__(model, args, *pos, **kwargs)
        self._setup_reward_model(PairwiseCollator)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if {"ab_ids", "ba_ids"} <= set(column_names(dataset)):
            return dataset  # already tokenized (TRL's `evaluate` prepares a given eval set again)
        return self._tokenize(
            tokenize_pairwise,
            dataset,
            dataset_name,
            processing_class,
            max_length=args.max_length,
            too_long=args.too_long,
            num_proc=args.dataset_num_proc,
        )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["ab_ids", "ba_ids", "label", "length"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = self._mode
        forward_kwargs = {"use_cache": False} if self._decoder else {}
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **forward_kwargs)
        logits_ab, logits_ba = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        label = inputs["label"].float()
        target = smoothed_target(label, self.args.label_smoothing, len(logits_ab), logits_ab)
        loss = pairwise_preference_loss(logits_ab, logits_ba, target=target)

        self._count_tokens(inputs, mode, divisor=self._tp_size)
        self._buffer(mode, logits_ab=logits_ab.float(), logits_ba=logits_ba.float(), label=label)
        self._check_finite(mode)
        return (loss, {"logits": outputs.logits.detach()}) if return_outputs else loss

    def _check_finite(self, mode: str) -> None:
        """Raises on non-finite logits in the batch just buffered; it is gathered, so every process raises."""
        logits = torch.cat([self._buffers[mode]["logits_ab"][-1], self._buffers[mode]["logits_ba"][-1]])
        n_bad = int((~torch.isfinite(logits)).sum())
        if n_bad:
            raise FloatingPointError(
                f"non-finite logits (NaN or inf) at step {self.state.global_step} ({mode}): {n_bad} of {len(logits)} "
                "sequences of the batch (all processes). Likely causes: a learning rate too high (the loss diverged; "
                "lower it or add warmup/clipping), fp16 overflow (train in bf16 or fp32), or NaN/inf weights."
            )

    def _buffered_metrics(self, buffered: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        logits_ab, logits_ba, label = (
            torch.cat(buffered[name]).numpy().astype(np.float64) for name in ("logits_ab", "logits_ba", "label")
        )
        report = pairwise_preference_metrics(logits_ab, logits_ba, label, n_bins=self.args.calibration_bins)
        return {name: float(report[name]) for name in _LOGGED}
