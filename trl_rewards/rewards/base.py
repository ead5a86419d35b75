"""What the reward functions share: the text of prompts and completions, device placement, model-backed sources.

See `rewards/model_rewards.py` for the reward-function contract (TRL's) that every class follows.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import torch

from ..inference.sequence_scoring import place_model

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    """
    This process's GPU when CUDA is available, else `cpu`.

    Under a multi-process launcher (torchrun, accelerate, deepspeed) that is `cuda:{LOCAL_RANK}`, the GPU accelerate
    gives the trainer on this rank, whenever the reward function is built: a loaded model is moved at construction,
    often before the trainer has set the current device, which would otherwise put every rank's copy on `cuda:0`.
    Without `LOCAL_RANK` (or when it names no visible GPU, e.g. one GPU per process) it is `cuda`, the current device.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = os.environ.get("LOCAL_RANK", "")
    if local_rank.isdigit() and int(local_rank) < torch.cuda.device_count():
        return torch.device("cuda", int(local_rank))
    return torch.device("cuda")


def model_name(model, path: str | None, fallback: str) -> str:
    if path is not None:
        return os.path.basename(os.path.normpath(path)) or fallback
    name_or_path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return name_or_path.rstrip("/").split("/")[-1] or fallback


def is_conversational(value: Any) -> bool:
    return isinstance(value, list) and (not value or isinstance(value[0], dict))


def message_text(completion: Any) -> str:
    """The text of a completion: a string, or the concatenated `content` of a list of messages."""
    if isinstance(completion, str):
        return completion
    if is_conversational(completion):
        parts = [message.get("content") for message in completion]
        if not all(isinstance(part, str) for part in parts):
            raise TypeError("completion messages must have string `content` (multimodal content is not supported)")
        return "".join(parts)
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def prompt_text(prompt: Any) -> str:
    """A prompt as plain text: a string as is (`None` as empty), a list of messages as their contents, one a line."""
    if prompt is None or isinstance(prompt, str):
        return prompt or ""
    if is_conversational(prompt):
        return "\n".join(message_text([message]) for message in prompt)
    raise TypeError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")


def check_batching_options(batch_size: int, max_tokens_per_batch: int | None, max_length: int | None) -> None:
    """The micro-batching options every model-backed reward takes: a clear error before any model loads."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for option, value in (("max_tokens_per_batch", max_tokens_per_batch), ("max_length", max_length)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1 or None, got {value}")


class ModelBackedReward:
    """
    Shared source handling, device placement, pickling and thread safety of the model-based reward functions.

    A call ([`__call__`]) checks the inputs and runs the subclass's `_rewards` under a per-instance lock: TRL's
    async rollout and users' thread pools may call one reward function from several threads, which must load the
    model once and count truncations exactly. (Calls of one instance are serialized; the model itself is the
    bottleneck of a call anyway.)
    """

    def _init_source(self, model, tokenizer, device, load_options: dict[str, Any]) -> None:
        self._lock = threading.RLock()
        self.device = torch.device(device) if device is not None else default_device()
        # What the user gave, kept for pickling; `_tokenizer` is the tokenizer in use once the model is loaded.
        self._tokenizer_source = tokenizer
        if isinstance(model, str | os.PathLike):
            self._path = os.fspath(model)
            self._load_options = {k: v for k, v in load_options.items() if v is not None}
            self._model = self._tokenizer = None
            return
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a path or a loaded torch.nn.Module, got {type(model).__name__}")
        for option, value in load_options.items():
            if value is not None:
                raise ValueError(
                    f"{option} only applies when the model is given as a path; the model is already loaded"
                )
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            raise ValueError("a loaded model needs its tokenizer object: pass tokenizer=")
        self._path, self._load_options = None, {}
        self._model, self._tokenizer = place_model(model, self.device)[1], tokenizer

    def _load_from_path(self):
        """`(model, tokenizer)` loaded from `self._path` with `self._load_options`."""
        raise NotImplementedError

    def _load(self):
        """Loads (once, whichever thread asks first) and returns `(model, tokenizer)`, on `self.device`, in eval
        mode."""
        with self._lock:
            return self._load_once()

    def _load_once(self):
        if self._model is None:
            model, tokenizer = self._load_from_path()
            source = self._tokenizer_source
            if source is not None and not isinstance(source, str | os.PathLike):  # a tokenizer object with a path
                tokenizer = source
            self._model, self._tokenizer = place_model(model, self.device)[1], tokenizer
        return self._model, self._tokenizer

    def _count_truncated(self, scorer, before: int, kwargs: dict[str, Any]) -> None:
        """Adds the rows `scorer` truncated since its count was `before` to `num_truncated`, and logs them through
        TRL's `log_metric` (passed in the call's kwargs) as `{name}/num_truncated`."""
        truncated = scorer.n_truncated - before
        self.num_truncated += truncated
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric(f"{self.__name__}/num_truncated", float(truncated))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)  # locks do not pickle; a new one is made on unpickling
        if self._path is not None:  # reloaded from the path on the first call after unpickling
            state["_model"] = state["_tokenizer"] = state["_scorer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _rewards(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float | None]:
        """The rewards of one checked call (prompts and completions of equal length)."""
        raise NotImplementedError

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> list[float | None]:
        for name, value in (("prompts", prompts), ("completions", completions)):
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise TypeError(f"{self.__name__}: {name} must be a list, got {type(value).__name__}")
        if len(prompts) != len(completions):
            raise ValueError(f"{self.__name__}: got {len(prompts)} prompts but {len(completions)} completions")
        for i, completion in enumerate(completions):
            if not isinstance(completion, str) and not is_conversational(completion):
                raise TypeError(
                    f"{self.__name__}: completion {i} is {type(completion).__name__}, not text or a list of messages"
                )
        with self._lock:
            return self._rewards(prompts, completions, **kwargs)
