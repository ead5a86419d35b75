"""Multi-attribute regression reward trainer (SteerLM / HelpSteer2; ArmoRM's first stage) on TRL's `RewardTrainer`.

The model is a stock `AutoModelForSequenceClassification` with `num_labels = K` attributes and
`problem_type="regression"` (attribute names in `id2label`), so the saved model loads anywhere and its `K` logits,
read where the stock head reads (a decoder's last token, the closing eos; an encoder's `[CLS]`), are the attribute
scores. What differs from `trl.RewardTrainer`, and nothing else is overridden:

- the model: TRL refuses `num_labels != 1` (TRL #5087); here `num_labels` must equal the number of attributes. A
  model name is loaded with that head;
- data preparation: row-numbered validation of attribute rows (`data.attributes`; missing ratings allowed, NaN),
  tokenization identical to [`RewardScorer`]'s, over-long rows truncated/dropped/refused and always reported;
- the loss: `losses.masked_regression_loss` (squared error over the observed ratings);
- metrics: every prediction since the last log is buffered ([`RewardTrainerMixin`]), so the per-attribute MAE,
  Pearson and Spearman are exact; with `preference_eval_dataset`, each evaluation also reports the pairwise
  accuracy of the combined reward `Σ w_k s_k` (`attribute_weights`) on those pairs;
- after `train()`, each attribute score's mean/std (eval set, else train set) and the combination weights are written
  into the model config (`attribute_means`, `attribute_stds`, `attribute_weights`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import numpy as np
import torch
from accelerate.utils import is_peft_model
from datasets import IterableDataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification
from trl import RewardTrainer

from ..data.attributes import AttributeCollator, tokenize_attributes, validate_attribute_rows
from ..data.collators import PreferenceCollator
from ..data.preference import tokenize_preferences
from ..data.streaming import column_names
from ..evaluation.attribute_metrics import attribute_metrics, combined_pairwise_accuracy
from ..losses import masked_regression_loss
from ..modeling import REWARD_STATS_FILE
from .attr_config import AttributeRewardConfig
from .base import RewardTrainerMixin, check_config, clamp_max_length, sequence_peft_config

logger = logging.getLogger(__name__)

ATTRIBUTE_STATS_KEYS = ("attribute_names", "attribute_weights", "attribute_means", "attribute_stds")


def set_attribute_head(config, attributes) -> None:
    """Marks a sequence-classification config as a K-attribute regression head: `problem_type="regression"`, the
    attribute names as labels, and `attribute_names` (read by [`AttributeScorer`])."""
    config.problem_type = "regression"
    config.id2label = dict(enumerate(attributes))
    config.label2id = {name: i for i, name in enumerate(attributes)}
    config.attribute_names = list(attributes)


def head_output_layer(model, n_outputs: int) -> torch.nn.Linear | None:
    """The linear layer that produces a sequence-classification head's outputs: `score` (decoders), `classifier`
    (BERT) or the last `n_outputs`-wide linear layer inside it (RoBERTa's `classifier.out_proj`); `None` if absent."""
    for name in ("score", "classifier"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear):
            return head
        if isinstance(head, torch.nn.Module):
            layers = [m for m in head.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n_outputs]
            if layers:
                return layers[-1]
    return None


def init_head_bias(model, means) -> bool:
    """Sets the head's output bias to `means` (one per attribute); `False` when the head has no bias. Under ZeRO-3
    the partitioned bias is gathered, set on rank 0 and re-partitioned (every rank must call this)."""
    layer = head_output_layer(model, len(means))
    if layer is None or layer.bias is None:
        return False
    gathered = contextlib.nullcontext()
    if hasattr(layer.bias, "ds_id"):  # partitioned by DeepSpeed ZeRO-3
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters([layer.bias], modifier_rank=0)
    with gathered, torch.no_grad():
        layer.bias.copy_(torch.as_tensor(means, dtype=layer.bias.dtype))
    return True


def _mean_ratings(dataset, attributes) -> list[float] | None:
    """Each attribute's mean observed rating in a (validated) dataset; `None` for a stream."""
    if isinstance(dataset, IterableDataset):
        return None
    columns = column_names(dataset)
    ratings = np.array(
        [
            [np.nan if r is None else float(r) for r in dataset[name]] if name in columns else [np.nan] * len(dataset)
            for name in attributes
        ],
        dtype=np.float64,
    )
    return np.nanmean(ratings, axis=1).tolist()


@contextlib.contextmanager
def _one_label_for_trl(config):
    # TRL's RewardTrainer.__init__ refuses a model whose config says num_labels != 1 (that is all it checks; the
    # loss is ours). `num_labels` is derived from `id2label`, so show it one label there and restore it after.
    id2label, label2id = config.id2label, config.label2id
    config.id2label, config.label2id = {0: "LABEL_0"}, {"LABEL_0": 0}
    try:
        yield
    finally:
        config.id2label, config.label2id = id2label, label2id


class AttributeRewardTrainer(RewardTrainerMixin, RewardTrainer):
    """
    Trains a multi-attribute regression reward model. Same arguments as [`~trl.RewardTrainer`], with an
    [`AttributeRewardConfig`], plus `preference_eval_dataset` (preference pairs in any format the BT trainer
    accepts): each evaluation then reports the pairwise accuracy of the combined reward on them.

    Rows are `{"prompt", "completion", <attribute>: rating or None, ...}` (`data.attributes`).

    Example:

    ```python
    >>> from trl_rewards import AttributeRewardConfig, AttributeRewardTrainer
    >>> model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=5)
    >>> trainer = AttributeRewardTrainer(model=model, args=AttributeRewardConfig("attr"), train_dataset=rated,
    ...                                  processing_class=tokenizer, preference_eval_dataset=pairs)
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "reward-trainer", "trl-rewards", "attribute-reward-model"]

    def __init__(
        self,
        model,
        args: AttributeRewardConfig | None = None,
        *pos,
        peft_config=None,
        preference_eval_dataset=None,
        **kwargs,
    ):
        args = check_config(args, AttributeRewardConfig, "attribute-reward-model")
        n_attributes = len(args.attributes)
        if isinstance(model, str):
            model = AutoModelForSequenceClassification.from_pretrained(
                model, num_labels=n_attributes, **dict(args.model_init_kwargs or {})
            )
        if model.config.num_labels != n_attributes:
            raise ValueError(
                f"the model's head has num_labels={model.config.num_labels} but there are {n_attributes} attributes "
                f"{args.attributes}; load it with num_labels={n_attributes}"
            )
        set_attribute_head(model.config, args.attributes)
        model.config.attribute_weights = args.combination_weights
        clamp_max_length(args, model, kwargs.get("processing_class"))
        peft_config = sequence_peft_config(peft_config)
        self.length_reports = {}
        train_dataset = kwargs.get("train_dataset", pos[1] if len(pos) > 1 else None)
        if args.init_head_bias and train_dataset is not None and "ratings" not in column_names(train_dataset):
            validate_attribute_rows(train_dataset, args.attributes, source="train")
            means = _mean_ratings(train_dataset, args.attributes)
            if means is not None and not init_head_bias(model, means):
                logger.info("init_head_bias: %s has no bias in its head; left as is", type(model).__name__)
        with _one_label_for_trl(model.config):
            super().__init__(model, args, *pos, peft_config=peft_config, **kwargs)
        self._setup_reward_model(AttributeCollator)
        self.preference_eval_dataset = None
        if preference_eval_dataset is not None:
            self.preference_eval_dataset = self._tokenize(
                tokenize_preferences,
                preference_eval_dataset,
                "preference_eval",
                self.processing_class,
                max_length=args.max_length,
                too_long=args.too_long,
                num_proc=args.dataset_num_proc,
            )

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        columns = column_names(dataset)
        if {"input_ids", "ratings"} <= set(columns) and "completion" not in columns:
            return dataset  # already tokenized
        return self._tokenize(
            tokenize_attributes,
            dataset,
            dataset_name,
            processing_class,
            args.attributes,
            max_length=args.max_length,
            too_long=args.too_long,
            num_proc=args.dataset_num_proc,
        )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "ratings", "length"]

    def _attribute_scores(self, model, input_ids, attention_mask) -> torch.Tensor:
        forward_kwargs = {"use_cache": False} if self._decoder else {}
        return model(input_ids=input_ids, attention_mask=attention_mask, **forward_kwargs).logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = self._mode
        predictions = self._attribute_scores(model, inputs["input_ids"], inputs["attention_mask"])
        ratings = inputs["ratings"]
        loss = masked_regression_loss(predictions.float(), ratings)
        self._count_tokens(inputs, mode, divisor=self._tp_size)
        self._buffer(mode, predictions=predictions.float(), ratings=ratings.float())
        return (loss, {"logits": predictions.detach()}) if return_outputs else loss

    def _buffered_metrics(self, buffered: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        predictions = torch.cat(buffered["predictions"]).numpy().astype(np.float64)
        ratings = torch.cat(buffered["ratings"]).numpy().astype(np.float64)
        return attribute_metrics(predictions, ratings, self.args.attributes)

    def evaluate(self, eval_dataset=None, *args, **kwargs):
        if self.preference_eval_dataset is not None and not isinstance(eval_dataset, dict):
            # `_metrics` entries are averaged and logged (with the `eval_` prefix) by the evaluation's own log
            for key, value in self.preference_metrics().items():
                self._metrics["eval"][key] = [value]
        return super().evaluate(eval_dataset, *args, **kwargs)

    @torch.no_grad()
    def _score_batches(self, dataloader, split: bool) -> list[torch.Tensor]:
        """Attribute scores of every batch (gathered over processes); `split`: preference batches, chosen rows first,
        returned as `[chosen..., rejected...]` pairs of lists."""
        was_training = self.model.training
        self.model.eval()
        chosen, rejected = [], []
        for batch in dataloader:
            batch = self._prepare_inputs(batch)
            scores = self._attribute_scores(self.model, batch["input_ids"], batch["attention_mask"]).float()
            first, second = torch.chunk(scores, 2) if split else (scores, scores[:0])
            chosen.append(self.accelerator.gather_for_metrics(first).cpu())
            rejected.append(self.accelerator.gather_for_metrics(second).cpu())
        self.model.train(was_training)
        return [torch.cat(chosen).numpy(), torch.cat(rejected).numpy()]

    def preference_metrics(self, dataset=None) -> dict[str, float]:
        """Pairwise accuracy and margin of the combined reward `Σ w_k s_k` on preference pairs (default: the
        `preference_eval_dataset`, already tokenized; another dataset is tokenized first)."""
        if dataset is None:
            dataset = self.preference_eval_dataset
        elif "chosen_ids" not in column_names(dataset):
            dataset = self._tokenize(
                tokenize_preferences,
                dataset,
                "preference",
                self.processing_class,
                max_length=self.args.max_length,
                too_long=self.args.too_long,
            )
        if dataset is None:
            raise ValueError("no preference pairs: pass preference_eval_dataset= to the trainer or a dataset here")
        columns = [c for c in column_names(dataset) if c in ("chosen_ids", "rejected_ids")]
        collator = PreferenceCollator(pad_token_id=self.processing_class.pad_token_id)
        loader = DataLoader(
            dataset.select_columns(columns), batch_size=self.args.per_device_eval_batch_size, collate_fn=collator
        )
        chosen, rejected = self._score_batches(self.accelerator.prepare(loader), split=True)
        return combined_pairwise_accuracy(chosen, rejected, self.args.combination_weights)

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        if is_peft_model(self.model) and self.args.should_save:  # an adapter folder holds no model config
            save_attribute_stats(self.model, output_dir or self.args.output_dir)

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if self.args.store_attribute_stats:
            self.store_attribute_statistics()
        return output

    def store_attribute_statistics(self, dataset=None) -> dict[str, list[float]]:
        """
        Scores every row of `dataset` (default: the eval set, else the train set unless it is a stream) and stores
        each attribute score's mean and std (population) in the model config as `attribute_means` / `attribute_stds`
        (with `attribute_stats_source`), which `save_model` then writes. Returns them (empty when nothing was scored).
        """
        source = "custom"
        if dataset is None:
            dataset, source = self.eval_dataset, "eval"
            if isinstance(dataset, dict):
                source, dataset = next(iter(dataset.items()))
            if dataset is None:
                dataset, source = self.train_dataset, "train"
                if isinstance(dataset, IterableDataset):
                    logger.warning("no eval set and the train set is a stream: attribute statistics not stored")
                    return {}
        scores = self._score_batches(self.get_eval_dataloader(dataset), split=False)[0]
        stats = {"attribute_means": scores.mean(0).tolist(), "attribute_stds": scores.std(0).tolist()}
        config = self.accelerator.unwrap_model(self.model).config
        for key, value in stats.items():
            setattr(config, key, value)
        config.attribute_stats_source = source
        logger.info("attribute statistics on %s set: %s", source, stats)
        return stats


def save_attribute_stats(model, output_dir: str) -> None:
    """Adds the attribute names, weights and statistics of `model.config` to `output_dir/reward_stats.json` (the
    file `modeling.load_reward_model` reads back into the config of an adapter's base model)."""
    path = os.path.join(output_dir, REWARD_STATS_FILE)
    stats = {}
    if os.path.isfile(path):
        with open(path) as f:
            stats = json.load(f)
    for key in (*ATTRIBUTE_STATS_KEYS, "attribute_stats_source", "problem_type"):
        if getattr(model.config, key, None) is not None:
            stats[key] = getattr(model.config, key)
    with open(path, "w") as f:
        json.dump(stats, f, indent=2)
