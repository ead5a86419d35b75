"""What the trainers share: exact metrics over every example since the last log, dataset preparation with a length
report, the reward-head setup, and argument checks.

TRL's trainers log the mean of per-batch metrics; an accuracy, a calibration error or an F1 averaged over batches is
not the metric of the whole set. Our trainers buffer each example's outputs instead (gathered from every process)
and compute each metric once per log over all of them: the whole eval set at evaluation, every training example since
the last log in training. [`RewardTrainerMixin`] holds that logic once for all trainers.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from dataclasses import fields
from enum import Enum

import torch
from transformers import AutoConfig
from trl.trainer.reward_trainer import DataCollatorForPreference
from trl.trainer.utils import global_then_local_main_first

from ..modeling import is_decoder_model, keep_reward_head_fp32, position_limit

logger = logging.getLogger(__name__)


def _trl_base_config(config_cls) -> type | None:
    """The public TRL config class that `config_cls` extends (`trl.RewardConfig` for our BT and ORM configs)."""
    for base in config_cls.__mro__[1:]:
        if base.__module__.split(".")[0] == "trl" and not base.__name__.startswith("_"):
            return base
    return None


def check_config(args, config_cls, default_output_dir: str):
    """
    `args` if it is a `config_cls`, a default one for `None`, and an instance of the TRL config `config_cls` extends
    (e.g. a `trl.RewardConfig` given to [`BradleyTerryTrainer`], as TRL's own trainer takes it) converted to a
    `config_cls`: every TRL field copied, our defaults for the fields it lacks (logged). Anything else is a
    `TypeError` naming the accepted classes.
    """
    if args is None:
        return config_cls(default_output_dir)
    if isinstance(args, config_cls):
        return args
    parent = _trl_base_config(config_cls)
    if parent is None or not isinstance(args, parent):
        accepted = config_cls.__name__ + (f" or a trl.{parent.__name__}" if parent else "")
        raise TypeError(f"args must be a {accepted}, got {type(args).__name__}")
    copied = {f.name: getattr(args, f.name) for f in fields(parent) if f.init and hasattr(args, f.name)}
    # TrainingArguments.__post_init__ turns strings into enums; pass the values so that it can run again
    copied = {name: value.value if isinstance(value, Enum) else value for name, value in copied.items()}
    ours = [f for f in fields(config_cls) if f.init and f.name not in copied]
    config = config_cls(**copied)
    logger.info(
        "args is a %s: converted to %s with its values; fields it lacks keep their defaults: %s",
        type(args).__name__,
        config_cls.__name__,
        ", ".join(f"{f.name}={getattr(config, f.name)!r}" for f in ours) or "none",
    )
    return config


def clamp_max_length(args, model, processing_class) -> None:
    """
    Lowers `args.max_length` to the model's position limit (`modeling.position_limit`) when it is larger or unset,
    with one warning: a row longer than the model reads would otherwise crash training at its first batch (or, for
    a long-tail row, hours in). `model` may be a name (its config is read).
    """
    config = AutoConfig.from_pretrained(model) if isinstance(model, str) else model
    limit = position_limit(config, processing_class)
    if limit is not None and (args.max_length is None or args.max_length > limit):
        logger.warning(
            "max_length=%s exceeds the %d positions the model reads: using max_length=%d (longer rows: too_long=%r)",
            args.max_length,
            limit,
            limit,
            args.too_long,
        )
        args.max_length = limit


def require_decoder_for_prefix_sharing(model, between: str) -> None:
    """`prefix_sharing=True` needs a causal reward model (`model`: a model or its name); `between`: what shares it."""
    if not is_decoder_model(AutoConfig.from_pretrained(model) if isinstance(model, str) else model):
        raise ValueError(
            "prefix_sharing=True needs a causal (decoder) reward model: in a bidirectional encoder every prompt token "
            f"attends to the completion after it, so the prompt's encoding differs between {between} and cannot be "
            "computed once; set prefix_sharing=False for this model"
        )


def sequence_peft_config(peft_config):
    """A copy of `peft_config` with `task_type="SEQ_CLS"` (set when unset), so the score head is trained and saved
    with the adapter; another task type is refused."""
    if peft_config is None:
        return None
    peft_config = copy.deepcopy(peft_config)
    if peft_config.task_type is None:
        peft_config.task_type = "SEQ_CLS"
    elif peft_config.task_type != "SEQ_CLS":
        raise ValueError(
            "peft_config.task_type must be 'SEQ_CLS' (so that the score head is trained and saved with the adapter), "
            f"got {peft_config.task_type!r}"
        )
    return peft_config


class RewardTrainerMixin:
    """
    What our trainers add to a `transformers.Trainer` subclass (listed before it among the bases): the reward-model
    setup ([`_setup_reward_model`]), tokenization with a length report ([`_tokenize`]), and exact metric buffering.

    A trainer calls [`_count_tokens`] and [`_buffer`] in `compute_loss` and implements [`_buffered_metrics`], which
    turns everything buffered since the last log into metrics. [`log`] adds them to the averaged `_metrics` (TRL's
    per-batch metrics, e.g. `num_tokens`), prefixed with `eval_` in evaluation. [`evaluate`] starts from an empty eval
    buffer, so outputs buffered by a `predict` call (which never logs) do not leak into the next evaluation.
    """

    def _setup_reward_model(self, collator_cls=None) -> None:
        """After the parent's `__init__`: replaces TRL's default preference collator by `collator_cls` (a collator
        passed by the user is kept), notes whether the model is a decoder, keeps the reward head in fp32 under
        4-bit/bf16 training, and starts the metric buffers."""
        if collator_cls is not None and type(self.data_collator) is DataCollatorForPreference:
            self.data_collator = collator_cls(
                pad_token_id=self.data_collator.pad_token_id,
                pad_to_multiple_of=self.data_collator.pad_to_multiple_of,
            )
        self._decoder = is_decoder_model(self.model)
        keep_reward_head_fp32(self.model, self.args)
        self._init_metric_buffers()

    def _tokenize(self, tokenize, dataset, dataset_name: str, *args, **kwargs):
        """`tokenize(dataset, *args, name=dataset_name, **kwargs)` on the main process first (others reuse its
        cache); its length report is kept in `self.length_reports[dataset_name]`. Returns the tokenized dataset."""
        with global_then_local_main_first():
            tokenized, report = tokenize(dataset, *args, name=dataset_name, **kwargs)
        self.length_reports[dataset_name] = report
        return tokenized

    def _init_metric_buffers(self) -> None:
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._buffers = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._total_train_tokens = 0

    @property
    def _mode(self) -> str:
        return "train" if self.model.training else "eval"

    def _count_tokens(self, inputs, mode: str, divisor: int = 1) -> None:
        """Adds the batch's real tokens (all processes) to `num_tokens` in training; logs the running total."""
        if mode == "train":
            # 1-element, not 0-d: gloo's all_gather (CPU runs) rejects 0-d tensors
            n_tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum().reshape(1)).sum().item()
            self._total_train_tokens += n_tokens // divisor
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    @torch.no_grad()
    def _buffer(self, mode: str, **tensors: torch.Tensor) -> None:
        """Gathers each tensor over processes and keeps it on the CPU until the next log. Training batches are
        gathered whole; evaluation drops the samples the sampler repeats to even out ranks."""
        gather = self.accelerator.gather if mode == "train" else self.accelerator.gather_for_metrics
        for name, tensor in tensors.items():
            self._buffers[mode][name].append(gather(tensor.detach()).cpu())

    def _buffered_metrics(self, buffered: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        """Metrics of everything buffered since the last log: `buffered[name]` lists the tensors given to `_buffer`."""
        raise NotImplementedError

    def evaluate(self, *args, **kwargs):
        self._buffers["eval"] = defaultdict(list)
        return super().evaluate(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = self._mode
        metrics = {key: sum(values) / len(values) for key, values in self._metrics[mode].items()}
        buffered, self._buffers[mode] = self._buffers[mode], defaultdict(list)
        if buffered:
            metrics.update(self._buffered_metrics(buffered))
        if mode == "eval":
            metrics = {f"eval_{key}": value for key, value in metrics.items()}
        logs.update(metrics)
        self._metrics[mode].clear()
        super().log(logs, start_time)
