"""Process reward trainer: per-step supervision of a token classifier or of a causal LM at a step tag.

TRL removed its `PRMTrainer` in 1.13, so this subclasses TRL's `_BaseTrainer` (a `transformers.Trainer`) and, like
TRL's trainers, overrides only what differs:

- data preparation: row-numbered validation, step labels placed on exact token positions
  (`data.process_tokenization`), over-long rows cut from the left (never a labelled token) or dropped, always reported,
  the last-step-only options;
- the loss: `losses.process_step_loss` (classifier head, 2 classes) or `losses.step_tag_loss` (the LM's logits of
  the good and bad tokens at each tag);
- metrics: every labelled step since the last log is buffered ([`RewardTrainerMixin`]: the whole eval set at
  evaluation, duplicates from uneven ranks dropped), so step accuracy, F1 on bad steps and first-error-step accuracy
  are exact.

The constructor only wires what TRL's `RewardTrainer` would (tokenizer pad token, PEFT, dropout) plus the step tag:
in `"lm"` style it is added to the tokenizer and the embeddings are resized, and under LoRA its embedding row is made
trainable (and saved) through `trainable_token_indices`. The step layout is stored in the model config (and in
`process_reward.json` beside a LoRA adapter) so that [`ProcessRewardScorer`] reads the positions the model was
trained on.
"""

from __future__ import annotations

import copy
import logging

import torch
from accelerate.utils import is_peft_model
from transformers import (
    AddedToken,
    AutoTokenizer,
    set_seed,
)
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import disable_dropout_in_model

from ..data.collators import StepCollator
from ..data.process_tokenization import build_step_format, single_token_id, tokenize_stepwise
from ..evaluation.verifier_metrics import step_metrics
from ..losses import process_step_loss, step_tag_logits, step_tag_loss
from ..modeling import HEADS, PEFT_TASKS, PRM_HEADS, prepare_tokenizer
from ..step_format import FORMAT_ATTRIBUTE, IGNORE_INDEX, write_format_file
from .base import RewardTrainerMixin, check_config, clamp_max_length
from .prm_config import ProcessRewardConfig

logger = logging.getLogger(__name__)

_METRIC_KEYS = ("step_accuracy", "bad_precision", "bad_recall", "bad_f1", "first_error_accuracy", "bad_step_rate")


def _unwrap(model):
    return model.get_base_model() if is_peft_model(model) else model


def _check_head(model, style: str) -> None:
    base = _unwrap(model)
    if style == "classifier":
        if not type(base).__name__.endswith("ForTokenClassification") or base.config.num_labels != 2:
            raise ValueError(
                "model_style='classifier' needs a token-classification model with num_labels=2 (class 1 = good "
                f"step), got {type(base).__name__} with num_labels={base.config.num_labels}"
            )
    elif base.get_output_embeddings() is None:
        raise ValueError(f"model_style='lm' needs a causal LM (AutoModelForCausalLM), got {type(base).__name__}")


def _add_step_tag(model, tokenizer, step_tag: str) -> int:
    """Adds the tag to the tokenizer (if missing) and grows the embeddings to the tokenizer; returns its id."""
    if step_tag not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(step_tag, special=True, normalized=False)])
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        if is_peft_model(model):
            raise ValueError(f"step_tag {step_tag!r} is new, but a PEFT model's embeddings cannot be resized")
        model.resize_token_embeddings(len(tokenizer))
    return tokenizer.convert_tokens_to_ids(step_tag)


def _input_embedding_name(model) -> str:
    embeddings = model.get_input_embeddings()
    return next(name for name, module in model.named_modules() if module is embeddings).split(".")[-1]


def _compact_steps(step_logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(batch, seq_len, 2)` logits and `(batch, seq_len)` labels -> `(batch, n_steps)` P(good) and step labels, in
    step order, padded with -1 / -100."""
    mask = labels != IGNORE_INDEX
    width = max(int(mask.sum(dim=1).max()), 1)
    probs = torch.full((labels.shape[0], width), -1.0, device=labels.device)
    steps = torch.full((labels.shape[0], width), IGNORE_INDEX, dtype=torch.long, device=labels.device)
    rows, cols = mask.nonzero(as_tuple=True)
    slots = (mask.cumsum(dim=1) - 1)[rows, cols]
    probs[rows, slots] = torch.sigmoid((step_logits[..., 1] - step_logits[..., 0]).float())[rows, cols]
    steps[rows, slots] = labels[rows, cols]
    return probs, steps


class ProcessRewardTrainer(RewardTrainerMixin, _BaseTrainer):
    """
    Trains a process reward model on stepwise rows `{"prompt", "completions", "labels"}`, with a
    [`ProcessRewardConfig`]. Arguments as [`~trl.RewardTrainer`]'s; `model` is a token classifier with 2 labels
    (`"classifier"` style) or a causal LM (`"lm"` style), or a name loaded with that stock head.

    Example:

    ```python
    >>> from trl_rewards import ProcessRewardConfig, ProcessRewardTrainer
    >>> args = ProcessRewardConfig("prm", model_style="lm", train_on_last_step_only=True)
    >>> trainer = ProcessRewardTrainer(model=causal_lm, args=args, train_dataset=steps, processing_class=tokenizer)
    >>> trainer.train()
    ```
    """

    # None: the Trainer's rule, i.e. scaled exactly when `num_items_in_batch` is passed (see `compute_loss`)
    loss_is_scaled_for_ga = None
    _tag_names = ["trl", "trl-rewards", "process-reward-model"]
    _name = "Process Reward"

    def __init__(
        self,
        model,
        args: ProcessRewardConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        peft_config=None,
    ):
        args = check_config(args, ProcessRewardConfig, "process-reward-model")
        if train_dataset is None:
            raise ValueError("train_dataset is required")
        style = args.model_style
        set_seed(args.seed)  # a head (or tag embedding) initialized below must not depend on the caller's RNG state
        if isinstance(model, str):
            name = model
            model = HEADS[PRM_HEADS[style]].from_pretrained(
                name, **({"num_labels": 2} if style == "classifier" else {})
            )
            processing_class = processing_class or AutoTokenizer.from_pretrained(name)
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required when model is not a name")
        _check_head(model, style)
        clamp_max_length(args, model, processing_class)
        prepare_tokenizer(processing_class, model)
        if style == "lm":
            tag_id = _add_step_tag(model, processing_class, args.step_tag)
            self.good_token_id = single_token_id(processing_class, args.good_token, "good_token")
            self.bad_token_id = single_token_id(processing_class, args.bad_token, "bad_token")
        self.step_format = build_step_format(processing_class, style, args.step_separator, args.step_tag)
        self.process_format = {
            "model_style": style,
            "step_separator": args.step_separator,
            "step_tag": args.step_tag,
            "good_token": args.good_token,
            "bad_token": args.bad_token,
        }
        setattr(_unwrap(model).config, FORMAT_ATTRIBUTE, self.process_format)
        if peft_config is not None:
            model = self._wrap_peft(model, peft_config, args, tag_id if style == "lm" else None)
        if args.disable_dropout:
            disable_dropout_in_model(model)
        if data_collator is None:
            data_collator = StepCollator(processing_class.pad_token_id, args.pad_to_multiple_of)
        self.length_reports = {}
        train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train", training=True)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_dataset(d, processing_class, args, k) for k, d in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, processing_class, args, "eval")
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        # Evaluation calls compute_loss (not the model's own loss) when there are no label names.
        self.can_return_loss = True
        self.label_names = []
        self._setup_reward_model()

    @staticmethod
    def _wrap_peft(model, peft_config, args, tag_id):
        from peft import get_peft_model

        if is_peft_model(model):
            raise ValueError("got a PeftModel and a peft_config: merge the adapter first, or pass no peft_config")
        peft_config = copy.deepcopy(peft_config)
        task = PEFT_TASKS[PRM_HEADS[args.model_style]]
        if peft_config.task_type is None:
            peft_config.task_type = task
        elif peft_config.task_type != task:
            raise ValueError(
                f"peft_config.task_type must be {task!r} with model_style={args.model_style!r} (so that the head is "
                f"saved with the adapter), got {peft_config.task_type!r}"
            )
        head = next((n for n in ("score", "classifier") if hasattr(_unwrap(model), n)), None)
        if args.model_style == "classifier" and head and hasattr(peft_config, "exclude_modules"):
            # TOKEN_CLS saves the head whole (modules_to_save); PEFT keeps LoRA off the head for SEQ_CLS only, and
            # "all-linear" would otherwise put an adapter on it and then refuse to save it whole.
            excluded = peft_config.exclude_modules
            if excluded is None or isinstance(excluded, list | set | tuple):
                peft_config.exclude_modules = sorted({*(excluded or ()), head})
        if tag_id is not None:  # the tag's embedding row is new: train it and save it with the adapter
            if not hasattr(peft_config, "trainable_token_indices"):
                raise ValueError(
                    f"model_style='lm' needs a PEFT config with trainable_token_indices (e.g. LoraConfig) so the "
                    f"step tag's embedding is saved; got {type(peft_config).__name__}"
                )
            indices = peft_config.trainable_token_indices or {}
            if isinstance(indices, list):
                indices = {_input_embedding_name(model): indices}
            name = _input_embedding_name(model)
            indices[name] = sorted(set(indices.get(name, [])) | {tag_id})
            peft_config.trainable_token_indices = indices
        model = get_peft_model(model, peft_config)
        if args.activation_checkpointing:
            model.enable_input_require_grads()
        return model

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name, training=False):
        columns = dataset.column_names
        if {"input_ids", "labels"} <= set(columns) and "completions" not in columns:
            if "length" not in columns:
                dataset = dataset.map(lambda ex: {"length": len(ex["input_ids"])})
            return dataset  # already tokenized
        last_only = args.train_on_last_step_only if training else args.eval_on_last_step_only
        return self._tokenize(
            tokenize_stepwise,
            dataset,
            dataset_name,
            processing_class,
            self.step_format,
            max_length=args.max_length,
            too_long=args.too_long,
            last_step_only=last_only,
            num_proc=args.dataset_num_proc,
        )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "labels", "length"]

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            if isinstance(eval_dataset, dict):
                eval_dataset = {
                    k: self._prepare_dataset(d, self.processing_class, self.args, k) for k, d in eval_dataset.items()
                }
            else:
                eval_dataset = self._prepare_dataset(eval_dataset, self.processing_class, self.args, "eval")
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = self._mode
        forward_kwargs = {"use_cache": False} if self._decoder else {}
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **forward_kwargs)
        labels = inputs["labels"]
        # With `num_items_in_batch` (the labelled steps of the whole accumulated, cross-device batch) the loss is the
        # mean over every step of the global batch, whatever its split into micro-batches and processes; without it,
        # the mean over this micro-batch's steps.
        reduction = "sum" if num_items_in_batch is not None else "mean"
        if self.args.model_style == "classifier":
            step_logits = outputs.logits
            loss = process_step_loss(step_logits, labels, reduction=reduction)
        else:
            loss = step_tag_loss(outputs.logits, labels, self.good_token_id, self.bad_token_id, reduction=reduction)
            step_logits = step_tag_logits(outputs.logits.detach(), self.good_token_id, self.bad_token_id)
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:  # the count spans every process; DDP averages gradients
                loss = loss * self.accelerator.num_processes

        self._count_tokens(inputs, mode)
        with torch.no_grad():
            probs, steps = _compact_steps(step_logits.detach(), labels)
            probs = self.accelerator.pad_across_processes(probs, dim=1, pad_index=-1.0)
            steps = self.accelerator.pad_across_processes(steps, dim=1, pad_index=IGNORE_INDEX)
        self._buffer(mode, probs=probs, steps=steps)
        return (loss, {"step_probabilities": probs}) if return_outputs else loss

    def _buffered_metrics(self, buffered: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        step_probs, step_labels = [], []
        for probs, steps in zip(buffered["probs"], buffered["steps"], strict=True):
            for row_probs, row_steps in zip(probs.tolist(), steps.tolist(), strict=True):
                kept = [(p, y) for p, y in zip(row_probs, row_steps, strict=True) if y != IGNORE_INDEX]
                if kept:
                    step_probs.append([p for p, _ in kept])
                    step_labels.append([bool(y) for _, y in kept])
        if not step_probs:
            return {}
        report = step_metrics(step_probs, step_labels, threshold=self.args.step_threshold)
        return {key: report[key] for key in _METRIC_KEYS}

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        if not self.args.should_save:  # under ZeRO-3 every process passes here; the main one writes
            return
        write_format_file(output_dir or self.args.output_dir, self.process_format)
