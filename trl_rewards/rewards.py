r"""Reward functions in TRL's callable contract: reward models, process reward models and answer checking.

Every class here is a picklable callable with a `__name__`, called as
`fn(prompts, completions, completion_ids=None, **kwargs) -> list[float | None]` exactly like TRL's own reward
functions (`trl/rewards/other_rewards.py`), so it can be passed to `GRPOTrainer(reward_funcs=...)`,
`RLOOTrainer(reward_funcs=...)`, a [`~trl_rewards.ensemble.RewardEnsemble`] or the PPO adapter
([`~trl_rewards.ppo.RewardFunctionModule`]). `None` means "no reward for this sample" (TRL turns it into NaN and
leaves it out of its statistics).

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
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .scoring import PADDING_SIDES, RewardScorer

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


def _model_name(model, path: str | None, fallback: str) -> str:
    if path is not None:
        return os.path.basename(os.path.normpath(path)) or fallback
    name_or_path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return name_or_path.rstrip("/").split("/")[-1] or fallback


def _is_conversational(value: Any) -> bool:
    return isinstance(value, list) and (not value or isinstance(value[0], dict))


def _message_text(completion: Any) -> str:
    """The text of a completion: a string, or the concatenated `content` of a list of messages."""
    if isinstance(completion, str):
        return completion
    if _is_conversational(completion):
        parts = [message.get("content") for message in completion]
        if not all(isinstance(part, str) for part in parts):
            raise TypeError("completion messages must have string `content` (multimodal content is not supported)")
        return "".join(parts)
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def _prompt_text(prompt: Any) -> str:
    """A prompt as plain text: a string as is (`None` as empty), a list of messages as their contents, one a line."""
    if prompt is None or isinstance(prompt, str):
        return prompt or ""
    if _is_conversational(prompt):
        return "\n".join(_message_text([message]) for message in prompt)
    raise TypeError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")


def _move_to_device(model, device: torch.device):
    current = next(model.parameters()).device
    if current == device or (device.index is None and current.type == device.type):
        return model
    if getattr(model, "is_quantized", False) or getattr(model, "hf_device_map", None) is not None:
        raise ValueError(
            f"the reward model sits on {current} and is quantized or dispatched with a device_map, so it cannot be "
            f"moved to device={str(device)!r}; pass device={str(current)!r} (or load it on the target device)"
        )
    return model.to(device)


class _ModelBackedReward:
    """Shared source handling, device placement and pickling of the model-based reward functions."""

    def _init_source(self, model, tokenizer, device, load_options: dict[str, Any]) -> None:
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
        self._model, self._tokenizer = _move_to_device(model, self.device).eval(), tokenizer

    def _load_from_path(self):
        """`(model, tokenizer)` loaded from `self._path` with `self._load_options`."""
        raise NotImplementedError

    def _load(self):
        """Loads (once) and returns `(model, tokenizer)`, on `self.device` and in eval mode."""
        if self._model is None:
            model, tokenizer = self._load_from_path()
            source = self._tokenizer_source
            if source is not None and not isinstance(source, str | os.PathLike):  # a tokenizer object with a path
                tokenizer = source
            self._model, self._tokenizer = _move_to_device(model, self.device).eval(), tokenizer
        return self._model, self._tokenizer

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._path is not None:  # reloaded from the path on the first call after unpickling
            state["_model"] = state["_tokenizer"] = state["_scorer"] = None
        return state


class RewardModelFunction(_ModelBackedReward):
    r"""
    A sequence-classification reward model as a TRL reward function.

    Scoring goes through [`~trl_rewards.scoring.RewardScorer`]: the reward model's own tokenizer (and chat template
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
        model_args=None,
        base_model_name_or_path: str | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for option, value in (("max_tokens_per_batch", max_tokens_per_batch), ("max_length", max_length)):
            if value is not None and value < 1:
                raise ValueError(f"{option} must be >= 1 or None, got {value}")
        load_options = {"model_args": model_args, "base_model_name_or_path": base_model_name_or_path, "dtype": dtype}
        self._init_source(model, tokenizer, device, load_options)
        self.__name__ = name or _model_name(model if self._path is None else None, self._path, "reward_model")
        self.scorer_options = {
            "batch_size": batch_size,
            "max_tokens_per_batch": max_tokens_per_batch,
            "max_length": max_length,
            "padding_side": padding_side,
            "normalize": normalize,
        }
        self.num_truncated = 0
        self._scorer = None
        if self._path is None:
            self._build_scorer()  # a loaded model: fail now on a missing statistic or head, not at the first step

    def _build_scorer(self) -> RewardScorer:
        if self._scorer is None:
            model, tokenizer = self._load()
            self._scorer = RewardScorer(model, tokenizer, device=self.device, **self.scorer_options)
        return self._scorer

    def _load_from_path(self):
        from .modeling import load_reward_model

        source = self._tokenizer_source
        tokenizer_path = os.fspath(source) if isinstance(source, str | os.PathLike) else None
        return load_reward_model(  # whole on every rank under ZeRO-3: it is used for inference only
            self._path,
            head="sequence",
            num_labels=1,
            tokenizer_name_or_path=tokenizer_path,
            partition_under_zero3=False,
            **self._load_options,
        )

    def load(self) -> RewardModelFunction:
        """Loads the model now instead of on the first call (to fail early); returns `self`."""
        self._build_scorer()
        return self

    @property
    def scorer(self) -> RewardScorer:
        """The underlying [`~trl_rewards.scoring.RewardScorer`] (loads the model if needed)."""
        return self._build_scorer()

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{self.__name__}: got {len(prompts)} prompts but {len(completions)} completions")
        scorer = self._build_scorer()
        if any(_is_conversational(p) or _is_conversational(c) for p, c in zip(prompts, completions, strict=True)):
            if any(isinstance(p, str) for p in prompts):
                raise ValueError(f"{self.__name__}: mixes text prompts with conversational completions or prompts")
            if not getattr(scorer.tokenizer, "chat_template", None):
                raise ValueError(
                    f"{self.__name__}: conversational prompts need a chat template, and the reward model's tokenizer "
                    f"({type(scorer.tokenizer).__name__}) has none; set `tokenizer.chat_template`"
                )
        before = scorer.n_truncated
        rewards = scorer.score(list(prompts), list(completions))
        truncated = scorer.n_truncated - before
        self.num_truncated += truncated
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric(f"{self.__name__}/num_truncated", float(truncated))
        return rewards

    def __repr__(self) -> str:
        source = self._path if self._path is not None else type(self._model).__name__
        return f"RewardModelFunction(name={self.__name__!r}, model={source!r}, device={str(self.device)!r})"


class ProcessRewardFunction(_ModelBackedReward):
    r"""
    A process reward model (PRM) as a TRL reward function: each completion is split into steps, every step gets
    P(step correct) from [`~trl_rewards.process_scoring.ProcessRewardScorer`] (in length-sorted micro-batches) and
    [`~trl_rewards.process_scoring.aggregate_step_scores`] turns them into one reward in `[0, 1]`.

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`):
            A Hub id or folder (a full model or an adapter, loaded lazily with
            [`~trl_rewards.process_scoring.load_process_reward_model`]) or a loaded PRM (a 2-label token classifier
            or a causal LM with a step tag).
        tokenizer (tokenizer, *optional*):
            The PRM's tokenizer object; required with a loaded model, and with a path it replaces the folder's.
        step_separator (`str`, *optional*, defaults to `"\n"`):
            Splits a completion into steps (stripped, empty ones dropped). A completion without any step gets `None`.
        aggregation (`str`, *optional*, defaults to `"product"`):
            One of `"product"` (every step right), `"min"` (weakest step), `"last"`, `"mean"`, `"softmin"`.
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
            `max_tokens_per_batch`, `max_length`; it rejects unknown ones). `text_separator` is rejected: completions
            are split with `step_separator` here.

    A conversational prompt is given to the PRM as the `content` of its messages joined with newlines. Each call logs
    `{name}/num_truncated` through `log_metric` when given, like [`RewardModelFunction`].
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        step_separator: str = "\n",
        aggregation: str = "product",
        temperature: float | None = None,
        name: str | None = None,
        device: str | torch.device | None = None,
        model_style: str | None = None,
        model_args=None,
        dtype: str | torch.dtype | None = None,
        **scorer_kwargs,
    ):
        from .process_scoring import aggregate_step_scores

        if not isinstance(step_separator, str) or not step_separator:
            raise ValueError(f"step_separator must be a non-empty string, got {step_separator!r}")
        if "text_separator" in scorer_kwargs:
            raise ValueError("text_separator is not used: completions are split into steps with step_separator")
        try:  # rejects a bad aggregation or temperature before the PRM loads
            aggregate_step_scores([1.0], aggregation, temperature)
        except ValueError as error:
            raise ValueError(f"aggregation={aggregation!r}, temperature={temperature!r}: {error}") from None
        if isinstance(tokenizer, str | os.PathLike):
            raise TypeError("ProcessRewardFunction takes a tokenizer object (a path model loads its own tokenizer)")
        self._init_source(model, tokenizer, device, {"model_args": model_args, "dtype": dtype})
        self.__name__ = name or _model_name(model if self._path is None else None, self._path, "process_reward_model")
        self.step_separator = step_separator
        self.aggregation = aggregation
        self.temperature = temperature
        self.model_style = model_style
        self.scorer_kwargs = scorer_kwargs
        self.num_truncated = 0
        self._scorer = None
        if self._path is None:
            self._build_scorer()  # a loaded model: fail now on a bad layout or option

    def _load_from_path(self):
        from .process_scoring import load_process_reward_model

        return load_process_reward_model(
            self._path, model_style=self.model_style, partition_under_zero3=False, **self._load_options
        )

    def _build_scorer(self):
        if self._scorer is None:
            from .process_scoring import ProcessRewardScorer

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
        """The underlying [`~trl_rewards.process_scoring.ProcessRewardScorer`] (loads the PRM if needed)."""
        return self._build_scorer()

    def split_steps(self, completion: Any) -> list[str]:
        """The non-empty, stripped steps of a completion (a string or a list of messages)."""
        from .data.stepwise import split_steps

        return split_steps(_message_text(completion), self.step_separator)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> list[float | None]:
        from .process_scoring import aggregate_step_scores

        if len(prompts) != len(completions):
            raise ValueError(f"{self.__name__}: got {len(prompts)} prompts but {len(completions)} completions")
        scorer = self._build_scorer()
        steps = [self.split_steps(completion) for completion in completions]
        rows = [i for i, row_steps in enumerate(steps) if row_steps]
        texts = [_prompt_text(prompts[i]) for i in rows]
        before = scorer.n_truncated
        probabilities = scorer.step_probabilities(texts, [steps[i] for i in rows])
        truncated = scorer.n_truncated - before
        self.num_truncated += truncated
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric(f"{self.__name__}/num_truncated", float(truncated))
        rewards: list[float | None] = [None] * len(completions)
        for i, probs in zip(rows, probabilities, strict=True):
            rewards[i] = aggregate_step_scores(probs, self.aggregation, self.temperature)
        return rewards

    def __repr__(self) -> str:
        source = self._path if self._path is not None else type(self._model).__name__
        return (
            f"ProcessRewardFunction(name={self.__name__!r}, model={source!r}, aggregation={self.aggregation!r}, "
            f"step_separator={self.step_separator!r})"
        )


def _canonical_answer(value: Any) -> Any:
    """Numbers compare as numbers (`"1,000"`, `1000` and `1000.0` are equal); other strings stripped."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text.replace(",", "").lstrip("$"))
    except ValueError:
        return text


class AnswerCorrectnessReward:
    r"""
    Rule-based reward: does the completion's final answer equal the row's gold answer?

    The gold answers come from a dataset column that TRL passes to reward functions as a keyword argument (one value
    per completion). A row whose gold answer is `None` gets `None` (no reward); a completion without a parsable answer
    counts as wrong.

    Args:
        extractor (`Callable[[str], Any]`, *optional*):
            Maps a completion's text to its answer, or `None` when it has none. Defaults to
            [`~trl_rewards.data.synthetic.extract_answer`] (the integer of the last `"The answer is N"`). Must be
            picklable (a module-level function or a callable class) for the reward to be.
        answer_column (`str`, *optional*, defaults to `"answer"`):
            The keyword argument (dataset column) holding the gold answers.
        correct_reward (`float`, *optional*, defaults to `1.0`):
            Reward of a correct answer.
        incorrect_reward (`float`, *optional*, defaults to `0.0`):
            Reward of a wrong or missing answer.
        name (`str`, *optional*, defaults to `"answer_correctness"`):
            `__name__`.

    Answers compare as numbers when both parse as numbers (`"1,000"` equals `1000`), else as stripped strings.
    """

    def __init__(
        self,
        extractor: Callable[[str], Any] | None = None,
        answer_column: str = "answer",
        correct_reward: float = 1.0,
        incorrect_reward: float = 0.0,
        name: str = "answer_correctness",
    ):
        if extractor is not None and not callable(extractor):
            raise TypeError(f"extractor must be callable, got {type(extractor).__name__}")
        if not isinstance(answer_column, str) or not answer_column:
            raise ValueError(f"answer_column must be a non-empty string, got {answer_column!r}")
        if answer_column in ("prompts", "completions", "completion_ids"):
            raise ValueError(f"answer_column={answer_column!r} clashes with an argument of the reward-function call")
        self.extractor = extractor
        self.answer_column = answer_column
        self.correct_reward = float(correct_reward)
        self.incorrect_reward = float(incorrect_reward)
        self.__name__ = name

    def _extract(self, text: str) -> Any:
        if self.extractor is not None:
            return self.extractor(text)
        from .data.synthetic import extract_answer

        return extract_answer(text)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> list[float | None]:
        if self.answer_column not in kwargs:
            raise KeyError(
                f"{self.__name__}: no {self.answer_column!r} column among the keyword arguments "
                f"({sorted(k for k in kwargs if k not in ('log_metric', 'log_extra', 'trainer_state'))}); "
                "add it to the dataset or set answer_column="
            )
        gold = kwargs[self.answer_column]
        if len(gold) != len(completions):
            raise ValueError(
                f"{self.__name__}: {len(gold)} values in {self.answer_column!r} for {len(completions)} completions"
            )
        rewards: list[float | None] = []
        for completion, answer in zip(completions, gold, strict=True):
            if answer is None:
                rewards.append(None)
                continue
            predicted = self._extract(_message_text(completion))
            correct = predicted is not None and _canonical_answer(predicted) == _canonical_answer(answer)
            rewards.append(self.correct_reward if correct else self.incorrect_reward)
        return rewards

    def __repr__(self) -> str:
        extractor = getattr(self.extractor, "__name__", "extract_answer")
        return (
            f"AnswerCorrectnessReward(name={self.__name__!r}, answer_column={self.answer_column!r}, "
            f"extractor={extractor})"
        )
