r"""Model rewards in TRL's callable contract: a reward model and a process reward model as reward functions.

Every class here is a picklable callable with a `__name__`, called as
`fn(prompts, completions, completion_ids=None, **kwargs) -> list[float | None]` exactly like TRL's own reward
functions (`trl/rewards/other_rewards.py`), so it can be passed to `GRPOTrainer(reward_funcs=...)`,
`RLOOTrainer(reward_funcs=...)`, a [`~trl_rewards.rewards.ensemble.RewardEnsemble`] or the PPO adapter
([`~trl_rewards.rewards.ppo.RewardFunctionModule`]). `None` means "no reward for this sample" (TRL turns it into NaN
and leaves it out of its statistics).

**Own tokenizer.** A model-based reward re-tokenizes the decoded prompt and completion with *its* tokenizer (and its
chat template for conversational rows), so the reward model need not share the policy's vocabulary;
`completion_ids` (the policy's token ids) are therefore not used by these classes.

**Pickling.** TRL's async rollout worker sends reward functions to a spawned process. A function built from a path
drops its loaded model when pickled and reloads it from the path on the first call after unpickling. A function
built from a model *object* has no path to reload from, so the model object (weights included) is pickled with it:
prefer paths for large models.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from ..data.stepwise import split_steps
from ..inference.aggregation import aggregate_step_scores
from ..inference.sequence_scoring import PADDING_SIDES, RewardScorer
from ..inference.step_scoring import ProcessRewardScorer
from ..modeling import load_process_reward_model, load_reward_model
from .base import ModelBackedReward, check_batching_options, is_conversational, message_text, model_name, prompt_text
from .step_rewards import step_spans

logger = logging.getLogger(__name__)


class RewardModelFunction(ModelBackedReward):
    r"""
    A sequence-classification reward model as a TRL reward function.

    Scoring goes through [`RewardScorer`]: the reward model's own tokenizer (and chat template
    for conversational prompts, with the completion messages appended), length-sorted micro-batches under a token
    budget, truncation like in training, inference mode, optional normalization with the `reward_mean` /
    `reward_std` that our trainers store in the model config.

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`):
            A Hub id or folder (a full model or a PEFT adapter folder, loaded lazily on the first call, see
            [`~trl_rewards.modeling.load_reward_model`]), or a loaded reward model with a 1-output head (plain or
            PEFT), moved to `device`.
        tokenizer (tokenizer or `str`, *optional*):
            The reward model's tokenizer, or where to load it from. Required with a loaded model; defaults to the
            model's folder with a path.
        name (`str`, *optional*):
            `__name__`, the key of TRL's `rewards/{name}/mean` metrics. Defaults to the folder name (or the config's
            `_name_or_path`), else `"reward_model"`.
        batch_size (`int`, *optional*, defaults to `16`):
            Most sequences per forward pass.
        max_tokens_per_batch (`int`, *optional*):
            Most padded tokens per forward pass; long completions get smaller micro-batches.
        max_length (`int`, *optional*):
            Longer sequences keep their leading special tokens and their end; the count is reported.
        padding_side (`str`, *optional*, defaults to `"right"`):
            `"right"` or `"left"` for decoders (scores do not depend on it); encoders always pad right.
        device (`str` or `torch.device`, *optional*):
            Where the reward model runs. Defaults to this process's GPU when CUDA is available (see
            [`default_device`]), else `cpu`.
        normalize (`bool`, *optional*, defaults to `False`):
            Return `(r - reward_mean) / reward_std` with the statistics stored in the model config (an error if
            there are none).
        prefix_sharing (`bool`, *optional*, defaults to `False`):
            Score the completions of one prompt (GRPO's group) with the prompt encoded once (same scores; decoder
            reward models only, see [`RewardScorer`]).
        model_args ([`~trl.ModelConfig`], *optional*):
            dtype, revision and quantization for loading from a path.
        base_model_name_or_path (`str`, *optional*):
            Base model of an adapter folder, overriding the one recorded in it.
        dtype (`str` or `torch.dtype`, *optional*):
            dtype for loading from a path (e.g. `torch.bfloat16`).

    Each call logs `{name}/num_truncated` (sequences truncated in this call) through TRL's `log_metric` when the
    trainer passes it; `num_truncated` holds the total since construction.

    Example:
    ```python
    >>> reward = RewardModelFunction("my-reward-model", max_tokens_per_batch=16384, normalize=True)
    >>> trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=args, train_dataset=prompts)
    ```
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        name: str | None = None,
        batch_size: int = 16,
        max_tokens_per_batch: int | None = None,
        max_length: int | None = None,
        padding_side: str = "right",
        device: str | torch.device | None = None,
        normalize: bool = False,
        prefix_sharing: bool = False,
        model_args=None,
        base_model_name_or_path: str | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
        check_batching_options(batch_size, max_tokens_per_batch, max_length)
        load_options = {"model_args": model_args, "base_model_name_or_path": base_model_name_or_path, "dtype": dtype}
        self._init_source(model, tokenizer, device, load_options)
        self.__name__ = name or model_name(model if self._path is None else None, self._path, "reward_model")
        self.scorer_options = {
            "batch_size": batch_size,
            "max_tokens_per_batch": max_tokens_per_batch,
            "max_length": max_length,
            "padding_side": padding_side,
            "normalize": normalize,
            "prefix_sharing": prefix_sharing,
        }
        self.num_truncated = 0
        self._scorer = None
        if self._path is None:
            self._build_scorer()  # a loaded model: fail now on a missing statistic or head, not at the first step

    def _build_scorer(self) -> RewardScorer:
        with self._lock:
            if self._scorer is None:
                model, tokenizer = self._load()
                self._scorer = RewardScorer(model, tokenizer, device=self.device, **self.scorer_options)
            return self._scorer

    def _load_from_path(self):
        source = self._tokenizer_source
        tokenizer_path = os.fspath(source) if isinstance(source, str | os.PathLike) else None
        return load_reward_model(  # whole on every rank under ZeRO-3: it is used for inference only
            self._path,
            head="sequence",
            num_labels=1,
            tokenizer_name_or_path=tokenizer_path,
            partition_under_zero3=False,
            require_trained_head=True,
            **self._load_options,
        )

    def load(self) -> RewardModelFunction:
        """Loads the model now instead of on the first call (to fail early); returns `self`."""
        self._build_scorer()
        return self

    def calibration_statistics(self) -> tuple[float, float] | None:
        """
        `(mean, std)` of this function's outputs as stored with the model: `(0, 1)` with `normalize=True` (the scorer
        already applies the stored statistics), else the config's `reward_mean` / `reward_std` written by our
        trainers, else `None`. Read by `RewardEnsemble(normalization="calibrated")`; loads the model if needed.
        """
        if self.scorer_options.get("normalize"):
            return 0.0, 1.0
        config = self._build_scorer().model.config
        mean, std = getattr(config, "reward_mean", None), getattr(config, "reward_std", None)
        return None if mean is None or std is None else (float(mean), float(std))

    @property
    def scorer(self) -> RewardScorer:
        """The underlying [`~trl_rewards.inference.sequence_scoring.RewardScorer`] (loads the model if needed)."""
        return self._build_scorer()

    def _rewards(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float | None]:
        scorer = self._build_scorer()
        if any(is_conversational(p) or is_conversational(c) for p, c in zip(prompts, completions, strict=True)):
            if any(isinstance(p, str) for p in prompts):
                raise ValueError(f"{self.__name__}: mixes text prompts with conversational completions or prompts")
            if not getattr(scorer.tokenizer, "chat_template", None):
                raise ValueError(
                    f"{self.__name__}: conversational prompts need a chat template, and the reward model's tokenizer "
                    f"({type(scorer.tokenizer).__name__}) has none; set `tokenizer.chat_template`"
                )
        before = scorer.n_truncated
        rewards = scorer.score(list(prompts), list(completions))
        self._count_truncated(scorer, before, kwargs)
        return rewards

    def __repr__(self) -> str:
        source = self._path if self._path is not None else type(self._model).__name__
        return f"RewardModelFunction(name={self.__name__!r}, model={source!r}, device={str(self.device)!r})"


class ProcessRewardFunction(ModelBackedReward):
    r"""
    A process reward model (PRM) as a TRL reward function: each completion is split into steps, every step gets
    P(step correct) from [`ProcessRewardScorer`] (in length-sorted micro-batches) and
    [`~trl_rewards.inference.aggregation.aggregate_step_scores`] turns them into one reward in `[0, 1]`.

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`):
            A Hub id or folder (a full model or an adapter, loaded lazily with
            [`~trl_rewards.modeling.load_process_reward_model`]) or a loaded PRM (a 2-label token classifier
            or a causal LM with a step tag).
        tokenizer (tokenizer, *optional*):
            The PRM's tokenizer object; required with a loaded model, and with a path it replaces the folder's.
        step_separator (`str`, *optional*, defaults to `"\n"`):
            Splits a completion into steps (stripped, empty ones dropped). A completion without any step gets `None`.
        aggregation (`str`, *optional*, defaults to `"product"`):
            One of `"product"` (every step right), `"min"` (weakest step), `"last"`, `"mean"`, `"softmin"`.
            Rejected with `step_rewards=True`.
        step_rewards (`bool`, *optional*, defaults to `False`):
            Step mode: return, per completion, every step's `(char_end, P(step correct))` instead of one aggregated
            reward (the contract of [`~trl_rewards.rewards.step_rewards.StepRewardFunction`], for
            [`~trl_rewards.trainers.process_grpo_trainer.ProcessGRPOTrainer`]'s `step_reward_funcs`); `char_end`
            is where the stripped step ends in the completion's text.
        temperature (`float`, *optional*):
            Temperature of `"softmin"` (required there), rejected by the other aggregations.
        name (`str`, *optional*):
            `__name__`. Defaults to the folder name (or the config's `_name_or_path`), else
            `"process_reward_model"`.
        device (`str` or `torch.device`, *optional*):
            Where the PRM runs. Defaults to this process's GPU when CUDA is available (see [`default_device`]), else
            `cpu`.
        model_style (`str`, *optional*):
            `"classifier"` or `"lm"`; by default the layout saved with the model by our trainer.
        model_args ([`~trl.ModelConfig`], *optional*):
            dtype, revision and quantization for loading from a path.
        dtype (`str` or `torch.dtype`, *optional*):
            dtype for loading from a path.
        **scorer_kwargs:
            The other options of `ProcessRewardScorer` (`step_tag`, `good_token`, `bad_token`, `batch_size`,
            `max_tokens_per_batch`, `max_length`, `prefix_sharing`; it rejects unknown ones). `text_separator` is
            rejected: completions are split with `step_separator` here. `prefix_sharing=True` scores the completions
            of one prompt (GRPO's group) with their common prefix encoded once, in both modes (same probabilities;
            decoder PRMs only).

    A conversational prompt is given to the PRM as the `content` of its messages joined with newlines. Each call logs
    `{name}/num_truncated` through `log_metric` when given, like [`RewardModelFunction`].
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        step_separator: str = "\n",
        aggregation: str | None = None,
        temperature: float | None = None,
        step_rewards: bool = False,
        name: str | None = None,
        device: str | torch.device | None = None,
        model_style: str | None = None,
        model_args=None,
        dtype: str | torch.dtype | None = None,
        **scorer_kwargs,
    ):
        if not isinstance(step_separator, str) or not step_separator:
            raise ValueError(f"step_separator must be a non-empty string, got {step_separator!r}")
        if "text_separator" in scorer_kwargs:
            raise ValueError("text_separator is not used: completions are split into steps with step_separator")
        if step_rewards and (aggregation is not None or temperature is not None):
            raise ValueError("step_rewards=True returns every step's probability: aggregation and temperature unused")
        aggregation = aggregation or "product"
        try:  # rejects a bad aggregation or temperature before the PRM loads
            aggregate_step_scores([1.0], aggregation, temperature)
        except ValueError as error:
            raise ValueError(f"aggregation={aggregation!r}, temperature={temperature!r}: {error}") from None
        if isinstance(tokenizer, str | os.PathLike):
            raise TypeError("ProcessRewardFunction takes a tokenizer object (a path model loads its own tokenizer)")
        self._init_source(model, tokenizer, device, {"model_args": model_args, "dtype": dtype})
        self.__name__ = name or model_name(model if self._path is None else None, self._path, "process_reward_model")
        self.step_separator = step_separator
        self.aggregation = None if step_rewards else aggregation
        self.temperature = temperature
        self.step_rewards = self.returns_step_rewards = bool(step_rewards)
        self.model_style = model_style
        self.scorer_kwargs = scorer_kwargs
        self.num_truncated = 0
        self._scorer = None
        if self._path is None:
            self._build_scorer()  # a loaded model: fail now on a bad layout or option

    def _load_from_path(self):
        return load_process_reward_model(
            self._path, model_style=self.model_style, partition_under_zero3=False, **self._load_options
        )

    def _build_scorer(self):
        with self._lock:
            if self._scorer is None:
                model, tokenizer = self._load()
                self._scorer = ProcessRewardScorer(
                    model, tokenizer, model_style=self.model_style, device=self.device, **self.scorer_kwargs
                )
            return self._scorer

    def load(self) -> ProcessRewardFunction:
        """Loads the PRM now instead of on the first call (to fail early); returns `self`."""
        self._build_scorer()
        return self

    @property
    def scorer(self):
        """The underlying [`~trl_rewards.inference.step_scoring.ProcessRewardScorer`] (loads the PRM if needed)."""
        return self._build_scorer()

    def split_steps(self, completion: Any) -> list[str]:
        """The non-empty, stripped steps of a completion (a string or a list of messages)."""
        return split_steps(message_text(completion), self.step_separator)

    def _rewards(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float | None]:
        scorer = self._build_scorer()
        steps = [self.split_steps(completion) for completion in completions]
        rows = [i for i, row_steps in enumerate(steps) if row_steps]
        texts = [prompt_text(prompts[i]) for i in rows]
        before = scorer.n_truncated
        probabilities = scorer.step_probabilities(texts, [steps[i] for i in rows])
        self._count_truncated(scorer, before, kwargs)
        rewards: list = [None] * len(completions)
        for i, probs in zip(rows, probabilities, strict=True):
            if self.step_rewards:  # the spans are the very steps split_steps gave the PRM, in order
                ends = [end for _, end in step_spans(message_text(completions[i]), self.step_separator)]
                rewards[i] = list(zip(ends, probs, strict=True))
            else:
                rewards[i] = aggregate_step_scores(probs, self.aggregation, self.temperature)
        return rewards

    def __repr__(self) -> str:
        source = self._path if self._path is not None else type(self._model).__name__
        return (
            f"ProcessRewardFunction(name={self.__name__!r}, model={source!r}, aggregation={self.aggregation!r}, "
            f"step_separator={self.step_separator!r})"
        )
