r"""Reward normalization: batch, per-group and running (cross-process) z-scores, and a sigmoid squash.

**Why z-score.** A reward ensemble sums members on unrelated scales: a reward model's logits spread over ±10, a
format check returns 0/1. Summed raw, the member with the widest spread decides the ranking alone, whatever its
weight. Mapping each member to `z = (r - mean) / (std + eps)` makes members comparable, so `reward_weights` mean
what they say and no member dominates by scale. Centering has a second use: TRL turns a `None` reward into NaN and
aggregates with `nansum`, so a missing member counts as 0. For a centered member 0 is "average"; for a raw member it
is an arbitrary value (a very good or a very bad score).

**NaN convention.** NaN means "no reward for this sample": it is excluded from every statistic and stays NaN in every
output. Standard deviations are *population* ones (`ddof=0`, like `np.nanstd`'s default), not TRL's unbiased
`nanstd`: a single valid value then has std 0 and z-score 0 instead of NaN, and with GRPO's own scaling on the
overall scale is discarded anyway (see below).

**Interaction with GRPO** (`GRPOTrainer._generate_and_score_completions`, TRL 1.16). Our `batch_zscore` and
`RunningZScore` apply one positive affine map per call, `r_k -> a_k r_k + b_k` with `a_k = 1 / (std_k + eps)`.
GRPO then forms `R = nansum_k w_k r_k` and, with `multi_objective_aggregation`:

- `"sum_then_normalize"` (default): the advantage is `(R - mean_group(R)) / (std(R) + 1e-4)`, with std taken per
  group (`scale_rewards="group"`, default), over the batch (`"batch"`) or replaced by 1 (`"none"`). The offsets
  `b_k` are constant within a group and cancel in `R - mean_group(R)` (exactly when no member is NaN inside the
  group). The scales `a_k` act as weights `w_k a_k`. With **one** reward function the advantage is therefore
  unchanged by our z-score under `"group"` and `"batch"` (the common factor `a` cancels in the ratio, up to GRPO's
  `1e-4`): we normalize twice and ours is a no-op. Under `"none"` the advantage is multiplied by `a`, i.e. our
  (running) std becomes GRPO's scale. With **several** members ours sets their relative weights and GRPO then
  rescales the sum: both act, but the overall scale of ours is discarded.
- `"normalize_then_sum"` (GDPO): each member is z-scored per group by GRPO before the weighted sum, which cancels any
  positive affine map that is constant within a group. Ours is then a no-op whatever `scale_rewards` is (GRPO
  ignores `scale_rewards` in this mode).

`group_zscore(rewards, num_generations)` is GRPO's own `scale_rewards="group"` per member (with population std):
redundant under `"group"`, equivalent to `"group"` under `"none"`, and under `"batch"` it turns batch scaling back
into group scaling. RLOO subtracts a leave-one-out mean (offsets cancel) and, with `normalize_advantages=True`,
divides by the batch std (a single member's scale cancels). `sigmoid_squash` is monotone but not affine: GRPO does
not undo it. `check_double_normalization` warns about the redundant combinations above.

**Several processes.** TRL calls reward functions on each process's local slice and gathers the rewards afterwards.
`batch_zscore` on a slice uses local statistics, so ranks apply different maps and the cancellation above fails for
groups split across ranks. `group_zscore` is only valid when every slice holds whole groups (its length is a
multiple of `num_generations`). `RunningZScore(sync=True)` all-gathers its statistics so every rank applies the same
map.

**Checkpoints.** [`~trl_rewards.callbacks.NormalizerCheckpointCallback`] saves running statistics with every
checkpoint and [`restore_normalizers`] loads them back. The callback lives in `trl_rewards.callbacks` with every
other `TrainerCallback`, because `transformers.TrainerCallback` imports the whole `Trainer` stack (peft, bitsandbytes
when installed): the normalizers and the reward ensemble stay import-light.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

NORMALIZERS_FILENAME = "reward_normalizers.json"
SCALE_REWARDS_CHOICES = ("group", "batch", "none")
AGGREGATION_CHOICES = ("sum_then_normalize", "normalize_then_sum")


def _check_eps(eps: float) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def _float_dtype(tensor: torch.Tensor) -> torch.dtype:
    return tensor.dtype if tensor.is_floating_point() else torch.get_default_dtype()


def _nan_zscore(rewards: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    # float64 so that a large offset (e.g. logits around 1e3) does not eat the variance in float32.
    x = rewards.to(torch.float64)
    valid = ~torch.isnan(x)
    count = valid.sum(dim=dim, keepdim=True)
    mean = torch.nansum(x, dim=dim, keepdim=True) / count  # 0 / 0 = NaN for an all-NaN slice
    var = torch.nansum((x - mean) ** 2, dim=dim, keepdim=True) / count
    return ((x - mean) / (var.sqrt() + eps)).to(_float_dtype(rewards))


def batch_zscore(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    r"""
    NaN-aware z-score along the first dimension: `(x - nanmean) / (nanstd + eps)` with the population std.

    Args:
        rewards (`torch.Tensor` of shape `(N,)` or `(N, K)`):
            Rewards of `N` completions (for `K` members, each column is normalized on its own). NaN = no reward.
        eps (`float`, *optional*, defaults to `1e-6`):
            Added to the std, so a constant column maps to 0 rather than NaN.

    Returns:
        `torch.Tensor` of the same shape (and floating dtype): z-scores. NaN inputs stay NaN; a column with a single
        valid value gives 0 for it (std 0); an all-NaN column stays all NaN.
    """
    _check_eps(eps)
    return _nan_zscore(rewards, dim=0, eps=eps)


def group_zscore(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    r"""
    NaN-aware z-score within each run of `group_size` consecutive rows (GRPO's layout: `num_generations` completions
    per prompt, stored next to each other).

    Args:
        rewards (`torch.Tensor` of shape `(num_prompts * group_size,)` or `(num_prompts * group_size, K)`):
            Rewards, grouped by prompt along the first dimension. NaN = no reward.
        group_size (`int`):
            Completions per prompt (`num_generations`).
        eps (`float`, *optional*, defaults to `1e-6`):
            Added to each group's population std.

    Returns:
        `torch.Tensor` of the same shape: per-group z-scores, with the conventions of [`batch_zscore`] per group.
    """
    _check_eps(eps)
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if rewards.ndim == 0:
        raise ValueError("rewards must have at least one dimension (the completions), got a 0-d tensor")
    if rewards.shape[0] % group_size != 0:
        raise ValueError(f"rewards length {rewards.shape[0]} is not divisible by group_size={group_size}")
    grouped = rewards.reshape(-1, group_size, *rewards.shape[1:])
    return _nan_zscore(grouped, dim=1, eps=eps).reshape(rewards.shape)


def sigmoid_squash(rewards: torch.Tensor, temperature: float = 1.0, center: float = 0.0) -> torch.Tensor:
    r"""
    Squash rewards into `(0, 1)`: `sigmoid((x - center) / temperature)`. Monotone, so rankings are kept, while
    outliers are bounded. Apply it after a z-score for a scale-free bounded reward.

    Args:
        rewards (`torch.Tensor` of any shape):
            Rewards. NaN stays NaN.
        temperature (`float`, *optional*, defaults to `1.0`):
            Width of the transition; must be > 0.
        center (`float`, *optional*, defaults to `0.0`):
            Reward mapped to 0.5.

    Returns:
        `torch.Tensor` of the same shape with values in `(0, 1)`.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    x = rewards.to(_float_dtype(rewards))
    return torch.sigmoid((x - center) / temperature)


def _as_tensor(values: torch.Tensor | Sequence[float | None]) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"rewards must be a tensor or a sequence of numbers or None, got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise TypeError(f"reward {i} is {v!r} ({type(v).__name__}); rewards are numbers or None")
        out.append(math.nan if v is None else float(v))
    return torch.tensor(out)


class RunningZScore:
    r"""
    Running NaN-aware z-score with Welford/Chan statistics in float64, synchronized across processes.

    Each [`update`] merges the batch's `(count, mean, M2)` into the running ones with Chan et al.'s parallel formula
    (`delta = mean_b - mean_a`, `M2 = M2_a + M2_b + delta^2 n_a n_b / n`). When `torch.distributed` is initialized
    and `sync=True`, every update all-gathers the triple from every rank and merges them in rank order, so all ranks
    hold identical statistics (those of the union of their batches). `update` is then a collective: call it on every
    rank the same number of times, with empty or all-NaN batches where a rank has nothing, and freeze all ranks alike.

    **Floor.** A running std can be (near) 0: a binary reward that was 0 for 1,000 samples, or a frozen normalizer
    whose statistics saw one value. Divided by `0 + eps`, the first success would become a z-score of ~1e6 and
    dominate every other member. The scale is therefore `max(std, min_std) + eps`; `min_std` is in reward units
    (default 0.01: a lone success after 1,000 zeros gets z = 0.999 / 0.0316 ≈ 31.6 from the data itself, and a
    success after only zeros gets at most 1 / 0.01 = 100). Raise it for rewards on a coarse scale.

    **Non-finite rewards.** `±inf` is not a reward: it is left out of the statistics (as NaN is) and normalizes to
    NaN ("no reward" for TRL), with one warning, so one overflow cannot turn every later output into NaN.

    Args:
        eps (`float`, *optional*, defaults to `1e-6`):
            Added to the running (population) std.
        sync (`bool`, *optional*, defaults to `True`):
            All-gather the statistics across ranks on each update. With `False` each rank keeps its own.
        min_std (`float`, *optional*, defaults to `0.01`):
            Floor of the std used to scale (see "Floor").
    """

    def __init__(self, eps: float = 1e-6, sync: bool = True, min_std: float = 1e-2):
        _check_eps(eps)
        if not min_std >= 0:
            raise ValueError(f"min_std must be >= 0, got {min_std}")
        self.eps = eps
        self.sync = sync
        self.min_std = min_std
        self._warned_non_finite = False
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.frozen = False

    @property
    def var(self) -> float:
        """Population variance `M2 / count` (0 before any sample)."""
        return self.m2 / self.count if self.count > 0 else 0.0

    @property
    def std(self) -> float:
        """Population std used by [`normalize`]; 1 before 2 samples, when a spread cannot be estimated yet."""
        return math.sqrt(self.var) if self.count >= 2 else 1.0

    def _merge(self, count: int, mean: float, m2: float) -> None:
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    def update(self, values: torch.Tensor | Sequence[float | None]) -> None:
        """
        Add `values` (any shape, NaN or `None` ignored) to the statistics; a no-op when frozen.
        """
        if self.frozen:
            return
        x = _as_tensor(values).detach().to(torch.float64).flatten()
        self._warn_non_finite(x)
        x = x[torch.isfinite(x)]
        n = x.numel()
        mean = x.mean().item() if n else 0.0
        m2 = ((x - mean) ** 2).sum().item() if n else 0.0
        if self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # NCCL only moves CUDA tensors; gloo only CPU ones.
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            local = torch.tensor([n, mean, m2], dtype=torch.float64, device=device)
            gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, local)
            for stats in gathered:  # rank order, so every rank computes bit-identical results
                count, mean, m2 = stats.tolist()
                self._merge(round(count), mean, m2)
        else:
            self._merge(n, mean, m2)

    def _warn_non_finite(self, x: torch.Tensor) -> None:
        if not self._warned_non_finite and bool(torch.isinf(x).any()):
            self._warned_non_finite = True
            warnings.warn(
                "RunningZScore got an infinite reward: it is left out of the statistics and normalized to NaN (no "
                "reward); check the reward function that produced it",
                stacklevel=3,
            )

    @property
    def scale(self) -> float:
        """What [`normalize`] divides by: `max(std, min_std) + eps` once 2 samples were seen, else 1."""
        return max(self.std, self.min_std) + self.eps if self.count >= 2 else 1.0

    def normalize(self, values: torch.Tensor | Sequence[float | None], update: bool = True) -> torch.Tensor:
        r"""
        Z-score `values` with the running statistics, after adding them to the statistics when `update=True`.

        The current batch is included because otherwise the first batch would have no statistics at all, and a
        shift of the reward distribution would be seen one step late; the price, a sample weighing on its own
        normalization, vanishes once the running count is much larger than a batch. On a fresh normalizer the
        first call therefore equals [`batch_zscore`].

        Args:
            values (`torch.Tensor` of any shape, or `list[float | None]`):
                Rewards; NaN / `None` = no reward.
            update (`bool`, *optional*, defaults to `True`):
                Update the statistics first (ignored when frozen).

        Returns:
            `torch.Tensor` of the same shape: `(x - mean) / (max(std, min_std) + eps)`, or `x - mean` while fewer
            than 2 samples have been seen. NaN stays NaN; `±inf` becomes NaN.
        """
        x = _as_tensor(values)
        if update:
            self.update(x)
        else:
            self._warn_non_finite(x.detach().to(torch.float64))
        out = (x.to(torch.float64) - self.mean) / self.scale
        out = torch.where(torch.isinf(x.to(torch.float64)), torch.nan, out)
        return out.to(_float_dtype(x))

    def freeze(self) -> None:
        """Stop updating the statistics (e.g. for evaluation)."""
        self.frozen = True

    def unfreeze(self) -> None:
        """Resume updating the statistics."""
        self.frozen = False

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """
        `{f"{prefix}/mean": ..., f"{prefix}/std": ..., f"{prefix}/count": ...}`, for TRL's `log_metric` kwarg (which
        averages over processes: exact when `sync=True`, as all ranks agree).
        """
        return {
            f"{prefix}/mean": self.mean,
            f"{prefix}/std": math.sqrt(self.var),
            f"{prefix}/count": float(self.count),
        }

    def state_dict(self) -> dict[str, float | int | bool]:
        """Statistics and frozen flag, JSON-serializable (Python floats round-trip exactly through JSON)."""
        return {"count": self.count, "mean": self.mean, "m2": self.m2, "frozen": self.frozen, "min_std": self.min_std}

    def load_state_dict(self, state: Mapping[str, float | int | bool]) -> None:
        """Restore what [`state_dict`] returned."""
        missing = {"count", "mean", "m2", "frozen"} - set(state)
        if missing:
            raise KeyError(f"RunningZScore state is missing {sorted(missing)}")
        if int(state["count"]) < 0 or float(state["m2"]) < 0:
            raise ValueError(f"RunningZScore state has a negative count or m2: {dict(state)}")
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
        self.frozen = bool(state["frozen"])
        self.min_std = float(state.get("min_std", self.min_std))

    def save(self, path: str | os.PathLike) -> None:
        """Write [`state_dict`] to `path` as JSON."""
        with open(path, "w") as f:
            json.dump(self.state_dict(), f, indent=2)

    def load(self, path: str | os.PathLike) -> RunningZScore:
        """Load statistics saved by [`save`] into this normalizer; returns `self`."""
        with open(path) as f:
            self.load_state_dict(json.load(f))
        return self

    def __repr__(self) -> str:
        return (
            f"RunningZScore(count={self.count}, mean={self.mean:.6g}, std={math.sqrt(self.var):.6g}, eps={self.eps})"
        )


def restore_normalizers(
    checkpoint_dir: str | os.PathLike, normalizers: Mapping[str, RunningZScore]
) -> Mapping[str, RunningZScore]:
    """
    Load the statistics written by [`~trl_rewards.callbacks.NormalizerCheckpointCallback`] into `normalizers` (in
    place; returned).

    Raises `FileNotFoundError` when the checkpoint has no normalizer file and `KeyError` when a name is missing in it.
    """
    path = os.path.join(checkpoint_dir, NORMALIZERS_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no {NORMALIZERS_FILENAME} in {checkpoint_dir}; was NormalizerCheckpointCallback used?"
        )
    with open(path) as f:
        payload = json.load(f)
    missing = sorted(set(normalizers) - set(payload))
    if missing:
        raise KeyError(f"{path} has no normalizer named {missing}; it holds {sorted(payload)}")
    for name, normalizer in normalizers.items():
        normalizer.load_state_dict(payload[name])
    return normalizers


def check_double_normalization(grpo_args, normalizes: bool) -> list[str]:
    """
    Warn when our z-scoring of rewards is combined with the trainer's own normalization (see the module docstring).

    Args:
        grpo_args (`GRPOConfig`, `RLOOConfig` or alike):
            Read with `getattr`: `scale_rewards` (bool on old TRL: `True` = `"group"`, `False` = `"none"`),
            `multi_objective_aggregation` (default `"sum_then_normalize"`), `normalize_advantages` (RLOO).
        normalizes (`bool`):
            Whether the reward functions z-score their outputs ([`batch_zscore`], [`group_zscore`],
            [`RunningZScore`]).

    Returns:
        `list[str]`: the warnings, each also emitted with `warnings.warn`; empty when nothing is redundant.
    """
    if not normalizes:
        return []
    scale = getattr(grpo_args, "scale_rewards", "none")
    scale = {True: "group", False: "none", None: "none"}.get(scale, scale)
    aggregation = getattr(grpo_args, "multi_objective_aggregation", "sum_then_normalize")
    messages = []
    if aggregation == "normalize_then_sum":
        messages.append(
            "multi_objective_aggregation='normalize_then_sum' z-scores every reward function within each group, which "
            "cancels our z-score (any positive affine map of a member that is constant within a group): rewards are "
            "normalized twice and ours is a no-op, whatever scale_rewards is. Drop our normalization, or use "
            "multi_objective_aggregation='sum_then_normalize' to let it set the members' relative weights."
        )
    elif aggregation != "sum_then_normalize":
        messages.append(f"unknown multi_objective_aggregation={aggregation!r} (expected one of {AGGREGATION_CHOICES})")
    if aggregation == "sum_then_normalize" and scale in ("group", "batch"):
        messages.append(
            f"scale_rewards={scale!r} divides the summed reward by its {scale} std after our z-score: rewards are "
            "normalized twice. With a single reward function ours cancels out entirely; with several it only sets "
            "their relative weights and GRPO discards its overall scale. Set scale_rewards='none' to keep our scale "
            "(Dr. GRPO), or drop our normalization to keep GRPO's."
        )
    elif scale not in SCALE_REWARDS_CHOICES:
        messages.append(f"unknown scale_rewards={scale!r} (expected one of {SCALE_REWARDS_CHOICES})")
    if getattr(grpo_args, "normalize_advantages", False):
        messages.append(
            "normalize_advantages=True divides the advantages by their batch std after our z-score: rewards are "
            "normalized twice, and with a single reward function ours cancels out. Disable one of the two."
        )
    for message in messages:
        warnings.warn(message, UserWarning, stacklevel=2)
    return messages
