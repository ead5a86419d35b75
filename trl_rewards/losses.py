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


def _check_finite(**tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and not torch.isfinite(t).all():
            index = int((~torch.isfinite(t)).flatten().nonzero()[0])
            raise ValueError(f"{name} must be finite, but {name}[{index}] is {t.flatten()[index].item()}")


def _check_probability(t: torch.Tensor, name: str) -> None:
    _check_finite(**{name: t})
    if ((t < 0) | (t > 1)).any():
        raise ValueError(f"{name} must lie in [0, 1], got min {t.min().item()} max {t.max().item()}")


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""
    Bradley-Terry pairwise loss, optionally with a margin and a soft target.

    With `Δ = r_c - r_r`, a margin `m` and the target probability `p` that `chosen` is better, the loss is

    $$\ell = -\big(p \log \sigma(Δ - m) + (1 - p) \log \sigma(-Δ - m)\big)$$

    `p = 1` (the default) is the standard loss `-log σ(r_c - r_r - m)` (Llama 2's margin). A soft `p` expresses
    annotator agreement; label smoothing `ε` is the special case `p = 1 - ε`. The margin applies in the direction of
    each side of the preference: the `p` part asks `chosen` to win by `m`, the `1 - p` part asks `rejected` to win by
    `m`. So `p = 0.5` is symmetric in `Δ` and its optimum is `Δ = 0` whatever `m` (subtracting `m` from `Δ` in both
    terms would instead move the optimum to `Δ = m + logit(p)`, pushing a 50/50 pair to make `chosen` win by `m`).

    Args:
        chosen_rewards (`torch.Tensor` of shape `(batch,)`):
            Scalar rewards of the chosen completions.
        rejected_rewards (`torch.Tensor` of shape `(batch,)`):
            Scalar rewards of the rejected completions.
        margin (`torch.Tensor` of shape `(batch,)`, *optional*):
            Finite margin `m` by which the preferred side should win (Llama 2 reward model).
        target (`torch.Tensor` of shape `(batch,)`, *optional*):
            Probability in `[0, 1]` that `chosen` is better. Defaults to 1.
        reduction (`str`, *optional*, defaults to `"mean"`):
            `"mean"`, `"sum"` or `"none"` (per-pair losses of shape `(batch,)`).

    Returns:
        `torch.Tensor`: scalar loss, or shape `(batch,)` with `reduction="none"`.
    """
    _check_same_shape(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards, margin=margin, target=target)
    _check_finite(margin=margin, target=target)
    delta = chosen_rewards - rejected_rewards
    margin = torch.zeros_like(delta) if margin is None else margin.to(delta.dtype)
    if target is None:
        loss = -F.logsigmoid(delta - margin)
    else:
        _check_probability(target, "target")
        target = target.to(delta.dtype)
        loss = -(target * F.logsigmoid(delta - margin) + (1 - target) * F.logsigmoid(-delta - margin))
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


def process_step_loss(
    step_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100, reduction: str = "mean"
) -> torch.Tensor:
    r"""
    Cross-entropy over the two step classes (0 = bad, 1 = good) at the labelled positions of a process reward model.

    Only positions whose label is not `ignore_index` count (one per step: the last token of its separator, or its
    step tag); with `y ∈ {0, 1}` and `d = z_good - z_bad`, the loss of one step is

    $$\ell = -\big(y \log \sigma(d) + (1 - y) \log \sigma(-d)\big)$$

    i.e. the two-class softmax cross-entropy, written with `logsigmoid` so that large logit gaps stay exact.

    Args:
        step_logits (`torch.Tensor` of shape `(batch, seq_len, 2)`):
            Logits of the bad (index 0) and good (index 1) classes at every position.
        labels (`torch.Tensor` of shape `(batch, seq_len)`):
            1 for a good step, 0 for a bad step, `ignore_index` at every other position.
        ignore_index (`int`, *optional*, defaults to `-100`):
            Label of the positions that do not count.
        reduction (`str`, *optional*, defaults to `"mean"`):
            `"mean"` (over labelled positions), `"sum"`, or `"none"` (shape `(batch, seq_len)`, 0 where ignored).

    Returns:
        `torch.Tensor`: scalar loss, or shape `(batch, seq_len)` with `reduction="none"`.
    """
    if step_logits.dim() < 1 or step_logits.shape[-1] != 2:
        raise ValueError(f"step_logits must end with a size-2 (bad, good) dimension, got {tuple(step_logits.shape)}")
    if tuple(labels.shape) != tuple(step_logits.shape[:-1]):
        raise ValueError(f"labels shape {tuple(labels.shape)} must be step_logits shape without its last dimension")
    mask = labels != ignore_index
    if ((labels[mask] != 0) & (labels[mask] != 1)).any():
        raise ValueError(f"labels must be 0, 1 or ignore_index={ignore_index}, got {labels[mask].unique().tolist()}")
    if reduction == "mean" and not mask.any():
        raise ValueError("no labelled position (every label is ignore_index): the mean loss is undefined")
    # Selection, not multiplication by the mask: an inf logit at an ignored position would give 0 * inf = nan.
    selected = step_logits[mask]
    d = (selected[:, 1] - selected[:, 0]).float()
    y = labels[mask].to(d.dtype)
    loss = -(y * F.logsigmoid(d) + (1 - y) * F.logsigmoid(-d))
    if reduction == "none":
        return d.new_zeros(mask.shape).masked_scatter(mask, loss)
    return _reduce(loss, reduction)


def step_tag_logits(logits: torch.Tensor, good_token_id: int, bad_token_id: int) -> torch.Tensor:
    """
    The two logits that a language-model PRM reads at a step tag: the bad token's and the good token's.

    Args:
        logits (`torch.Tensor` of shape `(..., vocab_size)`): next-token logits.
        good_token_id (`int`): id of the token meaning "this step is correct" (e.g. `+`).
        bad_token_id (`int`): id of the token meaning "this step is wrong" (e.g. `-`).

    Returns:
        `torch.Tensor` of shape `(..., 2)`: `[z_bad, z_good]`, the class order of [`process_step_loss`].
    """
    if good_token_id == bad_token_id:
        raise ValueError(f"good_token_id and bad_token_id must differ, both are {good_token_id}")
    for name, token_id in (("good_token_id", good_token_id), ("bad_token_id", bad_token_id)):
        if not 0 <= token_id < logits.shape[-1]:
            raise ValueError(f"{name}={token_id} is outside the vocabulary of size {logits.shape[-1]}")
    return logits[..., [bad_token_id, good_token_id]]


def step_tag_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    good_token_id: int,
    bad_token_id: int,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""
    Loss of a language-model PRM ("Let's Verify Step by Step" style): at every step tag, cross-entropy over the two
    selected next-token logits only, `softmax([z_bad, z_good])`, so P(step correct) = `σ(z_good - z_bad)`. The rest of
    the vocabulary plays no part.

    Args:
        logits (`torch.Tensor` of shape `(batch, seq_len, vocab_size)`):
            Next-token logits of the causal LM.
        labels (`torch.Tensor` of shape `(batch, seq_len)`):
            1 (good) or 0 (bad) at step-tag positions, `ignore_index` elsewhere.
        good_token_id (`int`): id of the good token (e.g. `+`).
        bad_token_id (`int`): id of the bad token (e.g. `-`).
        ignore_index (`int`, *optional*, defaults to `-100`): label of the positions that do not count.
        reduction (`str`, *optional*, defaults to `"mean"`): as in [`process_step_loss`].

    Returns:
        `torch.Tensor`: scalar loss, or shape `(batch, seq_len)` with `reduction="none"`.
    """
    return process_step_loss(
        step_tag_logits(logits, good_token_id, bad_token_id), labels, ignore_index=ignore_index, reduction=reduction
    )


def outcome_loss(scores: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    r"""
    Binary cross-entropy of an outcome reward model's score (a logit) against the correctness of the final answer:

    $$\ell = -\big(y \log \sigma(s) + (1 - y) \log \sigma(-s)\big)$$

    Args:
        scores (`torch.Tensor` of shape `(batch,)`):
            Scores (logits of P(correct)) read at each sequence's final token.
        labels (`torch.Tensor` of shape `(batch,)`):
            1 for a correct solution, 0 for a wrong one (a probability in `[0, 1]` is accepted as a soft label).
        reduction (`str`, *optional*, defaults to `"mean"`): `"mean"`, `"sum"` or `"none"` (shape `(batch,)`).

    Returns:
        `torch.Tensor`: scalar loss, or shape `(batch,)` with `reduction="none"`.
    """
    _check_same_shape(scores=scores, labels=labels)
    _check_probability(labels, "labels")
    y = labels.to(scores.dtype)
    return _reduce(-(y * F.logsigmoid(scores) + (1 - y) * F.logsigmoid(-scores)), reduction)


def token_outcome_loss(
    token_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    r"""
    Outcome loss applied at every supervised token: each token's score is trained to predict the sequence's label, and
    a sequence's loss is the mean over its supervised tokens, so that long solutions do not outweigh short ones:

    $$\ell_i = \frac{1}{|M_i|} \sum_{t \in M_i} -\big(y_i \log \sigma(s_{i,t}) + (1 - y_i) \log \sigma(-s_{i,t})\big)$$

    Args:
        token_scores (`torch.Tensor` of shape `(batch, seq_len)`):
            The score head applied to every position.
        labels (`torch.Tensor` of shape `(batch,)`):
            1 for a correct solution, 0 for a wrong one (soft labels in `[0, 1]` accepted).
        mask (`torch.Tensor` of shape `(batch, seq_len)`):
            True (or 1) at the supervised positions `M_i`: the completion tokens and the token the score is read from.
        reduction (`str`, *optional*, defaults to `"mean"`): over sequences: `"mean"`, `"sum"` or `"none"`
            (shape `(batch,)`).

    Returns:
        `torch.Tensor`: scalar loss, or shape `(batch,)` with `reduction="none"`.
    """
    _check_same_shape(token_scores=token_scores, mask=mask)
    if token_scores.dim() != 2 or tuple(labels.shape) != tuple(token_scores.shape[:1]):
        raise ValueError(
            f"token_scores must be (batch, seq_len) and labels (batch,), got {tuple(token_scores.shape)} and "
            f"{tuple(labels.shape)}"
        )
    mask = mask.bool()
    counts = mask.sum(dim=1)
    if (counts == 0).any():
        raise ValueError(f"row {int((counts == 0).nonzero()[0])} has no supervised token (its mask is all zero)")
    # Unsupervised positions are filled, not multiplied by 0: an inf score there would give 0 * inf = nan.
    scores = token_scores.masked_fill(~mask, 0.0)
    per_token = outcome_loss(scores, labels[:, None].expand_as(token_scores), reduction="none").masked_fill(~mask, 0.0)
    return _reduce(per_token.sum(dim=1) / counts, reduction)


def pairwise_win_logit(logits_ab: torch.Tensor, logits_ba: torch.Tensor) -> torch.Tensor:
    r"""
    Position-debiased log-odds that response A beats response B, from a pairwise preference model that read both
    orders: `l_AB` is its logit of P(first ≻ second) for the input (A, B), `l_BA` for (B, A). The win probability
    averages the two orders,

    $$P(A \succ B) = \tfrac12\big(\sigma(l_{AB}) + 1 - \sigma(l_{BA})\big)
                   = \tfrac12\big(\sigma(l_{AB}) + \sigma(-l_{BA})\big),$$

    returned as `logit P = log(σ(l_AB) + σ(-l_BA)) - log(σ(-l_AB) + σ(l_BA))`, computed in log space so that
    confident logits stay finite. Swapping the orders negates it exactly, so `P(A ≻ B) + P(B ≻ A) = 1`.

    Args:
        logits_ab (`torch.Tensor` of shape `(batch,)`): logits of the (A, B) inputs.
        logits_ba (`torch.Tensor` of shape `(batch,)`): logits of the (B, A) inputs.

    Returns:
        `torch.Tensor` of shape `(batch,)`: `logit P(A ≻ B)`.
    """
    _check_same_shape(logits_ab=logits_ab, logits_ba=logits_ba)
    win = torch.logaddexp(F.logsigmoid(logits_ab), F.logsigmoid(-logits_ba))
    loss = torch.logaddexp(F.logsigmoid(-logits_ab), F.logsigmoid(logits_ba))
    return win - loss


def pairwise_preference_loss(
    logits_ab: torch.Tensor,
    logits_ba: torch.Tensor,
    target: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""
    Binary cross-entropy of a pairwise preference model over both orders of each pair (RLHFlow's pair-PM).

    The model reads `prompt + A + B` and outputs a logit `l_AB` of P(A ≻ B); every pair is shown in both orders, with
    the target `p` (probability that A is better) for (A, B) and `1 - p` for (B, A), so position carries no signal:

    $$\ell = \tfrac12\Big[-p \log\sigma(l_{AB}) - (1-p)\log\sigma(-l_{AB})\Big]
           + \tfrac12\Big[-(1-p)\log\sigma(l_{BA}) - p\log\sigma(-l_{BA})\Big]$$

    i.e. the mean of `BCEWithLogits(l_AB, p)` and `BCEWithLogits(l_BA, 1 - p)`.

    Args:
        logits_ab (`torch.Tensor` of shape `(batch,)`): logits of the (A, B) inputs.
        logits_ba (`torch.Tensor` of shape `(batch,)`): logits of the (B, A) inputs.
        target (`torch.Tensor` of shape `(batch,)`, *optional*): probability in `[0, 1]` that A is better (a soft
            label); defaults to 1.
        reduction (`str`, *optional*, defaults to `"mean"`): over pairs: `"mean"`, `"sum"` or `"none"` (shape
            `(batch,)`).

    Returns:
        `torch.Tensor`: scalar loss, or shape `(batch,)` with `reduction="none"`.
    """
    _check_same_shape(logits_ab=logits_ab, logits_ba=logits_ba, target=target)
    if target is None:
        target = torch.ones_like(logits_ab)
    _check_probability(target, "target")
    p = target.to(logits_ab.dtype)
    forward = -(p * F.logsigmoid(logits_ab) + (1 - p) * F.logsigmoid(-logits_ab))
    swapped = -((1 - p) * F.logsigmoid(logits_ba) + p * F.logsigmoid(-logits_ba))
    return _reduce((forward + swapped) / 2, reduction)


def masked_regression_loss(predictions: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    r"""
    Squared error of a multi-attribute regression head (SteerLM / HelpSteer2 style) over the *observed* ratings only:
    a missing rating is NaN in `targets` and contributes nothing. With `O` the observed `(row, attribute)` entries,

    $$\ell = \frac{1}{|O|} \sum_{(i, k) \in O} (\hat y_{ik} - y_{ik})^2$$

    so each rating counts once, whatever attribute or row it belongs to (a row with 2 of 5 ratings weighs 2/5 of a
    complete row).

    Args:
        predictions (`torch.Tensor` of shape `(batch, num_attributes)`):
            The head's outputs, read at each sequence's read-out token.
        targets (`torch.Tensor` of shape `(batch, num_attributes)`):
            The ratings, NaN where a rating is missing; every other value must be finite.
        reduction (`str`, *optional*, defaults to `"mean"`): `"mean"` (over observed entries), `"sum"` or `"none"`
            (shape `(batch, num_attributes)`, 0 at missing entries).

    Returns:
        `torch.Tensor`: scalar loss, or shape `(batch, num_attributes)` with `reduction="none"`.
    """
    _check_same_shape(predictions=predictions, targets=targets)
    if predictions.dim() != 2:
        raise ValueError(f"predictions must be (batch, num_attributes), got shape {tuple(predictions.shape)}")
    observed = ~torch.isnan(targets)
    if torch.isinf(targets).any():
        raise ValueError("targets must be finite or NaN (missing), but they contain inf")
    if not observed.any():
        raise ValueError("targets hold no observed rating (every entry is NaN)")
    # Missing entries are filled, not multiplied by 0: the NaN target would give 0 * NaN = NaN.
    diff = predictions - targets.to(predictions.dtype).masked_fill(~observed, 0.0)
    per_entry = diff.pow(2).masked_fill(~observed, 0.0)
    if reduction == "mean":
        return per_entry.sum() / observed.sum()
    return _reduce(per_entry, reduction)
