"""Scoring `(prompt, completion)` pairs with a trained reward model, in length-sorted micro-batches.

Results do not depend on the batch size, the order of the inputs or the padding side: sequences are tokenized exactly
as in training, sorted by length, padded per micro-batch, and decoders receive explicit position ids so that left
padding does not shift positions. Encoders read `[CLS]` at position 0 and are always padded on the right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.encoding import encode_prompt_completion
from ..data.length import truncate_ids
from ..modeling import is_decoder_model, load_reward_model, prepare_tokenizer
from .batching import length_sorted_batches

PADDING_SIDES = ("right", "left")


class RewardScorer:
    """
    Scores texts with a sequence-classification reward model.

    Args:
        model: a reward model with a 1-output head (plain or PEFT).
        tokenizer: its tokenizer.
        batch_size (`int`): most sequences per forward pass.
        max_tokens_per_batch (`int`, *optional*): most (padded) tokens per forward pass; long sequences get smaller
            micro-batches instead of running out of memory.
        max_length (`int`, *optional*): longer sequences are truncated like in training (start special tokens and
            end kept); `self.n_truncated` counts them.
        padding_side (`str`): `"right"` or `"left"`; ignored (right) for encoders.
        device: where to run; defaults to the model's device.
        normalize (`bool`): return `(r - reward_mean) / reward_std` using the statistics stored in the model config at
            training time.
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 16,
        max_tokens_per_batch: int | None = None,
        max_length: int | None = None,
        padding_side: str = "right",
        device: str | torch.device | None = None,
        normalize: bool = False,
    ):
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = prepare_tokenizer(tokenizer, model)
        self.decoder = is_decoder_model(model)
        self.padding_side = padding_side if self.decoder else "right"
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_length = max_length
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.n_truncated = 0
        self.mean, self.std = 0.0, 1.0
        if normalize:
            config = model.config
            if getattr(config, "reward_mean", None) is None or getattr(config, "reward_std", None) is None:
                raise ValueError(
                    "normalize=True needs `reward_mean` and `reward_std` in the model config (written by our trainers "
                    "after training); this model has none"
                )
            self.mean, self.std = float(config.reward_mean), max(float(config.reward_std), 1e-8)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, model_args=None, **kwargs) -> RewardScorer:
        """Loads a plain model or an adapter folder with `load_reward_model` and wraps it. Under DeepSpeed ZeRO-3
        the model is loaded whole on this rank (not partitioned), as inference needs."""
        load_kwargs = {k: kwargs.pop(k) for k in ("gguf_file", "dtype") if k in kwargs}
        model, tokenizer = load_reward_model(
            model_name_or_path, model_args=model_args, partition_under_zero3=False, **load_kwargs
        )
        return cls(model, tokenizer, **kwargs)

    def encode(self, prompt: Any, completion: Any) -> list[int]:
        """Token ids of one `(prompt, completion)` exactly as the preference trainer builds them. A conversational
        prompt (list of messages) takes the completion as the assistant's message."""
        ids = encode_prompt_completion(self.tokenizer, prompt, completion)
        if self.max_length is not None and len(ids) > self.max_length:
            self.n_truncated += 1
            ids = truncate_ids(ids, self.max_length, set(self.tokenizer.all_special_ids))
        return ids

    def _forward(self, sequences: list[list[int]]) -> torch.Tensor:
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            span = slice(width - len(ids), width) if self.padding_side == "left" else slice(0, len(ids))
            input_ids[row, span] = torch.tensor(ids)
            mask[row, span] = 1
        kwargs = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self.decoder:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)
            kwargs["use_cache"] = False
        return self.model(**kwargs).logits[:, 0].float()

    @torch.inference_mode()
    def score_ids(self, sequences: Sequence[list[int]]) -> list[float]:
        """Scores already tokenized sequences; returns one float per sequence, in input order."""
        scores = torch.empty(len(sequences), dtype=torch.float64)
        for batch in length_sorted_batches([len(s) for s in sequences], self.batch_size, self.max_tokens_per_batch):
            scores[batch] = self._forward([sequences[i] for i in batch]).double().cpu()
        return ((scores - self.mean) / self.std).tolist()

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """Scores each `(prompt, completion)`; a prompt may be a string (or `None`) or a list of chat messages."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        return self.score_ids([self.encode(p, c) for p, c in zip(prompts, completions, strict=True)])

    def score_pairs(
        self, prompts: Sequence[Any], chosen: Sequence[Any], rejected: Sequence[Any]
    ) -> tuple[list[float], list[float]]:
        """Scores both sides of preference pairs; returns `(chosen_scores, rejected_scores)`."""
        if not len(prompts) == len(chosen) == len(rejected):
            raise ValueError(f"got {len(prompts)} prompts, {len(chosen)} chosen, {len(rejected)} rejected")
        scores = self.score(list(prompts) * 2, list(chosen) + list(rejected))
        return scores[: len(prompts)], scores[len(prompts) :]
