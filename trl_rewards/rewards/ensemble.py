r"""`RewardEnsemble`: several reward functions, each z-scored, combined into one TRL reward function.

Members are any reward functions in TRL's contract (model-based [`RewardModelFunction`],
[`ProcessRewardFunction`], rule-based ones, other ensembles). Each call:

1. calls every member with the same arguments (extra keyword arguments included: members ignore what they do not
   use), turning `None` (and NaN) into "missing";
2. z-scores each member's column with `rewards.normalization` (`"batch"`, `"running"`, `"group"`, `"calibrated"`
   or `"none"`), so members on different scales weigh what their weights say (see that module's docstring for why).
   `"calibrated"` uses fixed statistics per member, measured once: the scale cannot drift with the policy, and a
   hacked member cannot hide by moving the whole batch (see [`RewardEnsemble`]);
3. combines the members available for each sample (a missing member is left out of that sample only):

   - `"mean"`: `mean_k z_k`;
   - `"weighted_mean"`: `sum_k w_k z_k / sum_k w_k` over the available members;
   - `"min"`: `min_k z_k` over the members available for the sample, the worst case (robust to one member being
     hacked);
   - `"uncertainty"`: `mean_k z_k - lambda * s`, penalizing samples the members disagree on (Coste et al. 2023),
     with `s` the population std across the sample's members. With two members and `lambda = 1` this is exactly
     `min` (`(a + b) / 2 - |a - b| / 2`), so the default is `lambda = 0.5`, halfway between the mean and the worst
     case. A sample scored by fewer than two members has no spread of its own; it is charged the mean `s` of the
     call's fully scored samples, so dropping out never earns a sample a smaller penalty (with no sample scored by
     two members, `s = 0`);
   - `"median"`: `median_k z_k` (the mean of the two middle values for an even count).

   A sample that no member scores gets `None`.

**Logging.** Through the `log_metric(name, value)` keyword argument that GRPO and RLOO pass to reward functions
(averaged by TRL over each logging step and across processes), every call logs, for each member `m`,
`{name}/{m}/raw_mean`, `{name}/{m}/normalized_mean` and `{name}/{m}/missing_frac`, and
`{name}/disagreement` (the mean over samples of the std across members of the normalized rewards). Under
`on_member_error="skip"` it also logs `{name}/{m}/failed` (1 when the member failed in this call, else 0). The last
call's metrics are also kept in `last_metrics`, for callers without `log_metric` (e.g. the PPO adapter).

**Async members.** A member may be async (e.g. a [`RemoteRewardFunction`]): then `RewardEnsemble(...)` is an
[`AsyncRewardEnsemble`], whose `__call__` is async, so GRPO / RLOO await it on their event loop (TRL's own test for
async reward functions decides, `reward_calls.is_async_callable`). Its async members are awaited concurrently while
its sync members run, one after the other, in a worker thread, so local scoring overlaps the network wait; the
rewards, metrics and errors are those of the same ensemble with blocking members. With no async member, the ensemble
is sync and calls its members one after the other.

**Interaction with GRPO / RLOO.** The ensemble is one reward function for the trainer, which then scales the combined
reward (`scale_rewards`, `normalize_advantages`): its overall scale is discarded, while the members' relative weights
set here are kept. Call [`RewardEnsemble.check_trainer_args`] with the trainer's config to get the warnings of
[`~trl_rewards.rewards.normalization.check_double_normalization`] and a check of `num_generations` for `"group"`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .normalization import RunningZScore, batch_zscore, check_double_normalization
from .normalization import group_zscore as _group_zscore
from .reward_calls import (  # noqa: F401 (reward_function_name: imported from here by benchmarks)
    call_members,
    checked_rewards,
    is_async_callable,
    named_members,
    outcome,
    reward_function_name,
    run_blocking,
)

logger = logging.getLogger(__name__)

AGGREGATIONS = ("mean", "weighted_mean", "min", "uncertainty", "median")
NORMALIZATIONS = ("batch", "running", "group", "calibrated", "none")
DEFAULT_UNCERTAINTY_LAMBDA = 0.5
ON_MEMBER_ERROR = ("raise", "skip")


class RewardEnsembleMemberError(RuntimeError):
    """A member of a [`RewardEnsemble`] raised or returned something unusable; the message names the member."""


class RewardEnsemble:
    r"""
    Combines z-scored reward functions into one reward function in TRL's contract.

    Args:
        members (`Sequence[Callable]` or `Mapping[str, Callable]`):
            Reward functions (`fn(prompts, completions, completion_ids=None, **kwargs) -> list[float | None]`). From a
            sequence, each is named by its `__name__` (else its class name); names must be unique, else pass a
            mapping `{name: fn}`. A `torch.nn.Module` (a bare reward model) is rejected: wrap it in
            [`RewardModelFunction`], which brings its tokenizer.
        weights (`Sequence[float]`, *optional*):
            One non-negative weight per member, for (and only for) `aggregation="weighted_mean"`.
        aggregation (`str`, *optional*, defaults to `"mean"`):
            One of `"mean"`, `"weighted_mean"`, `"min"`, `"uncertainty"`, `"median"` (see the module docstring).
        uncertainty_lambda (`float`, *optional*):
            `lambda` of `aggregation="uncertainty"` (defaults to `0.5` there, see the module docstring; must be >= 0);
            rejected otherwise.
        normalization (`str`, *optional*, defaults to `"batch"`):
            Per-member z-score before combining: `"batch"` (statistics of this call's rewards), `"running"` (a
            [`~trl_rewards.rewards.normalization.RunningZScore`] per member, synchronized across processes, in
            `normalizers`), `"group"` (within each run of `num_generations` consecutive completions, GRPO's groups),
            `"calibrated"` (fixed per-member statistics: `calibration`, else a member's stored ones, e.g. the
            `reward_mean` / `reward_std` our trainers save in a reward model's config, else measured once on
            `calibration_data`; an error names a member with none) or `"none"` (raw rewards).
        calibration (`Mapping[str, tuple[float, float]]`, *optional*):
            `normalization="calibrated"` only: `{member: (mean, std)}` of its raw rewards.
        calibration_data (`Mapping[str, Sequence]`, *optional*):
            `normalization="calibrated"` only: `{"prompts": [...], "completions": [...], **columns}` scored once by
            every member without statistics, at construction, to measure them (NaN-aware, population std).
        num_generations (`int`, *optional*):
            Group size for (and only for) `normalization="group"`: the trainer's `num_generations`.
        eps (`float`, *optional*, defaults to `1e-6`):
            Added to the std of every z-score.
        on_member_error (`str`, *optional*, defaults to `"raise"`):
            `"raise"`: a member that raises, returns the wrong number of rewards or a non-numeric or infinite value
            stops training with a [`RewardEnsembleMemberError`] naming it. `"skip"`: that member is left out of this
            call (as if it returned `None` everywhere) with a logged warning and a `{name}/{member}/failed` metric;
            if every member fails, it raises anyway.
        name (`str`, *optional*, defaults to `"reward_ensemble"`):
            `__name__`, the prefix of the logged metrics.

    Example:
    ```python
    >>> members = [RewardModelFunction("rm-a", name="rm_a"), RewardModelFunction("rm-b", name="rm_b")]
    >>> ensemble = RewardEnsemble(
    ...     members + [AnswerCorrectnessReward()], aggregation="weighted_mean", weights=[1.0, 1.0, 2.0]
    ... )
    >>> ensemble.check_trainer_args(grpo_config)  # warns when the trainer normalizes again
    >>> trainer = GRPOTrainer(model=policy, reward_funcs=ensemble, args=grpo_config, train_dataset=prompts)
    ```
    """

    def __new__(cls, members=None, *args, **kwargs):
        if cls is RewardEnsemble and isinstance(members, Mapping | Sequence) and not isinstance(members, str):
            if any(map(is_async_callable, members.values() if isinstance(members, Mapping) else members)):
                cls = AsyncRewardEnsemble  # an async member makes the ensemble async (TRL awaits it)
        return super().__new__(cls)

    def __init__(
        self,
        members: Sequence[Callable] | Mapping[str, Callable],
        weights: Sequence[float] | None = None,
        aggregation: str = "mean",
        uncertainty_lambda: float | None = None,
        normalization: str = "batch",
        num_generations: int | None = None,
        eps: float = 1e-6,
        on_member_error: str = "raise",
        name: str = "reward_ensemble",
        calibration: Mapping[str, tuple[float, float]] | None = None,
        calibration_data: Mapping[str, Sequence] | None = None,
    ):
        self.members = named_members(members)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if on_member_error not in ON_MEMBER_ERROR:
            raise ValueError(f"on_member_error must be one of {ON_MEMBER_ERROR}, got {on_member_error!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.weights = self._check_weights(weights, aggregation)
        if uncertainty_lambda is not None and aggregation != "uncertainty":
            raise ValueError(
                f"uncertainty_lambda only applies to aggregation='uncertainty', got aggregation={aggregation!r}"
            )
        if aggregation == "uncertainty":
            uncertainty_lambda = (
                DEFAULT_UNCERTAINTY_LAMBDA if uncertainty_lambda is None else float(uncertainty_lambda)
            )
            if not uncertainty_lambda >= 0:
                raise ValueError(f"uncertainty_lambda must be >= 0, got {uncertainty_lambda}")
        if normalization == "group":
            if not isinstance(num_generations, int) or isinstance(num_generations, bool) or num_generations < 1:
                raise ValueError(
                    f"normalization='group' needs num_generations (the trainer's group size), got {num_generations!r}"
                )
        elif num_generations is not None:
            raise ValueError(f"num_generations only applies to normalization='group', got {normalization!r}")
        self.aggregation = aggregation
        self.uncertainty_lambda = uncertainty_lambda
        self.normalization = normalization
        self.num_generations = num_generations
        self.eps = eps
        self.on_member_error = on_member_error
        self.__name__ = name
        self.normalizers = (
            {member: RunningZScore(eps=eps) for member in self.members} if normalization == "running" else {}
        )
        self.last_metrics: dict[str, float] = {}
        self.before_last_call: tuple[int | None, dict] | None = None
        if (calibration is not None or calibration_data is not None) and normalization != "calibrated":
            raise ValueError(
                f"calibration and calibration_data apply to normalization='calibrated', got {normalization!r}"
            )
        self.calibration = self._calibrate(calibration, calibration_data) if normalization == "calibrated" else {}

    def _calibrate(self, given, data) -> dict[str, tuple[float, float]]:
        """`{member: (mean, std)}`: given, else the member's stored statistics, else measured on `data`."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.members))
        if unknown:
            raise ValueError(f"calibration names no member: {unknown}; members are {list(self.members)}")
        stats = {}
        for name, member in self.members.items():
            stored = getattr(member, "calibration_statistics", None) if name not in given else None
            stats[name] = given.get(name) or (stored() if callable(stored) else None)
            if stats[name] is None and data is not None:
                arguments = dict(data, completion_ids=data.get("completion_ids"))
                column = np.asarray(self._column(name, len(data["prompts"]), outcome(member, arguments)))
                if np.isnan(column).all():
                    raise ValueError(f"member {name!r} scored none of the calibration_data rows")
                stats[name] = (float(np.nanmean(column)), float(np.nanstd(column)))
            elif stats[name] is None:
                raise ValueError(
                    f"normalization='calibrated': member {name!r} has no statistics; give calibration={{{name!r}: "
                    "(mean, std)}, calibration_data to measure them on, or a reward model whose config stores "
                    "reward_mean / reward_std (our trainers write them)"
                )
        for name, (mean, std) in stats.items():
            if not (math.isfinite(mean) and math.isfinite(std) and std >= 0):
                raise ValueError(
                    f"member {name!r}: calibration statistics must be finite with std >= 0, got {(mean, std)}"
                )
        return {name: (float(mean), float(std)) for name, (mean, std) in stats.items()}

    def _check_weights(self, weights, aggregation: str) -> list[float] | None:
        if aggregation != "weighted_mean":
            if weights is not None:
                raise ValueError(f"weights only apply to aggregation='weighted_mean', got aggregation={aggregation!r}")
            return None
        if weights is None:
            raise ValueError("aggregation='weighted_mean' needs weights (one per member)")
        weights = [float(w) for w in weights]
        if len(weights) != len(self.members):
            raise ValueError(f"got {len(weights)} weights for {len(self.members)} members {list(self.members)}")
        if any(not (w >= 0 and math.isfinite(w)) for w in weights) or sum(weights) == 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {weights}")
        return weights

    def _column(self, name: str, n: int, output: Any) -> list[float]:
        """A member's output (or the exception it raised) as `n` floats, NaN = missing; else an error naming it."""
        where = f"reward ensemble {self.__name__!r}: member {name!r}"
        if isinstance(output, BaseException):
            raise RewardEnsembleMemberError(f"{where} raised {type(output).__name__}: {output}") from output
        try:
            return checked_rewards(output, n)
        except ValueError as error:
            raise RewardEnsembleMemberError(f"{where} {error}") from error

    def _arguments(self, prompts, completions, completion_ids, kwargs) -> tuple[int, dict[str, Any]]:
        n = len(prompts)
        if len(completions) != n:
            raise ValueError(f"reward ensemble {self.__name__!r}: got {n} prompts but {len(completions)} completions")
        return n, dict(kwargs, prompts=prompts, completions=completions, completion_ids=completion_ids)

    def _collect(self, n: int, outputs: Iterable[tuple[str, Any]]) -> tuple[torch.Tensor, list[str]]:
        """The `(N, K)` raw table and the failed members, from `(name, output)` in member order (both call paths)."""
        raw = torch.full((n, len(self.members)), math.nan, dtype=torch.float64)
        failed = []
        for k, (name, output) in enumerate(outputs):  # a generator: under "raise", later members are not called
            try:
                raw[:, k] = torch.tensor(self._column(name, n, output), dtype=torch.float64)
            except RewardEnsembleMemberError as error:
                if self.on_member_error == "raise":
                    raise
                logger.warning("%s; skipping it for this batch (on_member_error='skip')", error)
                failed.append(name)
        if len(failed) == len(self.members):
            raise RewardEnsembleMemberError(f"reward ensemble {self.__name__!r}: every member failed ({failed})")
        return raw, failed

    def member_rewards(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> tuple[torch.Tensor, list[str]]:
        """
        Calls every member (one after the other; an [`AsyncRewardEnsemble`] awaits its async members concurrently,
        see [`amember_rewards`]); returns the raw rewards and the names of the members that failed (under `"skip"`).

        Returns:
            `tuple[torch.Tensor, list[str]]`: rewards of shape `(N, K)` in float64 (NaN = missing, a failed member's
            column all NaN), and the failed members' names.
        """
        n, arguments = self._arguments(prompts, completions, completion_ids, kwargs)
        return self._collect(n, ((name, outcome(member, arguments)) for name, member in self.members.items()))

    async def amember_rewards(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> tuple[torch.Tensor, list[str]]:
        """[`member_rewards`] from async code: async members awaited concurrently, sync ones in a worker thread."""
        n, arguments = self._arguments(prompts, completions, completion_ids, kwargs)
        return self._collect(n, await call_members(self.members, arguments))

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """
        Z-scores each member's column with the configured normalization.

        Args:
            raw (`torch.Tensor` of shape `(N, K)`): rewards, NaN = missing.

        Returns:
            `torch.Tensor` of shape `(N, K)`: normalized rewards, NaN where `raw` is NaN.
        """
        if self.normalization == "none":
            return raw.clone()
        if self.normalization == "calibrated":
            mean = torch.tensor([self.calibration[name][0] for name in self.members], dtype=torch.float64)
            std = torch.tensor([self.calibration[name][1] for name in self.members], dtype=torch.float64)
            return (raw.to(torch.float64) - mean) / (std + self.eps)
        if self.normalization == "batch":
            return batch_zscore(raw, eps=self.eps)
        if self.normalization == "group":
            if raw.shape[0] % self.num_generations:
                raise ValueError(
                    f"reward ensemble {self.__name__!r}: normalization='group' got {raw.shape[0]} completions, not a "
                    f"multiple of num_generations={self.num_generations} (every call must hold whole groups)"
                )
            return _group_zscore(raw, self.num_generations, eps=self.eps)
        # Every member's normalizer is updated on every call, all-NaN columns included: with several processes the
        # update is a collective that every rank must join.
        columns = [self.normalizers[name].normalize(raw[:, k]) for k, name in enumerate(self.members)]
        return torch.stack(columns, dim=1).to(torch.float64)

    def aggregate(self, normalized: torch.Tensor) -> list[float | None]:
        """
        Combines the members of each sample, leaving out missing ones.

        Args:
            normalized (`torch.Tensor` of shape `(N, K)`): normalized rewards, NaN = missing.

        Returns:
            `list[float | None]`: one reward per sample; `None` where every member is missing (or, for
            `"weighted_mean"`, every available member has weight 0).
        """
        z = normalized.to(torch.float64).numpy()
        valid = ~np.isnan(z)
        count = valid.sum(axis=1)
        out = np.full(z.shape[0], np.nan)
        rows = count > 0
        zr, vr = z[rows], valid[rows]
        with warnings.catch_warnings():  # all-NaN rows are excluded above; numpy would still warn on empty slices
            warnings.simplefilter("ignore", RuntimeWarning)
            if self.aggregation == "mean":
                out[rows] = np.nanmean(zr, axis=1)
            elif self.aggregation == "weighted_mean":
                w = np.asarray(self.weights)[None, :] * vr
                total = w.sum(axis=1)
                out[rows] = np.where(total > 0, np.nansum(zr * w, axis=1) / np.where(total > 0, total, 1), np.nan)
            elif self.aggregation == "min":
                out[rows] = np.nanmin(zr, axis=1)
            elif self.aggregation == "median":
                out[rows] = np.nanmedian(zr, axis=1)
            else:  # uncertainty: a sample with < 2 members is charged the call's mean spread (module docstring)
                spread = np.nanstd(zr, axis=1)
                scored = vr.sum(axis=1) >= 2
                spread[~scored] = spread[scored].mean() if scored.any() else 0.0
                out[rows] = np.nanmean(zr, axis=1) - self.uncertainty_lambda * spread
        return [None if math.isnan(value) else float(value) for value in out]

    def _metrics(self, raw: torch.Tensor, normalized: torch.Tensor, failed: list[str]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for k, name in enumerate(self.members):
            column, z = raw[:, k], normalized[:, k]
            present = ~torch.isnan(column)
            prefix = f"{self.__name__}/{name}"
            if present.any():
                metrics[f"{prefix}/raw_mean"] = column[present].mean().item()
                metrics[f"{prefix}/normalized_mean"] = z[present].mean().item()
            metrics[f"{prefix}/missing_frac"] = 1.0 - present.double().mean().item() if len(column) else 0.0
            if self.on_member_error == "skip":
                metrics[f"{prefix}/failed"] = float(name in failed)
        z = normalized.numpy()
        several = (~np.isnan(z)).sum(axis=1) >= 2
        if several.any():
            metrics[f"{self.__name__}/disagreement"] = float(np.nanstd(z[several], axis=1).mean())
        return metrics

    def _combine(self, raw: torch.Tensor, failed: list[str], kwargs: dict[str, Any]) -> list[float | None]:
        """Normalizes, aggregates and logs a call's raw table (the sync and async `__call__` share it)."""
        if self.normalizers:  # what a checkpoint saved inside this call's generation batch must hold (callbacks.py)
            step = getattr(kwargs.get("trainer_state"), "global_step", None)
            self.before_last_call = (step, {name: n.state_dict() for name, n in self.normalizers.items()})
        normalized = self.normalize(raw)
        rewards = self.aggregate(normalized)
        self.last_metrics = self._metrics(raw, normalized, failed)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for key, value in self.last_metrics.items():
                log_metric(key, value)
        return rewards

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> list[float | None]:
        return self._combine(*self.member_rewards(prompts, completions, completion_ids, **kwargs), kwargs)

    def check_trainer_args(self, args) -> list[str]:
        """
        Checks the ensemble against a trainer config (`GRPOConfig`, `RLOOConfig` or alike) before training.

        Raises a `ValueError` when `normalization="group"` and the config's `num_generations` differs from the
        ensemble's. Returns (and emits with `warnings.warn`) the warnings of
        [`~trl_rewards.rewards.normalization.check_double_normalization`] when the ensemble normalizes and the trainer
        normalizes the rewards again: with one member the ensemble's z-score is then a no-op; with several, the
        trainer only discards the overall scale of the combined reward and the members' relative weighting set by
        the ensemble is kept.
        """
        if self.normalization == "group":
            trainer_group = getattr(args, "num_generations", None)
            if trainer_group is not None and trainer_group != self.num_generations:
                raise ValueError(
                    f"reward ensemble {self.__name__!r} normalizes groups of num_generations={self.num_generations} "
                    f"but the trainer generates {trainer_group} completions per prompt"
                )
        return check_double_normalization(args, normalizes=self.normalization != "none")

    def __repr__(self) -> str:
        return (
            f"RewardEnsemble(name={self.__name__!r}, members={list(self.members)}, aggregation={self.aggregation!r}, "
            f"normalization={self.normalization!r})"
        )


class AsyncRewardEnsemble(RewardEnsemble):
    """
    A [`RewardEnsemble`] with an async member (e.g. a [`RemoteRewardFunction`]): `RewardEnsemble(...)` returns one
    when any member is async (TRL's test, [`~trl_rewards.rewards.reward_calls.is_async_callable`]). Its `__call__` is
    async, so GRPO / RLOO await it on their event loop: the async members concurrently, the sync ones meanwhile in a
    worker thread; normalization, aggregation, logging and `None` handling are the sync ensemble's own code. Sync call
    sites: [`member_rewards`], or `run_blocking(ensemble(...))` (`rewards/reward_calls.py`, as the PPO adapter does).
    """

    async def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids=None, **kwargs
    ) -> list[float | None]:
        return self._combine(*(await self.amember_rewards(prompts, completions, completion_ids, **kwargs)), kwargs)

    def member_rewards(self, prompts, completions, completion_ids=None, **kwargs) -> tuple[torch.Tensor, list[str]]:
        return run_blocking(self.amember_rewards(prompts, completions, completion_ids, **kwargs))
