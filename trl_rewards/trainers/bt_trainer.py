"""Bradley-Terry reward trainer: TRL's `RewardTrainer` with validated data, soft labels and exact pairwise metrics.

What differs from `trl.RewardTrainer`, and nothing else is overridden:

- data preparation: row-numbered validation, explicit handling of over-long pairs (truncate/drop/error, always
  reported), soft `label` and `margin` columns, a `length` column for length-grouped batching;
- the loss: `losses.bradley_terry_loss` (margin, soft target, label smoothing) + optional reward centering;
- metrics: computed over every pair since the last log (the whole eval set at evaluation) rather than averaged
  per batch ([`RewardTrainerMixin`]), so accuracy (with a tie policy) and calibration error are exact; they are
  measured against each pair's `label` when there is one (`evaluation.preference_labels`: a pair labelled 0 that the
  model orders rejected-first is right). Under `tie_policy="exclude"` a log where every pair ties (a collapsed head)
  reports a NaN accuracy beside `tie_rate` 1.0, with one warning, instead of stopping training;
- non-finite rewards stop training with an error that names the side, the step and the likely causes;
- after `train()`, the reward mean/std on the eval set are written into the model config;
- with `prefix_sharing=True` (decoders only), each pair is one packed row `prefix + chosen + rejected` with a block
  attention mask (`data.prefix_sharing`): the shared prompt is encoded once, rewards are read at each side's last
  token, and the `length` column (length-grouped batching) holds the packed length.

Everything `trl.RewardTrainer` accepts is accepted: a `trl.RewardConfig` (converted, `trainers.base.check_config`),
streaming `IterableDataset`s (training then needs `max_steps`, as in TRL; their length reports count the pairs read
so far, `data.streaming`), tool-call conversations with `tools`, per-row `chat_template_kwargs`, and TRL's legacy
`chosen_input_ids`/`rejected_input_ids` columns (`data.preference`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from accelerate.utils import is_peft_model
from datasets import IterableDataset
from transformers.modeling_outputs import SequenceClassifierOutput
from trl import RewardTrainer

from ..data.collators import PreferenceCollator
from ..data.preference import tokenize_preferences
from ..data.prefix_sharing import PrefixSharingCollator, check_packing_support, packed_length, packed_rewards
from ..evaluation import metrics
from ..evaluation.preference_labels import labelled_accuracy, labelled_calibration_error, oriented_pairs
from ..losses import bradley_terry_loss, reward_centering_loss, smoothed_target
from ..modeling import save_reward_stats
from .base import RewardTrainerMixin, check_config, clamp_max_length, require_decoder_for_prefix_sharing
from .bt_config import BradleyTerryConfig

logger = logging.getLogger(__name__)


class BradleyTerryTrainer(RewardTrainerMixin, RewardTrainer):
    """
    Trains a pairwise (Bradley-Terry) reward model. Same arguments as [`~trl.RewardTrainer`], with a
    [`BradleyTerryConfig`].

    Example:

    ```python
    >>> from trl_rewards import BradleyTerryConfig, BradleyTerryTrainer
    >>> trainer = BradleyTerryTrainer(model=model, args=BradleyTerryConfig("out"), train_dataset=pairs,
    ...                               processing_class=tokenizer)
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "reward-trainer", "trl-rewards", "bradley-terry"]

    def __init__(self, model, args: BradleyTerryConfig | None = None, *pos, **kwargs):
        args = check_config(args, BradleyTerryConfig, "bradley-terry-reward-model")
        clamp_max_length(args, model, kwargs.get("processing_class"))
        if args.prefix_sharing:
            require_decoder_for_prefix_sharing(model, "chosen and rejected")
        self.length_reports = {}
        self._warned_all_ties = False
        super().__init__(model, args, *pos, **kwargs)
        self._setup_reward_model(PreferenceCollator)
        if args.prefix_sharing:
            self._use_prefix_sharing(custom_collator=kwargs.get("data_collator") is not None)

    def _use_prefix_sharing(self, custom_collator: bool) -> None:
        check_packing_support(self.model)
        if custom_collator:
            raise ValueError(
                f"prefix_sharing=True packs each pair with its own collator; a custom data_collator "
                f"({type(self.data_collator).__name__}) cannot be used with it"
            )
        self.data_collator = PrefixSharingCollator(
            pad_token_id=self.data_collator.pad_token_id, pad_to_multiple_of=self.data_collator.pad_to_multiple_of
        )

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        tokenized = self._tokenize(
            tokenize_preferences,
            dataset,
            dataset_name,
            processing_class,
            max_length=args.max_length,
            too_long=args.too_long,
            num_proc=args.dataset_num_proc,
        )
        if not args.prefix_sharing:
            return tokenized
        # length-grouped batching groups rows by what is computed: the packed row, prefix once
        map_kwargs = {} if isinstance(tokenized, IterableDataset) else {"desc": f"Packed lengths of {dataset_name}"}
        return tokenized.map(
            lambda row: {"length": packed_length([row["chosen_ids"], row["rejected_ids"]])}, **map_kwargs
        )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "label", "length"]

    def _pair_rewards(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor, SequenceClassifierOutput]:
        """`(chosen, rejected, outputs)`: rewards `(batch,)` each, and outputs whose `logits` `(2 * batch, 1)` hold the
        chosen rewards then the rejected ones, whichever the layout (two padded rows per pair, or one packed row)."""
        if self.args.prefix_sharing:
            rewards = packed_rewards(model, inputs)
            chosen, rejected = rewards[:, 0], rewards[:, 1]
            return chosen, rejected, SequenceClassifierOutput(logits=torch.cat([chosen, rejected]).unsqueeze(-1))
        forward_kwargs = {"use_cache": False} if self._decoder else {}
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **forward_kwargs)
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        return chosen, rejected, outputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = self._mode
        chosen, rejected, outputs = self._pair_rewards(model, inputs)
        target = smoothed_target(inputs.get("label"), self.args.label_smoothing, len(chosen), chosen)
        loss = bradley_terry_loss(chosen, rejected, margin=inputs.get("margin"), target=target)
        if self.args.center_rewards_coefficient:
            loss = loss + self.args.center_rewards_coefficient * reward_centering_loss(chosen, rejected)

        self._count_tokens(inputs, mode, divisor=self._tp_size)
        label = inputs["label"].float() if "label" in inputs else torch.ones_like(chosen, dtype=torch.float)
        self._buffer(mode, chosen=chosen.float(), rejected=rejected.float(), label=label)
        self._check_finite(mode)
        return (loss, outputs) if return_outputs else loss

    def _check_finite(self, mode: str) -> None:
        """Raises on non-finite rewards in the batch just buffered; it is gathered, so every process raises."""
        chosen, rejected = self._buffers[mode]["chosen"][-1], self._buffers[mode]["rejected"][-1]
        bad = {side: int((~torch.isfinite(r)).sum()) for side, r in (("chosen", chosen), ("rejected", rejected))}
        if not any(bad.values()):
            return
        sides = " and ".join(f"{n} of {len(chosen)} {side}" for side, n in bad.items() if n)
        raise FloatingPointError(
            f"non-finite rewards (NaN or inf) at step {self.state.global_step} ({mode}): {sides} sequences of the "
            "batch (all processes). Likely causes: a learning rate too high (the loss diverged; lower it or add "
            "warmup/clipping), fp16 overflow (train in bf16 or fp32), or NaN/inf weights in the model or its head."
        )

    def _buffered_metrics(self, buffered: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        chosen = torch.cat(buffered["chosen"]).numpy().astype(np.float64)
        rejected = torch.cat(buffered["rejected"]).numpy().astype(np.float64)
        label = torch.cat(buffered["label"]).numpy().astype(np.float64)
        rewards = metrics.reward_statistics(np.concatenate([chosen, rejected]))
        winner, loser = oriented_pairs(chosen, rejected, label)
        if self.args.tie_policy == "exclude" and np.all(winner == loser):
            accuracy = float("nan")  # undefined; raising here would stop training at a collapsed first step
            if not self._warned_all_ties:
                self._warned_all_ties = True
                logger.warning(
                    "every pair since the last log is a tie (equal rewards, or label 0.5), so the accuracy under "
                    "tie_policy='exclude' is undefined and logged as NaN (see tie_rate); warned once"
                )
        else:
            accuracy = labelled_accuracy(chosen, rejected, label, ties=self.args.tie_policy)
        return {
            "accuracy": accuracy,
            "tie_rate": metrics.tie_rate(chosen, rejected),
            "margin": float(np.mean(chosen - rejected)),
            "ece": labelled_calibration_error(chosen, rejected, label, n_bins=self.args.calibration_bins),
            "mean_reward": rewards["mean"],
            "std_reward": rewards["std"],
            "min_reward": rewards["min"],
            "max_reward": rewards["max"],
        }

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        if is_peft_model(self.model) and self.args.should_save:  # under ZeRO-3 every process passes here
            save_reward_stats(self.model, output_dir or self.args.output_dir)

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if self.args.store_reward_stats:
            self.store_reward_statistics()
        return output

    @torch.no_grad()
    def store_reward_statistics(self, dataset=None) -> dict[str, float]:
        """
        Scores every chosen and rejected sequence of `dataset` (default: the eval set, else the train set unless it
        is a stream, which may be endless) and stores `reward_mean`, `reward_std` (population) and
        `reward_stats_source` in the model config, which `save_model` then writes. Returns the statistics (empty
        when nothing was scored).
        """
        source = "custom"
        if dataset is None:
            dataset, source = self.eval_dataset, "eval"
            if isinstance(dataset, dict):
                source, dataset = next(iter(dataset.items()))
            if dataset is None:
                dataset, source = self.train_dataset, "train"
                if isinstance(dataset, IterableDataset):  # a training stream may be endless
                    logger.warning(
                        "no eval set and the train set is a stream: reward statistics not stored; call "
                        "store_reward_statistics(dataset) with a finite dataset"
                    )
                    return {}
        was_training = self.model.training
        self.model.eval()
        scores = []
        for batch in self.get_eval_dataloader(dataset):
            chosen, rejected, _ = self._pair_rewards(self.model, self._prepare_inputs(batch))
            scores += [self.accelerator.gather_for_metrics(chosen), self.accelerator.gather_for_metrics(rejected)]
        self.model.train(was_training)
        stats = metrics.reward_statistics(torch.cat(scores).float().cpu().numpy())
        config = self.accelerator.unwrap_model(self.model).config
        config.reward_mean = stats["mean"]
        config.reward_std = stats["std"]
        config.reward_stats_source = source
        logger.info("reward statistics on %s set: mean %.4f std %.4f", source, stats["mean"], stats["std"])
        return stats
