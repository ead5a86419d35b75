"""Scoring solutions step by step with a trained process reward model (PRM), and aggregating step scores.

[`ProcessRewardScorer`] returns P(step correct) for every step of a solution (given as a list of steps, or as text
split on a separator) and a solution score aggregated from them. It encodes with the very function the trainer
tokenizes with ([`encode_steps`]), so every probability is read at a trained label position, and it reads the step
layout (style, separator, tag, good/bad tokens) that [`ProcessRewardTrainer`] stores in the model config (and, for a
LoRA adapter, in `process_reward.json` beside it).

Sequences are right-padded in length-sorted micro-batches: padding never moves a real token, so the probabilities do
not depend on the batch size or the order of the inputs. Outcome reward models are scored with
[`~trl_rewards.scoring.RewardScorer`]. This module imports no trainer code.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .data.process_tokenization import (
    EncodedSteps,
    encode_steps,
    pad_right,
    single_token_id,
    step_format,
)
from .data.stepwise import split_steps
from .losses import step_tag_logits
from .modeling import (
    ADAPTER_CONFIG,
    is_adapter_path,
    is_decoder_model,
    load_reward_model,
    model_init_kwargs,
    prepare_tokenizer,
    zero3_init_disabled,
)

AGGREGATIONS = ("product", "min", "last", "mean", "softmin")
PRM_STYLES = ("classifier", "lm")
FORMAT_ATTRIBUTE = "process_reward_format"  # in the model config: the step layout the model was trained with
FORMAT_FILE = "process_reward.json"  # the same beside a PEFT adapter, whose folder holds no model config
FORMAT_KEYS = ("model_style", "step_separator", "step_tag", "good_token", "bad_token")
LM_DEFAULTS = {"step_tag": "<|prm_label|>", "good_token": "+", "bad_token": "-"}


def aggregate_step_scores(probs: Sequence[float], method: str = "product", temperature: float | None = None) -> float:
    r"""
    One solution score from its per-step probabilities of being correct.

    - `"product"`: `Π p_i`, the probability that every step is correct if errors are independent (Lightman et al.);
    - `"min"`: the weakest step; `"last"`: the last step's probability; `"mean"`: the average;
    - `"softmin"`: `Σ w_i p_i` with `w = softmax(-p / T)`: tends to `min` as `T → 0` and to `mean` as `T → ∞`.

    Args:
        probs (`Sequence[float]` of shape `(n_steps,)`): P(step correct) of each step, in `[0, 1]`.
        method (`str`, *optional*, defaults to `"product"`): one of `AGGREGATIONS`.
        temperature (`float`, *optional*): `T > 0`, required by `"softmin"` and rejected by the other methods.

    Returns:
        `float` in `[0, 1]`.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"method must be one of {AGGREGATIONS}, got {method!r}")
    if method == "softmin":
        if temperature is None or not temperature > 0 or not np.isfinite(temperature):
            raise ValueError(f"method='softmin' needs a finite temperature > 0, got {temperature!r}")
    elif temperature is not None:
        raise ValueError(
            f"temperature is used only by method='softmin', got temperature={temperature} with {method!r}"
        )
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"probs must be a non-empty 1-D sequence, got shape {p.shape}")
    outside = np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))
    if outside.size:
        raise ValueError(f"probs[{outside[0]}] is {p[outside[0]]}, not a probability")
    if method == "product":
        return float(np.prod(p))
    if method == "min":
        return float(p.min())
    if method == "last":
        return float(p[-1])
    if method == "mean":
        return float(p.mean())
    logits = -p / temperature
    weights = np.exp(logits - logits.max())
    return float(np.sum(weights * p) / np.sum(weights))


def read_process_format(path: str) -> dict[str, Any] | None:
    """The step layout saved with a PRM: `process_reward.json` in the folder, else the model config's attribute."""
    json_path = os.path.join(path, FORMAT_FILE)
    if os.path.isfile(json_path):
        with open(json_path) as f:
            return json.load(f)
    if is_adapter_path(path):
        return None
    try:
        return getattr(AutoConfig.from_pretrained(path), FORMAT_ATTRIBUTE, None)
    except OSError:
        return None


def load_process_reward_model(
    model_name_or_path: str,
    model_style: str | None = None,
    model_args=None,
    partition_under_zero3: bool = True,
    **from_pretrained_kwargs,
):
    """
    Loads a PRM (a trained one, or a base model to train) and its tokenizer: a full model or a PEFT adapter folder.

    Args:
        model_name_or_path (`str`): Hub id or folder; an adapter folder loads its base, then the adapter.
        model_style (`str`, *optional*): `"classifier"` (`AutoModelForTokenClassification`, 2 labels) or `"lm"`
            (`AutoModelForCausalLM`); read from the saved step layout when not given.
        model_args ([`~trl.ModelConfig`], *optional*): dtype, revision, quantization settings.
        partition_under_zero3 (`bool`): when DeepSpeed ZeRO-3 is active, `True` (for training) lets it partition the
            weights; `False` (for scoring) loads the whole model on this rank.
        **from_pretrained_kwargs: passed to `from_pretrained`.

    Returns:
        `(model, tokenizer)` in eval mode; the model config carries the saved step layout, if any.
    """
    saved = read_process_format(model_name_or_path)
    style = model_style or (saved or {}).get("model_style")
    if style not in PRM_STYLES:
        raise ValueError(
            f"model_style must be one of {PRM_STYLES} ({model_name_or_path!r} stores no step layout), got {style!r}"
        )
    if saved is not None and saved.get("model_style") not in (None, style):
        raise ValueError(
            f"{model_name_or_path!r} was trained with model_style={saved['model_style']!r}, not {style!r}"
        )
    if style == "classifier":
        model, tokenizer = load_reward_model(
            model_name_or_path,
            model_args=model_args,
            head="token",
            num_labels=2,
            partition_under_zero3=partition_under_zero3,
            **from_pretrained_kwargs,
        )
    else:
        kwargs = model_init_kwargs(model_args, **from_pretrained_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(
            model_name_or_path, **{k: kwargs[k] for k in ("revision", "trust_remote_code") if k in kwargs}
        )
        with contextlib.nullcontext() if partition_under_zero3 else zero3_init_disabled():
            if is_adapter_path(model_name_or_path):
                from peft import PeftModel

                with open(os.path.join(model_name_or_path, ADAPTER_CONFIG)) as f:
                    base_path = json.load(f).get("base_model_name_or_path")
                if not base_path:
                    raise ValueError(f"adapter {model_name_or_path!r} records no base model (base_model_name_or_path)")
                base = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
                if base.get_input_embeddings().num_embeddings < len(tokenizer):  # the step tag was added in training
                    base.resize_token_embeddings(len(tokenizer))
                model = PeftModel.from_pretrained(base, model_name_or_path)
            else:
                model = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
        prepare_tokenizer(tokenizer, model)
        model.eval()
    if saved is not None:
        setattr(model.config, FORMAT_ATTRIBUTE, saved)
    return model, tokenizer


def resolve_process_format(model, **explicit) -> dict[str, Any]:
    """
    The step layout to score with: explicit values (not `None`), then the model config's saved layout, then the
    defaults (style inferred from the head: a causal LM is `"lm"`).
    """
    unknown = set(explicit) - set(FORMAT_KEYS)
    if unknown:
        raise TypeError(f"unknown step-layout keys {sorted(unknown)}")
    saved = dict(getattr(model.config, FORMAT_ATTRIBUTE, None) or {})
    given = {k: v for k, v in explicit.items() if v is not None}
    style = given.get("model_style") or saved.get("model_style")
    if style is None:
        style = "lm" if model.get_output_embeddings() is not None else "classifier"
    if style not in PRM_STYLES:
        raise ValueError(f"model_style must be one of {PRM_STYLES}, got {style!r}")
    if style == "classifier":
        extra = sorted(k for k in LM_DEFAULTS if k in given)
        if extra:
            raise ValueError(f"{extra} are used only with model_style='lm'")
        defaults = {"step_separator": "\n", **dict.fromkeys(LM_DEFAULTS)}
    else:
        defaults = {"step_separator": "\n", **LM_DEFAULTS}
    saved = {k: v for k, v in saved.items() if v is not None and saved.get("model_style") == style}
    return {**defaults, **saved, **given, "model_style": style}


class ProcessRewardScorer:
    """
    Per-step probabilities and aggregated solution scores from a process reward model.

    Args:
        model: a PRM: a token classifier (2 labels, 1 = good) or a causal LM with a step tag (plain or PEFT).
        tokenizer: its tokenizer (with the step tag, in `"lm"` style).
        model_style, step_separator, step_tag, good_token, bad_token (`str`, *optional*): the step layout; by
            default the one saved in the model config by the trainer (see [`resolve_process_format`]).
        text_separator (`str`, *optional*, defaults to `"\\n"`): what splits a solution given as one string.
        batch_size (`int`, *optional*, defaults to `16`): most solutions per forward pass.
        max_tokens_per_batch (`int`, *optional*): most padded tokens per forward pass.
        max_length (`int`, *optional*): longer sequences lose tokens from the left as in training (the prompt
            first, then the oldest steps' text, never a step's label token; `self.n_truncated` counts them); a
            solution that cannot fit that way raises a `ValueError`.
        device: where to run; defaults to the model's device.
    """

    def __init__(
        self,
        model,
        tokenizer,
        model_style: str | None = None,
        step_separator: str | None = None,
        step_tag: str | None = None,
        good_token: str | None = None,
        bad_token: str | None = None,
        text_separator: str = "\n",
        batch_size: int = 16,
        max_tokens_per_batch: int | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not text_separator:
            raise ValueError("text_separator must not be empty")
        self.format = resolve_process_format(
            model,
            model_style=model_style,
            step_separator=step_separator,
            step_tag=step_tag,
            good_token=good_token,
            bad_token=bad_token,
        )
        self.model = model.eval()
        self.tokenizer = prepare_tokenizer(tokenizer, model)
        self.step_format = step_format(
            tokenizer, self.format["model_style"], self.format["step_separator"], self.format["step_tag"]
        )
        if self.format["model_style"] == "lm":
            self.good_token_id = single_token_id(tokenizer, self.format["good_token"], "good_token")
            self.bad_token_id = single_token_id(tokenizer, self.format["bad_token"], "bad_token")
        self.decoder = is_decoder_model(model)
        self.text_separator = text_separator
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_length = max_length
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.n_truncated = 0

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, model_args=None, **kwargs) -> ProcessRewardScorer:
        """Loads a plain model or an adapter folder with [`load_process_reward_model`] and wraps it."""
        model, tokenizer = load_process_reward_model(
            model_name_or_path,
            model_style=kwargs.get("model_style"),
            model_args=model_args,
            partition_under_zero3=False,
        )
        return cls(model, tokenizer, **kwargs)

    def split(self, solution: str | Sequence[str]) -> list[str]:
        """A solution's steps: a list is kept as is, a string is split on `text_separator` (empty parts dropped)."""
        steps = split_steps(solution, self.text_separator) if isinstance(solution, str) else list(solution)
        if not steps or not all(isinstance(s, str) and s.strip() for s in steps):
            raise ValueError(f"a solution needs at least one non-empty step, got {solution!r:.80}")
        return steps

    def encode(self, prompt: str, solution: str | Sequence[str]) -> EncodedSteps:
        """Token ids and label positions of one solution, exactly as the trainer builds them."""
        encoded = encode_steps(self.tokenizer, self.step_format, prompt, self.split(solution))
        fitted = encoded.fit(self.max_length)
        if fitted is None:
            needed = len(encoded.input_ids) - (encoded.label_positions[0] - encoded.context_start)
            raise ValueError(
                f"keeping every step's label token needs at least {needed} tokens, more than "
                f"max_length={self.max_length}"
            )
        self.n_truncated += fitted is not encoded
        return fitted

    def _micro_batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches, current = [], []
        for i in order:
            over = (
                self.max_tokens_per_batch is not None and (len(current) + 1) * lengths[i] > self.max_tokens_per_batch
            )
            if current and (len(current) == self.batch_size or over):
                batches.append(current)
                current = []
            current.append(i)
        return batches + [current] if current else batches

    def _forward(self, rows: list[EncodedSteps]) -> list[list[float]]:
        input_ids = pad_right([row.input_ids for row in rows], self.tokenizer.pad_token_id)
        mask = pad_right([[1] * len(row.input_ids) for row in rows], 0)
        kwargs = {"use_cache": False} if self.decoder else {}
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), **kwargs).logits
        if self.format["model_style"] == "lm":
            logits = step_tag_logits(logits, self.good_token_id, self.bad_token_id)
        probs = torch.sigmoid((logits[..., 1] - logits[..., 0]).double()).cpu()
        return [probs[i, row.label_positions].tolist() for i, row in enumerate(rows)]

    @torch.inference_mode()
    def step_probabilities(
        self, prompts: Sequence[str], solutions: Sequence[str | Sequence[str]]
    ) -> list[list[float]]:
        """
        P(step correct) for every step of every solution.

        Args:
            prompts (`Sequence[str]`): the problems.
            solutions (`Sequence[str | Sequence[str]]`): each a list of steps or a text split on `text_separator`.

        Returns:
            `list[list[float]]`: one list per solution, one probability per step, in input order.
        """
        if len(prompts) != len(solutions):
            raise ValueError(f"got {len(prompts)} prompts but {len(solutions)} solutions")
        rows = []
        for i, (prompt, solution) in enumerate(zip(prompts, solutions, strict=True)):
            try:
                rows.append(self.encode(prompt, solution))
            except ValueError as err:
                raise ValueError(f"solution {i}: {err}") from err
        out: list[list[float]] = [[] for _ in rows]
        for batch in self._micro_batches([len(row.input_ids) for row in rows]):
            for i, probs in zip(batch, self._forward([rows[i] for i in batch]), strict=True):
                out[i] = probs
        return out

    def score(
        self,
        prompts: Sequence[str],
        solutions: Sequence[str | Sequence[str]],
        aggregation: str = "product",
        temperature: float | None = None,
    ) -> list[float]:
        """One score per solution: its step probabilities aggregated by [`aggregate_step_scores`]."""
        aggregate_step_scores([1.0], aggregation, temperature)  # rejects a bad method/temperature before any forward
        return [
            aggregate_step_scores(p, aggregation, temperature) for p in self.step_probabilities(prompts, solutions)
        ]
