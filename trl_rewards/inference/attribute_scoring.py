"""Scoring `(prompt, completion)` pairs with a multi-attribute regression reward model (K outputs).

[`AttributeScorer`] is a [`RewardScorer`] whose head has one output per attribute: the same tokenization, length-sorted
micro-batches, truncation and padding rules (so a score never depends on batching), and the same read-out token as in
training. `score_attributes` returns the `(N, K)` attribute scores; `score` combines them into one reward per row with
attribute weights, so the scorer drops in wherever a `RewardScorer` is used (evaluation runner, best-of-N).
`embed_prompts` returns the final hidden state of each prompt alone at that read-out token: the prompt feature of an
ArmoRM-style gating layer (`rewards.attribute_rewards`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig

from ..data.encoding import encode_chat, encode_text
from ..data.length import truncate_ids
from ..modeling import REWARD_STATS_FILE, is_adapter_path, load_reward_model
from .batching import length_sorted_batches
from .sequence_scoring import _TRUNCATION, RewardScorer, warn_truncated


def attribute_names(config) -> list[str]:
    """The attribute names of a K-output head: `attribute_names` written by our trainer, else `id2label`."""
    names = getattr(config, "attribute_names", None)
    if names:
        return list(names)
    return [config.id2label[i] for i in range(config.num_labels)]


def resolve_weights(weights, attributes: Sequence[str], default=None) -> np.ndarray:
    """
    `(K,)` combination weights from a `{name: weight}` dict (attributes not named weigh 0), a list of K numbers,
    or `None` (`default`, e.g. the weights stored with the model, else `1/K` each). Unknown names, a wrong length,
    non-finite or all-zero weights raise a `ValueError`.
    """
    k = len(attributes)
    if weights is None:
        weights = default if default is not None else [1.0 / k] * k
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(attributes))
        if unknown:
            raise ValueError(
                f"weights name unknown attributes {unknown}; the model's attributes are {list(attributes)}"
            )
        weights = [float(weights.get(name, 0.0)) for name in attributes]
    array = np.asarray(weights, dtype=np.float64)
    if array.shape != (k,):
        raise ValueError(f"weights must give one value per attribute {list(attributes)}, got {list(weights)}")
    if not np.all(np.isfinite(array)) or not np.any(array):
        raise ValueError(f"weights must be finite and not all 0, got {array.tolist()}")
    return array


def saved_num_attributes(path: str) -> int:
    """Number of head outputs of a saved attribute model: its config's `num_labels`, or for an adapter folder the
    `attribute_names` our trainer writes beside it."""
    if is_adapter_path(path):
        stats_path = os.path.join(path, REWARD_STATS_FILE)
        names = None
        if os.path.isfile(stats_path):
            with open(stats_path) as f:
                names = json.load(f).get("attribute_names")
        if not names:
            raise ValueError(
                f"adapter {path!r} records no attribute_names ({REWARD_STATS_FILE}); not an attribute model"
            )
        return len(names)
    return AutoConfig.from_pretrained(path).num_labels


class AttributeScorer(RewardScorer):
    """
    Scores texts with a K-output attribute reward model; one score per attribute, combined by weights.

    Args:
        model: a sequence-classification model with one output per attribute (plain or PEFT).
        tokenizer: its tokenizer.
        weights (`dict[str, float]`, `list[float]` or `None`): combination weights of [`score`]; a dict names
            attributes (others weigh 0). Default: the `attribute_weights` stored by the trainer, else `1/K` each.
        normalize (`bool`): z-score each attribute with the `attribute_means` / `attribute_stds` stored in the model
            config at training time before combining.
        **kwargs: `batch_size`, `max_tokens_per_batch`, `max_length`, `padding_side`, `device` as for
            [`RewardScorer`].
    """

    def __init__(self, model, tokenizer, weights=None, normalize: bool = False, **kwargs):
        super().__init__(model, tokenizer, normalize=False, **kwargs)
        config = model.config
        self.attributes = attribute_names(config)
        self.weights = resolve_weights(weights, self.attributes, getattr(config, "attribute_weights", None))
        k = len(self.attributes)
        self.means, self.stds = np.zeros(k), np.ones(k)
        if normalize:
            means, stds = getattr(config, "attribute_means", None), getattr(config, "attribute_stds", None)
            if means is None or stds is None:
                raise ValueError(
                    "normalize=True needs `attribute_means` and `attribute_stds` in the model config (written by "
                    "AttributeRewardTrainer after training); this model has none"
                )
            self.means, self.stds = np.asarray(means, np.float64), np.maximum(np.asarray(stds, np.float64), 1e-8)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, model_args=None, **kwargs) -> AttributeScorer:
        """Loads a plain model or an adapter folder (with its K-output head) and wraps it."""
        load_kwargs = {k: kwargs.pop(k) for k in ("gguf_file", "dtype") if k in kwargs}
        model, tokenizer = load_reward_model(
            model_name_or_path,
            model_args=model_args,
            num_labels=saved_num_attributes(model_name_or_path),
            partition_under_zero3=False,
            require_trained_head=True,
            **load_kwargs,
        )
        return cls(model, tokenizer, **kwargs)

    def _inputs_and_read_positions(self, sequences: list[list[int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """[`RewardScorer`]'s forward arguments and each row's read-out position (a decoder's last real token, an
        encoder's first)."""
        kwargs = self._model_inputs(sequences)
        n, width = kwargs["input_ids"].shape
        if not self.decoder:
            return kwargs, torch.zeros(n, dtype=torch.long)
        if self.padding_side == "left":
            return kwargs, torch.full((n,), width - 1)
        return kwargs, kwargs["attention_mask"].sum(-1).cpu() - 1

    def _forward(self, sequences: list[list[int]]) -> torch.Tensor:
        return self.model(**self._model_inputs(sequences)).logits.float()

    def _encode_all(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[list[int]]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        before, sequences = self.n_truncated, []
        for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            if completion is None:
                raise ValueError(f"completions[{row}] is None; every completion needs a text")
            try:
                sequences.append(self.encode(prompt, completion))
            except ValueError as error:
                raise ValueError(f"row {row}: {error}") from error
        warn_truncated(self.n_truncated - before, len(sequences), "sequences", self.max_length, _TRUNCATION)
        return sequences

    @torch.inference_mode()
    def score_attribute_ids(self, sequences: Sequence[list[int]]) -> np.ndarray:
        """`(N, K)` attribute scores of already tokenized sequences, in input order (normalized if asked)."""
        scores = np.empty((len(sequences), len(self.attributes)), dtype=np.float64)
        for batch in length_sorted_batches([len(s) for s in sequences], self.batch_size, self.max_tokens_per_batch):
            scores[batch] = self._forward([sequences[i] for i in batch]).double().cpu().numpy()
        return (scores - self.means) / self.stds

    def score_attributes(self, prompts: Sequence[Any], completions: Sequence[Any]) -> np.ndarray:
        """`(N, K)` attribute scores of each `(prompt, completion)`, columns in `self.attributes` order."""
        return self.score_attribute_ids(self._encode_all(prompts, completions))

    def combine(self, scores: np.ndarray) -> list[float]:
        """`scores @ weights`: one reward per row of `(N, K)` attribute scores."""
        return (np.asarray(scores, dtype=np.float64) @ self.weights).tolist()

    def score_ids(self, sequences: Sequence[list[int]]) -> list[float]:
        return self.combine(self.score_attribute_ids(sequences))

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """One reward per `(prompt, completion)`: the attribute scores combined by `self.weights`."""
        return self.combine(self.score_attributes(prompts, completions))

    def _prompt_ids(self, prompt: Any) -> list[int]:
        ids = (
            encode_chat(self.tokenizer, prompt)
            if isinstance(prompt, list)
            else encode_text(self.tokenizer, prompt or "")
        )
        if self.max_length is not None and len(ids) > self.max_length:
            ids = truncate_ids(ids, self.max_length, set(self.tokenizer.all_special_ids))
        return ids

    @torch.inference_mode()
    def embed_prompts(self, prompts: Sequence[Any]) -> np.ndarray:
        """`(N, hidden)`: each prompt alone, encoded as a text is for scoring, and its final hidden state at the
        read-out token (a decoder's closing eos, an encoder's `[CLS]`)."""
        sequences = [self._prompt_ids(p) for p in prompts]
        out: np.ndarray | None = None
        for batch in length_sorted_batches([len(s) for s in sequences], self.batch_size, self.max_tokens_per_batch):
            kwargs, last = self._inputs_and_read_positions([sequences[i] for i in batch])
            hidden = self.model(**kwargs, output_hidden_states=True).hidden_states[-1]
            rows = hidden[torch.arange(len(batch), device=hidden.device), last.to(hidden.device)].double().cpu()
            if out is None:
                out = np.empty((len(sequences), rows.shape[1]), dtype=np.float64)
            out[batch] = rows.numpy()
        if out is None:
            raise ValueError("no prompts to embed")
        return out
