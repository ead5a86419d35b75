r"""A reward function (or a [`RewardEnsemble`]) as the `reward_model` of TRL's `PPOTrainer`.

TRL's `PPOTrainer` (trl 1.12, `trl.experimental.ppo`) accepts only a `reward_model` module, which it calls through
`trl.experimental.utils.get_reward(model, query_responses, pad_token_id, context_length)`:

```python
attention_mask = query_responses != pad_token_id
lm_backbone = getattr(model, model.base_model_prefix)
output = lm_backbone(input_ids=masked_fill(query_responses, ~attention_mask, 0), attention_mask=attention_mask,
                     position_ids=..., return_dict=True, output_hidden_states=True, use_cache=False)
reward_logits = model.score(output.hidden_states[-1])                     # (B, T, 1)
sequence_lengths = first_true_indices(query_responses[:, context_length:] == pad_token_id) - 1 + context_length
return reward_logits, reward_logits[arange(B), sequence_lengths].squeeze(-1), sequence_lengths
```

[`RewardFunctionModule`] fits that shape: its backbone ([`RewardFunctionBackbone`]) turns the policy's token ids
back into text with the *policy's* tokenizer, calls the reward function on `(prompt, completion)` (the reward
models inside re-tokenize with their own tokenizers), and returns a hidden state of shape `(B, T, 1)` holding each
row's reward at every position; `score` is the identity, so whatever position `get_reward` reads (the last response
token, or the last query token for an empty response) carries the row's reward.

**Where the prompt ends.** `get_reward` splits query and response at `context_length` (the padded query width of the
batch, which changes from batch to batch) but does not pass it to the backbone. The backbone therefore reads it from
the calling `get_reward` frame, identified exactly (a frame of a function named `get_reward` whose `lm_backbone`
local *is* this backbone). Called any other way, pass `context_length=` to the backbone or use
[`RewardFunctionModule.rewards`].

**Dataset columns.** PPO's collator keeps only `input_ids`, so columns a reward needs (e.g. `answer` for
[`AnswerCorrectnessReward`]) are registered with `query_columns`: rows holding the query's
`input_ids` and the columns, matched exactly on the query's token ids (left padding removed).

**Metrics.** PPO passes no `log_metric` to rewards; the module collects what the reward function logs and
[`~trl_rewards.callbacks.attach_reward_metrics`] merges the averages into each PPO log entry
(`trainer.state.log_history`).
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast

from .reward_calls import run_blocking

_MAX_FRAMES = 16  # get_reward -> Module.__call__ -> _call_impl -> forward: a few frames, with room for wrappers


def _context_length_from_caller(backbone: nn.Module) -> int | None:
    frame = inspect.currentframe()
    try:
        for _ in range(_MAX_FRAMES):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return None
            local = frame.f_locals
            if frame.f_code.co_name == "get_reward" and local.get("lm_backbone") is backbone:
                return int(local["context_length"])
        return None
    finally:
        del frame  # break the reference cycle through the frame


class RewardFunctionBackbone(nn.Module):
    """
    The `base_model_prefix` module of [`RewardFunctionModule`]: policy token ids in, rewards as hidden states out.
    Holds no parameters; the reward function keeps its models on its own device.
    """

    def __init__(self, owner_rewards: Callable[..., torch.Tensor]):
        super().__init__()
        self._rewards = owner_rewards

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        context_length: int | None = None,
        position_ids: torch.Tensor | None = None,
        return_dict: bool = True,
        output_hidden_states: bool = True,
        use_cache: bool = False,
    ) -> BaseModelOutputWithPast:
        r"""
        Args:
            input_ids (`torch.Tensor` of shape `(B, T)`): query and response ids (pads anywhere, masked out).
            attention_mask (`torch.Tensor` of shape `(B, T)`): 1 on real tokens.
            context_length (`int`, *optional*): width of the query part; read from the calling `get_reward` when
                not given.
            position_ids, return_dict, output_hidden_states, use_cache: accepted for `get_reward`'s call; they
                change nothing here.

        Returns:
            [`~transformers.modeling_outputs.BaseModelOutputWithPast`] whose `last_hidden_state` and
            `hidden_states[-1]` are of shape `(B, T, 1)`: the row's reward at every position.
        """
        if context_length is None:
            context_length = _context_length_from_caller(self)
        if context_length is None:
            raise RuntimeError(
                "RewardFunctionBackbone needs context_length: it is read from trl's get_reward when called through "
                "it; otherwise pass context_length= (or use RewardFunctionModule.rewards)"
            )
        rewards = self._rewards(input_ids, attention_mask.bool(), context_length)
        hidden = rewards.to(torch.float32)[:, None, None].expand(-1, input_ids.shape[1], 1)
        return BaseModelOutputWithPast(last_hidden_state=hidden, hidden_states=(hidden,))


class RewardFunctionModule(nn.Module):
    r"""
    Lets a reward function in TRL's contract (a [`~trl_rewards.rewards.ensemble.RewardEnsemble`], a
    [`RewardModelFunction`], a rule-based reward) serve as `PPOTrainer(reward_model=...)`.

    Args:
        reward_function (`Callable`):
            `fn(prompts, completions, completion_ids=None, **kwargs) -> list[float | None]` (an async one is awaited,
            e.g. a `RemoteRewardFunction` or an ensemble holding one), called with text prompts
            and completions decoded with `tokenizer`, `completion_ids` (the policy's response ids, padding removed)
            and the registered `query_columns`, plus `log_metric`.
        tokenizer:
            The *policy's* tokenizer (PPO's `processing_class`), used to decode query and response ids.
        skip_special_tokens (`bool`, *optional*, defaults to `True`):
            Drop special tokens (BOS, EOS, chat markers) when decoding.
        none_reward (`float`, *optional*):
            Reward given where the function returns `None` (PPO needs a number for every sample). Without it, a
            `None` raises a `ValueError`.
        query_columns (`Iterable[Mapping]`, *optional*):
            Rows with the query's `input_ids` and the extra columns the reward function reads (e.g. a dataset with
            `input_ids` and `answer`); more can be added with [`add_query_columns`].

    Example:
    ```python
    >>> columns = dataset.select_columns(["input_ids", "answer"])
    >>> reward_model = RewardFunctionModule(ensemble, tokenizer, query_columns=columns)
    >>> trainer = PPOTrainer(
    ...     args=config, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward_model,
    ...     value_model=value_model, train_dataset=dataset.select_columns(["input_ids"]),
    ... )
    >>> attach_reward_metrics(trainer, reward_model)
    ```
    """

    base_model_prefix = "backbone"

    def __init__(
        self,
        reward_function: Callable,
        tokenizer,
        skip_special_tokens: bool = True,
        none_reward: float | None = None,
        query_columns: Iterable[Mapping[str, Any]] | None = None,
    ):
        super().__init__()
        if isinstance(reward_function, nn.Module) or not callable(reward_function):
            raise TypeError(
                f"reward_function must be a reward function (not a module), got {type(reward_function).__name__}; "
                "wrap a reward model in RewardModelFunction"
            )
        if none_reward is not None and not math.isfinite(none_reward):
            raise ValueError(f"none_reward must be a finite number or None, got {none_reward}")
        self.reward_function = reward_function
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.none_reward = none_reward
        self.backbone = RewardFunctionBackbone(self._rewards_from_ids)
        self.score = nn.Identity()
        self._columns: dict[tuple[int, ...], dict[str, Any]] = {}
        self._column_names: tuple[str, ...] | None = None
        self._pending_metrics: dict[str, list[float]] = defaultdict(list)
        if query_columns is not None:
            self.add_query_columns(query_columns)

    def add_query_columns(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Registers extra columns by query: each row has `input_ids` (the query exactly as tokenized in the PPO
        dataset) and the same other columns. A query seen twice must carry the same values."""
        for i, row in enumerate(rows):
            if "input_ids" not in row:
                raise KeyError(f"query_columns row {i} has no 'input_ids'")
            names = tuple(sorted(k for k in row if k not in ("input_ids", "attention_mask")))
            if not names:
                raise ValueError(f"query_columns row {i} has no column besides input_ids")
            if self._column_names is None:
                self._column_names = names
            elif names != self._column_names:
                raise ValueError(
                    f"query_columns row {i} has columns {list(names)}, expected {list(self._column_names)}"
                )
            key = tuple(int(t) for t in row["input_ids"])
            values = {name: row[name] for name in names}
            if self._columns.setdefault(key, values) != values:
                raise ValueError(f"query_columns row {i}: the same query was registered with different values")

    def _lookup_columns(self, queries: list[list[int]]) -> dict[str, list[Any]]:
        if self._column_names is None:
            return {}
        columns: dict[str, list[Any]] = {name: [] for name in self._column_names}
        for row, ids in enumerate(queries):
            values = self._columns.get(tuple(ids))
            if values is None:
                text = self.tokenizer.decode(ids)
                raise KeyError(f"query of row {row} ({text[:80]!r}) is not among the registered query_columns")
            for name in self._column_names:
                columns[name].append(values[name])
        return columns

    def _log_metric(self, name: str, value: float) -> None:
        self._pending_metrics[name].append(float(value))

    def pop_metrics(self) -> dict[str, float]:
        """Averages of what the reward function logged since the last call, and resets them."""
        metrics = {name: sum(values) / len(values) for name, values in self._pending_metrics.items() if values}
        self._pending_metrics.clear()
        return metrics

    def _rewards_from_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, context_length: int
    ) -> torch.Tensor:
        if not 0 <= context_length <= input_ids.shape[1]:
            raise ValueError(f"context_length={context_length} is outside [0, {input_ids.shape[1]}]")
        ids, mask = input_ids.tolist(), attention_mask.tolist()
        queries = [
            [t for t, m in zip(r[:context_length], k[:context_length], strict=True) if m]
            for r, k in zip(ids, mask, strict=True)
        ]
        responses = [
            [t for t, m in zip(r[context_length:], k[context_length:], strict=True) if m]
            for r, k in zip(ids, mask, strict=True)
        ]
        prompts = self.tokenizer.batch_decode(queries, skip_special_tokens=self.skip_special_tokens)
        completions = self.tokenizer.batch_decode(responses, skip_special_tokens=self.skip_special_tokens)
        kwargs = self._lookup_columns(queries)
        output = self.reward_function(
            prompts=prompts, completions=completions, completion_ids=responses, log_metric=self._log_metric, **kwargs
        )
        if inspect.isawaitable(output):  # an async reward function (a RemoteRewardFunction, an ensemble holding one)
            output = run_blocking(output)
        output = list(output)
        if len(output) != len(prompts):
            raise ValueError(f"the reward function returned {len(output)} rewards for {len(prompts)} samples")
        missing = [i for i, value in enumerate(output) if value is None or math.isnan(value)]
        if missing and self.none_reward is None:
            raise ValueError(
                f"the reward function returned no reward for rows {missing[:8]}; PPO needs one for every sample: pass "
                "none_reward= to RewardFunctionModule"
            )
        values = [self.none_reward if value is None or math.isnan(value) else float(value) for value in output]
        return torch.tensor(values, dtype=torch.float32, device=input_ids.device)

    @torch.no_grad()
    def rewards(self, query_responses: torch.Tensor, pad_token_id: int, context_length: int) -> torch.Tensor:
        """
        The rewards `get_reward` returns, without going through it.

        Args:
            query_responses (`torch.Tensor` of shape `(B, T)`): queries (width `context_length`) then responses.
            pad_token_id (`int`): the policy's pad token.
            context_length (`int`): width of the query part.

        Returns:
            `torch.Tensor` of shape `(B,)`.
        """
        mask = query_responses != pad_token_id
        return self._rewards_from_ids(query_responses, mask, context_length)

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            "RewardFunctionModule is called through trl's get_reward (its backbone and score), or with .rewards(...)"
        )
