"""One solution score from its per-step probabilities: product, min, last, mean or soft-min."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AGGREGATIONS = ("product", "min", "last", "mean", "softmin")


def aggregate_step_scores(probs: Sequence[float], method: str = "product", temperature: float | None = None) -> float:
    r"""
    One solution score from its per-step probabilities of being correct.

    - `"product"`: `Π p_i`, the probability that every step is correct if errors are independent (Lightman et al.);
    - `"min"`: the weakest step; `"last"`: the last step's probability; `"mean"`: the average;
    - `"softmin"`: `Σ w_i p_i` with `w = softmax(-p / T)`: tends to `min` as `T → 0` and to `mean` as `T → ∞`.

    Args:
        probs (`Sequence[float]` of shape `(n_steps,)`): P(step correct) of each step, in `[0, 1]`.
        method (`str`, *optional*, defaults to `"product"`): one of `AGGREGATIONS`.
        temperature (`float`, *optional*): `T > 0`, required by `"softmin"` and rejected by the other methods.

    Returns:
        `float` in `[0, 1]`.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"method must be one of {AGGREGATIONS}, got {method!r}")
    if method == "softmin":
        if temperature is None or not temperature > 0 or not np.isfinite(temperature):
            raise ValueError(f"method='softmin' needs a finite temperature > 0, got {temperature!r}")
    elif temperature is not None:
        raise ValueError(
            f"temperature is used only by method='softmin', got temperature={temperature} with {method!r}"
        )
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"probs must be a non-empty 1-D sequence, got shape {p.shape}")
    outside = np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))
    if outside.size:
        raise ValueError(f"probs[{outside[0]}] is {p[outside[0]]}, not a probability")
    if method == "product":
        return float(np.prod(p))
    if method == "min":
        return float(p.min())
    if method == "last":
        return float(p[-1])
    if method == "mean":
        return float(p.mean())
    logits = -p / temperature
    weights = np.exp(logits - logits.max())
    return float(np.sum(weights * p) / np.sum(weights))
