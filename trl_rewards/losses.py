"""Reward-model losses as pure functions of tensors.

Every function takes scores/logits and targets, returns a scalar (or per-example tensor with `reduction="none"`),
and has no knowledge of models or trainers. All log-probabilities go through `F.logsigmoid` / `F.cross_entropy`,
never `log(1 + exp(x))`, so large margins neither overflow nor lose precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_same_shape(**tensors: torch.Tensor | None) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items() if t is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""
    Bradley-Terry pairwise loss, optionally with a margin and a soft target.

    With `d = r_c - r_r - m`, the loss is the binary cross-entropy of the pairwise probability `σ(d)` against the
    target probability `p` that `chosen` is better:

    $$\ell = -\big(p \log \sigma(d) + (1 - p) \log \sigma(-d)\big)$$

    `p = 1` (the default) is the standard loss `-log σ(r_c - r_r - m)`. A soft `p` expresses annotator agreement;
    label smoothing `ε` is the special case `p = 1 - ε`.

    Args:
        chosen_rewards (`torch.Tensor` of shape `(batch,)`):
            Scalar rewards of the chosen completions.
        rejected_rewards (`torch.Tensor` of shape `(batch,)`):
            Scalar rewards of the rejected completions.
        margin (`torch.Tensor` of shape `(batch,)`, *optional*):
            Margin `m` by which `chosen` should beat `rejected` (Llama 2 reward model).
        target (`torch.Tensor` of shape `(batch,)`, *optional*):
            Probability in `[0, 1]` that `chosen` is better. Defaults to 1.
        reduction (`str`, *optional*, defaults to `"mean"`):
            `"mean"`, `"sum"` or `"none"` (per-pair losses of shape `(batch,)`).

    Returns:
        `torch.Tensor`: scalar loss, or shape `(batch,)` with `reduction="none"`.
    """
    _check_same_shape(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards, margin=margin, target=target)
    logits = chosen_rewards - rejected_rewards
    if margin is not None:
        logits = logits - margin
    if target is None:
        loss = -F.logsigmoid(logits)
    else:
        if ((target < 0) | (target > 1)).any():
            raise ValueError(f"target must lie in [0, 1], got min {target.min().item()} max {target.max().item()}")
        target = target.to(logits.dtype)
        loss = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))
    return _reduce(loss, reduction)


def reward_centering_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    r"""
    Auxiliary term that pulls rewards towards zero mean (Eisenstein et al. 2023, eq. 2): `mean((r_c + r_r)^2)`.

    Bradley-Terry is invariant to adding a constant to every reward; this term removes that freedom so that rewards
    from different runs (or ensemble members) sit on a comparable scale. Multiply by a small coefficient (~0.01).

    Args:
        chosen_rewards (`torch.Tensor` of shape `(batch,)`):
            Scalar rewards of the chosen completions.
        rejected_rewards (`torch.Tensor` of shape `(batch,)`):
            Scalar rewards of the rejected completions.

    Returns:
        `torch.Tensor`: scalar.
    """
    _check_same_shape(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    return ((chosen_rewards + rejected_rewards) ** 2).mean()


def smoothed_target(target: torch.Tensor | None, label_smoothing: float, batch_size: int, like: torch.Tensor):
    """
    Mixes a target probability with label smoothing `ε`: `p' = p (1 - ε) + (1 - p) ε`; `p` defaults to 1.

    Returns `None` when there is neither a target nor smoothing, so that the plain loss path is taken.

    Args:
        target (`torch.Tensor` of shape `(batch,)` or `None`): probability that `chosen` is better.
        label_smoothing (`float`): `ε` in `[0, 0.5)`.
        batch_size (`int`): used when `target` is `None`.
        like (`torch.Tensor`): dtype/device reference.
    """
    if target is None and label_smoothing == 0.0:
        return None
    if target is None:
        target = torch.ones(batch_size, dtype=like.dtype, device=like.device)
    return target * (1 - label_smoothing) + (1 - target) * label_smoothing
