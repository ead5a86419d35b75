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
from trl import RewardTrainer

from ..data.collators import OutcomeCollator
from ..data.outcome_tokenization import tokenize_outcomes
from ..data.streaming import column_names
from ..evaluation.verifier_metrics import outcome_metrics
from ..losses import outcome_loss, token_outcome_loss
from ..modeling import is_decoder_model
from .base import RewardTrainerMixin, check_config, clamp_max_length, sequence_peft_config
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
        self.length_reports = {}
        super().__init__(model, args, *pos, peft_config=peft_config, **kwargs)
        self._setup_reward_model(OutcomeCollator)
        self._token_scores = _TokenScores(self.model) if args.supervision == "all_tokens" else None

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        columns = column_names(dataset)
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

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "completion_mask", "label", "length"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = self._mode
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
        scores = torch.cat(buffered["scores"]).numpy().astype(np.float64)
        labels = torch.cat(buffered["labels"]).numpy()
        return outcome_metrics(scores, labels, n_bins=self.args.calibration_bins)
