"""Scoring `(prompt, completion)` pairs with a trained reward model, in length-sorted micro-batches.

Results do not depend on the batch size, the order of the inputs or the padding side: sequences are tokenized exactly
as in training, sorted by length, padded per micro-batch, and decoders receive explicit position ids so that left
padding does not shift positions. Encoders read `[CLS]` at position 0 and are always padded on the right. With
`prefix_sharing=True` (decoders), completions of the same prompt are scored together with the prompt encoded once
(`inference.shared_prefix_scoring`); the scores are the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from ..data.encoding import encode_prompt_completion
from ..data.length import truncate_ids
from ..data.prefix_sharing import check_packing_support
from ..modeling import is_decoder_model, load_reward_model, position_limit, prepare_tokenizer
from .batching import length_sorted_batches
from .shared_prefix_scoring import score_shared_prefix

logger = logging.getLogger(__name__)

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
            end kept); `self.n_truncated` counts them and each call that cuts logs one warning with its count.
            Defaults to the model's position limit (see [`~trl_rewards.modeling.position_limit`]), so a long input
            is cut instead of crashing the forward pass; no truncation only for a model without a limit.
        padding_side (`str`): `"right"` or `"left"`; ignored (right) for encoders.
        device: where to run; the model is moved there. Defaults to the model's device.
        normalize (`bool`): return `(r - reward_mean) / reward_std` using the statistics stored in the model config at
            training time.
        prefix_sharing (`bool`): score the completions of one prompt (equal prompts, e.g. GRPO's groups) with the
            prompt run once and its KV cache reused by each completion (same scores; decoders with `"sdpa"`/`"eager"`
            attention only, an encoder is an error).
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
        prefix_sharing: bool = False,
    ):
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device, self.model = place_model(model, device)
        self.tokenizer = prepare_tokenizer(tokenizer, model)
        self.decoder = is_decoder_model(model)
        if prefix_sharing and not self.decoder:
            raise ValueError(
                "prefix_sharing=True needs a causal (decoder) reward model: in a bidirectional encoder the prompt's "
                "encoding depends on the completion after it, so it cannot be computed once per group"
            )
        if prefix_sharing:
            check_packing_support(model)
        self.prefix_sharing = prefix_sharing
        self.padding_side = padding_side if self.decoder else "right"
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_length = resolve_max_length(max_length, model, tokenizer)
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
            special = set(self.tokenizer.all_special_ids)
            ids = truncate_ids(ids, self.max_length, special)
            if all(token in special for token in ids):  # every row would read as the same text: a constant score
                raise ValueError(
                    f"max_length={self.max_length} keeps only special tokens of this sequence, so every score would "
                    "be the same; raise max_length"
                )
            self.n_truncated += 1
        return ids

    def _model_inputs(self, sequences: list[list[int]]) -> dict[str, torch.Tensor]:
        """The forward's keyword arguments: `sequences` padded on `padding_side` (a decoder also gets position ids
        that skip left padding, and no cache)."""
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            span = slice(width - len(ids), width) if self.padding_side == "left" else slice(0, len(ids))
            input_ids[row, span] = torch.tensor(ids)
            mask[row, span] = 1
        kwargs = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self.decoder:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)
            kwargs["use_cache"] = False
        return kwargs

    def _forward(self, sequences: list[list[int]]) -> torch.Tensor:
        return self.model(**self._model_inputs(sequences)).logits[:, 0].float()

    @torch.inference_mode()
    def score_ids(self, sequences: Sequence[list[int]], groups: Sequence[Hashable] | None = None) -> list[float]:
        """Scores already tokenized sequences; returns one float per sequence, in input order. With
        `prefix_sharing`, sequences with equal `groups` keys are packed to share their common prefix."""
        if self.prefix_sharing and groups is not None:
            scores = score_shared_prefix(
                self.model,
                sequences,
                groups,
                self.tokenizer.pad_token_id,
                self.device,
                self.batch_size,
                self.max_tokens_per_batch,
            )
            return ((scores - self.mean) / self.std).tolist()
        scores = torch.empty(len(sequences), dtype=torch.float64)
        for batch in length_sorted_batches([len(s) for s in sequences], self.batch_size, self.max_tokens_per_batch):
            scores[batch] = self._forward([sequences[i] for i in batch]).double().cpu()
        return ((scores - self.mean) / self.std).tolist()

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """Scores each `(prompt, completion)`; a prompt may be a string (or `None`) or a list of chat messages."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        missing = [i for i, completion in enumerate(completions) if completion is None]
        if missing:
            raise ValueError(
                f"completions[{missing[0]}] is None ({len(missing)} missing); every completion needs a text"
            )
        before = self.n_truncated
        sequences = []
        for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            try:
                sequences.append(self.encode(prompt, completion))
            except ValueError as error:
                raise ValueError(f"row {row}: {error}") from error
        warn_truncated(self.n_truncated - before, len(sequences), "sequences", self.max_length, _TRUNCATION)
        return self.score_ids(sequences, [prompt_key(prompt, row) for row, prompt in enumerate(prompts)])

    def score_pairs(
        self, prompts: Sequence[Any], chosen: Sequence[Any], rejected: Sequence[Any]
    ) -> tuple[list[float], list[float]]:
        """Scores both sides of preference pairs; returns `(chosen_scores, rejected_scores)`."""
        if not len(prompts) == len(chosen) == len(rejected):
            raise ValueError(f"got {len(prompts)} prompts, {len(chosen)} chosen, {len(rejected)} rejected")
        scores = self.score(list(prompts) * 2, list(chosen) + list(rejected))
        return scores[: len(prompts)], scores[len(prompts) :]


_TRUNCATION = "leading special tokens and the end kept"


def prompt_key(prompt: Any, row: int) -> Hashable:
    """The group key of a prompt: equal texts or equal message lists share a key; a missing prompt (`None`) shares
    nothing (its own row)."""
    if prompt is None:
        return ("row", row)
    if isinstance(prompt, str):
        return ("text", prompt)
    return ("chat", json.dumps(prompt, sort_keys=True, default=str))


def place_model(model, device: str | torch.device | None) -> tuple[torch.device, Any]:
    """`(device, model in eval mode)`: the model is moved to `device` when given (and not already there), else the
    device is the model's own."""
    if device is None:
        return next(model.parameters()).device, model.eval()
    device = torch.device(device)
    # "cuda" means the current CUDA device: weights already on "cuda:0" stay put (a 4-bit model refuses `.to`).
    if any(p.device.type != device.type or device.index not in (None, p.device.index) for p in model.parameters()):
        if getattr(model, "is_quantized", False) or getattr(model, "hf_device_map", None) is not None:
            current = next(model.parameters()).device
            raise ValueError(
                f"the reward model sits on {current} and is quantized or dispatched with a device_map, so it cannot "
                f"be moved to device={str(device)!r}; pass device={str(current)!r} (or load it on the target device)"
            )
        model = model.to(device)
    return device, model.eval()


def resolve_max_length(max_length: int | None, model, tokenizer) -> int | None:
    """`max_length` as given (an int >= 1), or by default the model's position limit (`None` when it has none)."""
    if max_length is None:
        return position_limit(model, tokenizer)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be an integer >= 1 or None (the model's limit), got {max_length!r}")
    return max_length


def warn_truncated(n_cut: int, n_total: int, unit: str, max_length: int | None, how: str) -> None:
    """One warning per scoring call that truncated anything, with the count."""
    if n_cut:
        logger.warning(f"{n_cut} of {n_total} {unit} were longer than max_length={max_length} and were cut ({how})")
