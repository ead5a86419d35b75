r"""GRPO with dense process rewards: DeepSeekMath's process supervision inside TRL's `GRPOTrainer`.

[`ProcessGRPOTrainer`] is `trl.GRPOTrainer` plus *step* reward functions (a PRM through
[`~trl_rewards.rewards.model_rewards.ProcessRewardFunction`]`(step_rewards=True)`, a served one, or a rule such as
[`~trl_rewards.rewards.step_rewards.ArithmeticStepReward`]). Each returns, per completion, the character offsets where
its steps end and their rewards; the trainer maps the offsets onto the policy's own tokens (through the policy
tokenizer's offsets, so the step function may tokenize with anything), normalizes every step reward over all the
steps of its group and gives each token the sum of the normalized rewards of the steps ending at or after it
(the pure math is in [`~trl_rewards.step_advantages`]). That process advantage, of shape `(B, T)`, is added to GRPO's
own outcome advantage broadcast over the tokens, with the weights of [`ProcessGRPOConfig`]; TRL's loss takes a
`(B, T)` advantage as it is, so the loss, clipping, KL, LoRA, gradient accumulation and `num_iterations` buffering are
all TRL's.

Only two methods differ from TRL's: `_calculate_rewards` also runs the step reward functions on this process's
completions (the texts and token ids TRL just produced), and `_generate_and_score_completions` gathers their step
rewards from every process (a group may be split across processes), normalizes them per group, and replaces the
`(B,)` advantages with the `(B, T)` ones of this process's completions.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import gather_object
from torch import nn
from trl import GRPOTrainer
from trl.extras.profiling import profiling_context
from trl.trainer.utils import is_async_callable, shutdown_event_loop_in_daemon, start_event_loop_in_daemon

from ..step_advantages import (
    check_step_rewards,
    combine_advantages,
    normalize_step_rewards,
    step_end_tokens,
    step_statistics,
    token_advantages,
    token_char_ends,
)

_UNSUPPORTED = ("tools", "rollout_func", "environment_factory")


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content") or "" for message in completion)


def _callable_name(func: Callable) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


async def _awaited(awaitable):
    return await awaitable


class ProcessGRPOTrainer(GRPOTrainer):
    r"""
    `trl.GRPOTrainer` trained on per-token advantages from step rewards (DeepSeekMath's process supervision), added to
    GRPO's outcome advantage.

    Args:
        model, reward_funcs, args, **kwargs:
            As for [`~trl.GRPOTrainer`]. `reward_funcs` are the outcome rewards (an answer check, a reward model, an
            ensemble); at least one is needed (with `outcome_advantage_weight=0` they are only logged). `args` is a
            [`ProcessGRPOConfig`] (a plain `GRPOConfig` gets its default weights: outcome 1, process 1). `tools`,
            `rollout_func` and `environment_factory` are refused: tool outputs and custom rollouts change the
            completion text, so character offsets would not map onto the generated tokens.
        step_reward_funcs (callable or `list` of callables):
            Step reward functions: `fn(prompts, completions, completion_ids=None, **kwargs)` returning, per
            completion, `[(char_end, reward), ...]` or `None` (see [`~trl_rewards.rewards.step_rewards`]). They get
            the same keyword arguments (dataset columns, `trainer_state`, `log_metric`, `log_extra`) as TRL's reward
            functions.

    Logged per step reward function `name` (over the whole generation batch, all processes): `steps/{name}/
    mean_step_reward`, `steps_per_completion`, `no_steps_frac`, `first_bad_found` (share of the completions with
    steps where a step reward below `bad_step_threshold` locates a first bad step) and `first_bad_position`, plus
    `steps/process_advantage_abs_mean`.

    Example:
    ```python
    >>> steps = ProcessRewardFunction("my-prm", step_rewards=True)
    >>> trainer = ProcessGRPOTrainer(policy, reward_funcs=AnswerCorrectnessReward(), step_reward_funcs=steps,
    ...                              args=ProcessGRPOConfig("out", process_advantage_weight=1.0), train_dataset=rows)
    ```
    """

    _tag_names = ["trl", "grpo", "process-supervision", "trl-rewards"]

    def __init__(self, model, reward_funcs=None, args=None, *rest, step_reward_funcs=None, **kwargs):
        for name in _UNSUPPORTED:
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"ProcessGRPOTrainer does not support {name}: it changes the completion text around the generated "
                    "tokens, so the step reward functions' character offsets would not map onto them"
                )
        funcs = reward_funcs if isinstance(reward_funcs, list) else [] if reward_funcs is None else [reward_funcs]
        if not funcs:
            raise ValueError(
                "ProcessGRPOTrainer needs at least one outcome reward function in reward_funcs (e.g. "
                "AnswerCorrectnessReward()); with outcome_advantage_weight=0 it is only logged"
            )
        for func in funcs:
            if getattr(func, "returns_step_rewards", False):
                raise ValueError(
                    f"reward_funcs holds the step reward function {_callable_name(func)!r}: pass it as "
                    "step_reward_funcs (reward_funcs return one number per completion)"
                )
        steps = (
            step_reward_funcs
            if isinstance(step_reward_funcs, list)
            else ([] if step_reward_funcs is None else [step_reward_funcs])
        )
        if not steps:
            raise ValueError("step_reward_funcs is empty: ProcessGRPOTrainer needs at least one step reward function")
        for k, func in enumerate(steps):
            if isinstance(func, nn.Module) or not callable(func):
                raise TypeError(
                    f"step_reward_funcs[{k}] must be a callable returning (char_end, reward) pairs "
                    f"per completion, got {type(func).__name__} (wrap a PRM in ProcessRewardFunction(step_rewards="
                    "True))"
                )
        weights = getattr(args, "step_reward_weights", None)
        if weights is not None and len(weights) != len(steps):
            raise ValueError(f"step_reward_weights has {len(weights)} weights for {len(steps)} step reward functions")
        names = [_callable_name(func) for func in steps]
        if len(set(names)) != len(steps):
            raise ValueError(f"step reward functions need distinct names (`__name__`), got {names}")
        super().__init__(model, funcs, args, *rest, **kwargs)
        self.step_reward_funcs = steps
        self.step_reward_func_names = names
        self.step_reward_weights = weights or [1.0] * len(steps)
        self.outcome_advantage_weight = float(getattr(self.args, "outcome_advantage_weight", 1.0))
        self.process_advantage_weight = float(getattr(self.args, "process_advantage_weight", 1.0))
        self.bad_step_threshold = float(getattr(self.args, "bad_step_threshold", 0.5))
        self._pending_steps = None
        if any(is_async_callable(func) for func in steps) and getattr(self, "async_loop", None) is None:
            # an async step reward function (a served PRM): awaited on a daemon loop, as GRPO does its reward_funcs
            self.async_loop_thread, self.async_loop, ready = start_event_loop_in_daemon(name="StepRewardLoop")
            ready.wait()
            atexit.register(shutdown_event_loop_in_daemon, self.async_loop_thread, self.async_loop)

    def _step_rewards(self, inputs, prompts, completions, completion_ids_list) -> list[tuple[list, list]]:
        """Per step reward function: `(step end tokens, step rewards)` of each of this process's completions."""
        texts = [_completion_text(c) for c in completions]
        token_ends = []
        for row, (ids, text) in enumerate(zip(completion_ids_list, texts, strict=True)):
            decoded = self._tokenizer.decode(ids, skip_special_tokens=True)
            if decoded != text:
                raise ValueError(
                    f"completion {row}: its text is not the decoding of its token ids ({decoded[:60]!r} vs "
                    f"{text[:60]!r}), so step offsets cannot be mapped onto tokens (a response parser or chat "
                    "template rewrote it)"
                )
            token_ends.append(token_char_ends(self._tokenizer, ids))
        keys = [key for key in inputs[0] if key not in ("prompt", "completion", "completion_ids")]
        kwargs = {key: [example[key] for example in inputs] for key in keys}
        kwargs.update(trainer_state=self.state, log_extra=self._log_completion_extra, log_metric=self._log_metric)
        results = []
        for func, name in zip(self.step_reward_funcs, self.step_reward_func_names, strict=True):
            with profiling_context(self, name):
                output = func(prompts=prompts, completions=completions, completion_ids=completion_ids_list, **kwargs)
                if inspect.isawaitable(output):
                    output = asyncio.run_coroutine_threadsafe(_awaited(output), self.async_loop).result()
            checked = check_step_rewards(output, texts, name)
            tokens = [
                step_end_tokens([end for end, _ in row], ends) for row, ends in zip(checked, token_ends, strict=True)
            ]
            results.append((tokens, [[reward for _, reward in row] for row in checked]))
        return results

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._pending_steps = self._step_rewards(inputs, prompts, completions, completion_ids_list)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        pending, self._pending_steps = self._pending_steps, None
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        outcome = output["advantages"]
        local, length = outcome.shape[0], output["completion_ids"].shape[1]
        start = self.accelerator.process_index * local
        process = torch.zeros(local, length)
        for (tokens, rewards), name, weight in zip(
            pending, self.step_reward_func_names, self.step_reward_weights, strict=True
        ):
            every = gather_object(rewards)  # groups may straddle processes: normalize over the global batch
            normalized = normalize_step_rewards(every, num_generations, self.scale_rewards)[start : start + local]
            process += weight * token_advantages(tokens, normalized, length)
            for key, value in step_statistics(every, self.bad_step_threshold).items():
                if value == value:  # NaN: nothing to report (e.g. no bad step found)
                    self._metrics[mode][f"steps/{name}/{key}"].append(value)
        mask = output["completion_mask"].cpu().bool()
        absolute = (
            self.accelerator.gather(
                torch.tensor([process.abs()[mask].sum().item(), mask.sum().item()], device=outcome.device)
            )
            .view(-1, 2)
            .sum(0)
        )
        self._metrics[mode]["steps/process_advantage_abs_mean"].append((absolute[0] / absolute[1].clamp(min=1)).item())
        output["advantages"] = combine_advantages(
            outcome, process.to(outcome.device), self.outcome_advantage_weight, self.process_advantage_weight
        )
        return output
