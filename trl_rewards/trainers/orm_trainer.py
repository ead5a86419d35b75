"""Outcome reward trainer: TRL's `RewardTrainer` on `{"prompt", "completion", "label"}` rows with a BCE loss.

The model is TRL's stock reward model, `AutoModelForSequenceClassification(num_labels=1)`, whose score is read as the
logit of P(final answer correct). What differs from `trl.RewardTrainer`, and nothing else is overridden:

- data preparation: row-numbered validation (`data.outcome.validate_outcome_rows`), tokenization identical to
  [`RewardScorer`]'s, over-long rows truncated/dropped/refused and always reported, a completion mask for
  `supervision="all_tokens"`;
- the loss: `losses.outcome_loss` on the stock read-out score (`"final_token"`), or `losses.token_outcome_loss` on
  the score head applied at every completion token plus the read-out token (`"all_tokens"`);
- metrics: every score since the last log is buffered (the whole eval set at evaluation, [`RewardTrainerMixin`]),
  so accuracy, AUROC, calibration error and Brier score are exact.

With `prefix_sharing=True` (decoders), the rows of one prompt are regrouped after tokenization, at most
`completions_per_row` per example, and each example is one packed row `prefix + completion_1 + ... + completion_k`
(`data.prefix_sharing`): the prompt is encoded once and each score is read, from the `score` head's per-token output,
where the stock head reads the completion alone; the loss and metrics are those of the same completions unpacked.

Per-token scores (`"all_tokens"`). A decoder's `...ForSequenceClassification` applies its linear `score` head to every
position and then picks the last non-padding one: a forward hook on the head keeps the full `(batch, seq_len)` output,
so per-token scores cost nothing and equal the stock score at the read-out token by construction. A BERT-style
encoder reads `classifier(dropout(tanh(pooler.dense(h_[CLS]))))`: the same transform is applied to every final
hidden state. Other heads are rejected with `supervision="all_tokens"`. Inference always uses the stock output.
"""

from __future__ import annotations

import numpy as np
import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from trl import RewardTrainer

from ..data.collators import OutcomeCollator
from ..data.outcome_tokenization import tokenize_outcomes
from ..data.prefix_sharing import PackedOutcomeCollator, check_packing_support, group_outcomes, packed_token_rewards
from ..data.streaming import column_names
from ..evaluation.verifier_metrics import outcome_metrics
from ..losses import outcome_loss, token_outcome_loss
from ..modeling import is_decoder_model
from .base import (
    RewardTrainerMixin,
    check_config,
    clamp_max_length,
    require_decoder_for_prefix_sharing,
    sequence_peft_config,
)
from .orm_config import OutcomeRewardConfig


class _TokenScores:
    """The score head applied at every position, for a decoder (hook on `score`) or a BERT-style encoder."""

    def __init__(self, model):
        base = model.get_base_model() if is_peft_model(model) else model
        self.decoder = is_decoder_model(base)
        self.captured = None
        head = getattr(base, "score", None)
        encoder = getattr(base, base.base_model_prefix, None)
        pooler = getattr(encoder, "pooler", None)
        if self.decoder and isinstance(head, torch.nn.Module):
            head.register_forward_hook(self._capture)
        elif (
            not self.decoder
            and all(hasattr(pooler, a) for a in ("dense", "activation"))
            and hasattr(base, "classifier")
        ):
            dropout = getattr(base, "dropout", None) or torch.nn.Identity()
            self.transform = lambda h: base.classifier(dropout(pooler.activation(pooler.dense(h))))
        else:
            raise ValueError(
                "supervision='all_tokens' supports decoders whose sequence-classification head is a `score` layer "
                f"applied to every position, and BERT-style encoders with a pooler; {type(base).__name__} is neither. "
                "Use supervision='final_token'."
            )

    def _capture(self, module, args, output):
        self.captured = output

    def __call__(
        self, outputs, input_ids: torch.Tensor, pad_token_id: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(token_scores, readout)`: `(batch, seq_len)` scores and the `(batch,)` read-out positions."""
        if self.decoder:
            scores, self.captured = self.captured, None
            # The stock head's rule: the rightmost token that is not padding.
            non_pad = (input_ids != pad_token_id).int() if pad_token_id is not None else torch.ones_like(input_ids)
            readout = (torch.arange(input_ids.shape[1], device=input_ids.device) * non_pad).argmax(-1)
        else:
            scores = self.transform(outputs.hidden_states[-1])
            readout = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        return scores.squeeze(-1), readout


class OutcomeRewardTrainer(RewardTrainerMixin, RewardTrainer):
    """
    Trains an outcome reward model: P(final answer correct) = σ(score). Same arguments as [`~trl.RewardTrainer`],
    with an [`OutcomeRewardConfig`]; rows are `{"prompt", "completion", "label"}` (label a bool).

    Example:

    ```python
    >>> from trl_rewards import OutcomeRewardConfig, OutcomeRewardTrainer
    >>> from trl_rewards.data.outcome import load_gsm8k_verifier, split_by_question
    >>> train, test = split_by_question(load_gsm8k_verifier("model_solutions.train.jsonl"))
    >>> trainer = OutcomeRewardTrainer(model=model, args=OutcomeRewardConfig("orm"), train_dataset=train,
    ...                                eval_dataset=test, processing_class=tokenizer)
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "reward-trainer", "trl-rewards", "outcome-reward-model"]

    def __init__(self, model, args: OutcomeRewardConfig | None = None, *pos, peft_config=None, **kwargs):
        args = check_config(args, OutcomeRewardConfig, "outcome-reward-model")
        clamp_max_length(args, model, kwargs.get("processing_class"))
        peft_config = sequence_peft_config(peft_config)
        if args.prefix_sharing:
            require_decoder_for_prefix_sharing(model, "completions")
        self.length_reports = {}
        super().__init__(model, args, *pos, peft_config=peft_config, **kwargs)
        self._setup_reward_model(OutcomeCollator)
        if args.prefix_sharing:
            check_packing_support(self.model)
            if kwargs.get("data_collator") is not None:
                raise ValueError(
                    f"prefix_sharing=True packs the completions of a prompt with its own collator; a custom "
                    f"data_collator ({type(self.data_collator).__name__}) cannot be used with it"
                )
            self.data_collator = PackedOutcomeCollator(
                self.data_collator.pad_token_id, self.data_collator.pad_to_multiple_of
            )
        self._token_scores = _TokenScores(self.model) if args.supervision == "all_tokens" else None

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        columns = column_names(dataset)
        if args.prefix_sharing:
            return self._prepare_grouped(dataset, columns, processing_class, args, dataset_name)
        if {"input_ids", "label"} <= set(columns) and "completion" not in columns:
            return dataset  # already tokenized
        return self._tokenize(
            tokenize_outcomes,
            dataset,
            dataset_name,
            processing_class,
            max_length=args.max_length,
            too_long=args.too_long,
            with_completion_mask=args.supervision == "all_tokens",
            num_proc=args.dataset_num_proc,
        )

    def _prepare_grouped(self, dataset, columns, processing_class, args, dataset_name):
        """Tokenized rows regrouped by prompt ([`group_outcomes`]): one example per packed row."""
        if {"sequences", "labels"} <= set(columns):  # already grouped
            for row, (sequences, labels) in enumerate(zip(dataset["sequences"], dataset["labels"], strict=True)):
                if not 1 <= len(sequences) == len(labels) <= args.completions_per_row:
                    raise ValueError(
                        f"{dataset_name} row {row}: a grouped row needs 1 to completions_per_row="
                        f"{args.completions_per_row} sequences and one label each, got {len(sequences)} sequences "
                        f"and {len(labels)} labels"
                    )
            return dataset
        if not isinstance(dataset, Dataset):
            raise ValueError(
                f"prefix_sharing=True groups the rows of {dataset_name} by prompt, which needs a map-style Dataset; "
                f"got {type(dataset).__name__} (a stream): set prefix_sharing=False or load it without streaming"
            )
        tokenized = self._tokenize(
            tokenize_outcomes,
            dataset,
            dataset_name,
            processing_class,
            max_length=args.max_length,
            too_long=args.too_long,
            num_proc=args.dataset_num_proc,
        )
        if len(tokenized) != len(dataset):  # only an empty truncated row is dropped under "truncate"
            raise ValueError(
                f"{dataset_name}: {len(dataset) - len(tokenized)} rows were dropped while tokenizing, so rows can no "
                "longer be matched to their prompts for prefix_sharing=True; raise max_length"
            )
        groups = group_outcomes(
            tokenized["input_ids"], tokenized["label"], dataset["prompt"], args.completions_per_row
        )
        return Dataset.from_list(groups)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = (
                ["sequences", "labels", "length"]
                if self.args.prefix_sharing
                else ["input_ids", "completion_mask", "label", "length"]
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = self._mode
        if self.args.prefix_sharing:
            index = inputs["completion_index"]
            scores = packed_token_rewards(model, inputs)[index[:, 0], index[:, 1]]
            loss = outcome_loss(scores, inputs["label"])
            self._count_tokens(inputs, mode, divisor=self._tp_size)
            # per packed row, NaN-padded to `completions_per_row`: evaluation's gather drops repeated *rows*
            rows = inputs["input_ids"].shape[0]
            counts = torch.bincount(index[:, 0], minlength=rows)
            slot = torch.arange(len(index), device=index.device) - (counts.cumsum(0) - counts)[index[:, 0]]
            padded = scores.new_full((2, rows, self.args.completions_per_row), float("nan"))
            padded[0, index[:, 0], slot], padded[1, index[:, 0], slot] = scores.detach(), inputs["label"]
            self._buffer(mode, scores=padded[0].float(), labels=padded[1].float())
            return (loss, {"logits": scores.detach()}) if return_outputs else loss
        forward_kwargs = {"use_cache": False} if self._decoder else {}
        if self._token_scores is not None and not self._decoder:
            forward_kwargs["output_hidden_states"] = True
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **forward_kwargs)
        scores = outputs.logits.squeeze(-1)
        labels = inputs["label"]
        if self._token_scores is None:
            loss = outcome_loss(scores, labels)
        else:
            pad_token_id = self.processing_class.pad_token_id
            token_scores, readout = self._token_scores(outputs, inputs["input_ids"], pad_token_id)
            mask = inputs["completion_mask"].bool() & inputs["attention_mask"].bool()
            mask[torch.arange(mask.shape[0], device=mask.device), readout] = True
            loss = token_outcome_loss(token_scores, labels, mask)

        self._count_tokens(inputs, mode, divisor=self._tp_size)
        self._buffer(mode, scores=scores.float(), labels=labels.float())
        return (loss, {"logits": scores.detach()}) if return_outputs else loss

    def _buffered_metrics(self, buffered: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        scores = torch.cat(buffered["scores"]).flatten().numpy().astype(np.float64)
        labels = torch.cat(buffered["labels"]).flatten().numpy()
        scores, labels = scores[~np.isnan(labels)], labels[~np.isnan(labels)]  # the padding of packed rows
        return outcome_metrics(scores, labels, n_bins=self.args.calibration_bins)
