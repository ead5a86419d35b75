r"""A pairwise preference model as a TRL reward function: each completion's reward is a win probability.

[`PairwiseRewardFunction`] follows TRL's contract exactly (`fn(prompts, completions, completion_ids=None, **kwargs)
-> list[float | None]`, a picklable callable with `__name__`), for `GRPOTrainer` / `RLOOTrainer(reward_funcs=...)`,
a [`~trl_rewards.rewards.ensemble.RewardEnsemble`] or the PPO adapter. Every probability comes from
[`PairwiseScorer`], averaged over both orders of each comparison. What a completion is compared with is set by
`reference`:

- **a dataset column** (`reference="<column>"`): TRL passes every dataset column to the reward function as a keyword,
  repeated for each generation; reward = P(completion ≻ that row's reference response). A row whose reference is
  `None` gets `None` (no reward). Cost: two sequences per completion.
- `"best_of_group"`: the completions of one prompt are compared with each other (every unordered pair, both orders);
  each completion's round-robin score is `s_i = mean_{j≠i} P(i ≻ j)`, the group's best is `b = argmax_i s_i` (the
  first on a tie), and the reward is `P(i ≻ b)`, with `0.5` for `b` itself: "how likely is this completion to beat
  the best one we sampled". Cost: `n (n - 1)` sequences for a group of `n`.
- `"group_mean"`: the round-robin score itself, `reward_i = mean_{j≠i} P(i ≻ j)` (Borda-style); same cost.

A group of one gets 0.5 in both group modes (it is compared with nothing). **Groups** are the `num_generations`
completions of one prompt: with `num_generations` set, consecutive chunks of that many rows (GRPO's layout; every
chunk must hold one prompt and the call a whole number of chunks), otherwise the maximal runs of consecutive rows with
the same prompt. TRL calls a reward function on each process's slice, so a group split across processes (possible
when a slice is not a multiple of `num_generations`) is compared within each part only: set `num_generations` to make
that an error instead.

The model re-tokenizes the decoded text with its own tokenizer (`completion_ids` is not used); a conversational
prompt becomes its messages' contents, one per line, and a conversational completion its concatenated contents.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from ..inference.pairwise_scoring import PairwiseScorer
from ..modeling import load_reward_model
from .base import ModelBackedReward, check_batching_options, message_text, model_name, prompt_text

GROUP_REFERENCES = ("best_of_group", "group_mean")


def _groups(prompts: list[str], num_generations: int | None, name: str) -> list[range]:
    """Row ranges of the groups (module docstring)."""
    if num_generations is not None:
        if len(prompts) % num_generations:
            raise ValueError(
                f"{name}: got {len(prompts)} completions, not a multiple of num_generations={num_generations}"
            )
        groups = [range(start, start + num_generations) for start in range(0, len(prompts), num_generations)]
        for group in groups:
            for row in group:
                if prompts[row] != prompts[group.start]:
                    raise ValueError(
                        f"{name}: row {row} has another prompt than row {group.start}, the first of its group of "
                        f"num_generations={num_generations}; a group is the completions of one prompt"
                    )
        return groups
    groups, start = [], 0
    for row in range(1, len(prompts) + 1):
        if row == len(prompts) or prompts[row] != prompts[start]:
            groups.append(range(start, row))
            start = row
    return groups


class PairwiseRewardFunction(ModelBackedReward):
    r"""
    A pairwise preference model as a TRL reward function (module docstring for `reference`).

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`):
            A Hub id or folder (loaded lazily on the first call) or a loaded pairwise model, moved to `device`.
        tokenizer (tokenizer or `str`, *optional*):
            Its tokenizer, or where to load it from. Required with a loaded model.
        reference (`str`):
            A dataset column holding each prompt's reference response, `"best_of_group"` or `"group_mean"`.
        num_generations (`int`, *optional*):
            Completions per prompt in the group modes (GRPO's `num_generations`); when unset, groups are runs of
            consecutive rows with the same prompt.
        name (`str`, *optional*):
            `__name__`, the key of TRL's `rewards/{name}/mean`. Defaults to the folder name, else `"pairwise_model"`.
        batch_size (`int`, *optional*, defaults to `16`): most sequences per forward pass.
        max_tokens_per_batch (`int`, *optional*): most padded tokens per forward pass.
        max_length (`int`, *optional*): most tokens per sequence (defaults to the model's position limit).
        device (`str` or `torch.device`, *optional*): where the model runs (default: this process's GPU, else CPU).
        model_args ([`~trl.ModelConfig`], *optional*), base_model_name_or_path (`str`, *optional*),
        dtype (`str` or `torch.dtype`, *optional*): loading options for a path.

    Each call logs `{name}/num_truncated` (comparisons cut to fit in this call) through TRL's `log_metric` when the
    trainer passes it; `num_truncated` holds the total since construction.

    Example:
    ```python
    >>> reward = PairwiseRewardFunction("pair-pm", reference="best_of_group", num_generations=8)
    >>> trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=GRPOConfig(num_generations=8), ...)
    ```
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        reference: str,
        num_generations: int | None = None,
        name: str | None = None,
        batch_size: int = 16,
        max_tokens_per_batch: int | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        model_args=None,
        base_model_name_or_path: str | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        if not isinstance(reference, str) or not reference:
            raise ValueError(f"reference must be a column name, 'best_of_group' or 'group_mean', got {reference!r}")
        if num_generations is not None and (isinstance(num_generations, bool) or num_generations < 1):
            raise ValueError(f"num_generations must be an integer >= 1 or None, got {num_generations!r}")
        check_batching_options(batch_size, max_tokens_per_batch, max_length)
        load_options = {"model_args": model_args, "base_model_name_or_path": base_model_name_or_path, "dtype": dtype}
        self._init_source(model, tokenizer, device, load_options)
        self.__name__ = name or model_name(model if self._path is None else None, self._path, "pairwise_model")
        self.reference = reference
        self.num_generations = num_generations
        self.scorer_options = {
            "batch_size": batch_size,
            "max_tokens_per_batch": max_tokens_per_batch,
            "max_length": max_length,
        }
        self.num_truncated = 0
        self._scorer = None
        if self._path is None:
            self._build_scorer()

    def _build_scorer(self) -> PairwiseScorer:
        with self._lock:
            if self._scorer is None:
                model, tokenizer = self._load()
                self._scorer = PairwiseScorer(model, tokenizer, device=self.device, **self.scorer_options)
            return self._scorer

    def _load_from_path(self):
        source = self._tokenizer_source
        return load_reward_model(  # whole on every rank under ZeRO-3: it is used for inference only
            self._path,
            head="sequence",
            num_labels=1,
            tokenizer_name_or_path=os.fspath(source) if isinstance(source, str | os.PathLike) else None,
            partition_under_zero3=False,
            require_trained_head=True,
            **self._load_options,
        )

    def load(self) -> PairwiseRewardFunction:
        """Loads the model now instead of on the first call (to fail early); returns `self`."""
        self._build_scorer()
        return self

    @property
    def scorer(self) -> PairwiseScorer:
        """The underlying [`PairwiseScorer`] (loads the model if needed)."""
        return self._build_scorer()

    def _against_column(self, scorer, prompts, completions, kwargs) -> list[float | None]:
        if self.reference not in kwargs:
            columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_metric", "log_extra"))
            raise ValueError(
                f"{self.__name__}: reference column {self.reference!r} is not among the keyword arguments TRL passed "
                f"(the dataset's columns: {columns}); use 'best_of_group' or 'group_mean' to compare within groups"
            )
        references = kwargs[self.reference]
        if isinstance(references, str) or len(references) != len(completions):
            raise ValueError(f"{self.__name__}: {self.reference!r} must hold one reference per completion")
        rows = [i for i, reference in enumerate(references) if reference is not None]
        wins = scorer.win_probability(
            [prompts[i] for i in rows], [completions[i] for i in rows], [message_text(references[i]) for i in rows]
        )
        rewards: list[float | None] = [None] * len(completions)
        for row, win in zip(rows, wins, strict=True):
            rewards[row] = win
        return rewards

    def _within_groups(self, scorer, prompts, completions) -> list[float]:
        groups = _groups(prompts, self.num_generations, self.__name__)
        pairs = [(i, j) for group in groups for i in group for j in group if i < j]
        wins = scorer.win_probability(
            [prompts[i] for i, _ in pairs], [completions[i] for i, _ in pairs], [completions[j] for _, j in pairs]
        )
        beats = {}
        for (i, j), win in zip(pairs, wins, strict=True):
            beats[i, j], beats[j, i] = win, 1 - win
        rewards = [0.5] * len(completions)
        for group in groups:
            if len(group) == 1:
                continue
            scores = {i: sum(beats[i, j] for j in group if j != i) / (len(group) - 1) for i in group}
            if self.reference == "group_mean":
                for i in group:
                    rewards[i] = scores[i]
                continue
            best = max(group, key=lambda i: scores[i])  # the first of equal scores
            for i in group:
                rewards[i] = 0.5 if i == best else beats[i, best]
        return rewards

    def _rewards(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float | None]:
        scorer = self._build_scorer()
        prompts = [prompt_text(prompt) for prompt in prompts]
        completions = [message_text(completion) for completion in completions]
        before = scorer.n_truncated
        if self.reference in GROUP_REFERENCES:
            rewards = self._within_groups(scorer, prompts, completions)
        else:
            rewards = self._against_column(scorer, prompts, completions, kwargs)
        self._count_truncated(scorer, before, kwargs)
        return rewards

    def __repr__(self) -> str:
        source = self._path if self._path is not None else type(self._model).__name__
        return f"PairwiseRewardFunction(name={self.__name__!r}, model={source!r}, reference={self.reference!r})"
