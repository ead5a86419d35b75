"""Metrics of a pairwise preference model from its logits in both orders: accuracy, position consistency, calibration.

A pairwise model outputs `l_AB`, the logit of P(A ≻ B) for the input (A, B), and `l_BA` for the swapped input. Here A
is the `chosen` side of a preference pair and `label` = P(chosen ≻ rejected) (1 when absent). Definitions:

- **win probability** `P = (σ(l_AB) + 1 - σ(l_BA)) / 2`, the position-debiased P(chosen ≻ rejected)
  (`losses.pairwise_win_logit` gives its log-odds);
- **accuracy**: the model is right when P > 0.5 for a pair labelled above 0.5, P < 0.5 for one labelled below; P ==
  0.5 (a model tie) and a label of 0.5 count as wrong, as in `evaluation.preference_labels` under `ties="loss"`;
- **position consistency**: the share of pairs whose verdict is the same in both orders, i.e. `σ(l_AB) > 0.5` and
  `σ(l_BA) < 0.5`, or `σ(l_AB) < 0.5` and `σ(l_BA) > 0.5` (a logit of exactly 0 is no verdict: inconsistent). A model
  that always prefers the first position scores 0;
- **position bias**: `mean(σ(l_AB) + σ(l_BA) - 1)`, how much P(first ≻ second) exceeds what the content explains on
  average (0 for an unbiased model, +1 for one that always picks the first response, -1 the second);
- **ECE**, **Brier score**: of P against the labels, as `evaluation.preference_labels` defines them (soft labels
  allowed; the ECE uses `n_bins` confidence bins over [0.5, 1]).

With `bootstrap` resamples, `<metric>_ci` holds a paired percentile bootstrap interval over pairs
(`evaluation.pairwise_report.bootstrap_ci`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from ..losses import pairwise_win_logit
from .metrics import paired
from .pairwise_report import bootstrap_ci
from .preference_labels import check_labels, labelled_pairwise_metrics


def win_log_odds(logits_ab: Any, logits_ba: Any) -> np.ndarray:
    """`logit P(A ≻ B)` per pair, position-debiased (module docstring), as float64."""
    ab, ba = paired(logits_ab, logits_ba, ("logits_ab", "logits_ba"))
    return pairwise_win_logit(torch.from_numpy(ab), torch.from_numpy(ba)).numpy()


def position_consistent(logits_ab: Any, logits_ba: Any) -> np.ndarray:
    """1.0 for each pair whose verdict is the same in both orders, else 0.0 (module docstring)."""
    ab, ba = paired(logits_ab, logits_ba, ("logits_ab", "logits_ba"))
    return (((ab > 0) & (ba < 0)) | ((ab < 0) & (ba > 0))).astype(np.float64)


def position_bias(logits_ab: Any, logits_ba: Any) -> float:
    """`mean(σ(l_AB) + σ(l_BA) - 1)`: the average extra P(first ≻ second) (module docstring)."""
    ab, ba = paired(logits_ab, logits_ba, ("logits_ab", "logits_ba"))
    return float(np.mean(expit(ab) + expit(ba) - 1))


def pairwise_preference_metrics(
    logits_ab: Any,
    logits_ba: Any,
    labels: Any = None,
    *,
    n_bins: int = 10,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """
    Every metric of the module docstring for pairs scored in both orders.

    Args:
        logits_ab (`array-like` of shape `(n,)`): logits of the (chosen, rejected) inputs.
        logits_ba (`array-like` of shape `(n,)`): logits of the (rejected, chosen) inputs.
        labels (`array-like` of shape `(n,)`, *optional*): P(chosen ≻ rejected) per pair; 1 by default.
        n_bins (`int`): confidence bins of the ECE.
        bootstrap (`int`): bootstrap resamples for the `*_ci` intervals (0: none).
        seed (`int`): seed of the resampling.

    Returns:
        `dict`: `n`, `accuracy`, `position_consistency`, `position_bias`, `ece`, `brier`, `win_probability` (mean
        agreement `p P + (1 - p)(1 - P)` with the labels) and, with `bootstrap`, `accuracy_ci`,
        `position_consistency_ci`, `ece_ci`, `brier_ci`, `win_probability_ci`.
    """
    ab, ba = paired(logits_ab, logits_ba, ("logits_ab", "logits_ba"))
    p = np.ones_like(ab) if labels is None else check_labels(labels, ab.size)
    log_odds = win_log_odds(ab, ba)
    # P read as a Bradley-Terry probability σ(chosen - rejected) with chosen = logit P and rejected = 0
    report = labelled_pairwise_metrics(
        log_odds, np.zeros_like(log_odds), p, n_bins=n_bins, bootstrap=bootstrap, seed=seed
    )
    consistent = position_consistent(ab, ba)
    report.update(n=int(ab.size), position_consistency=float(consistent.mean()), position_bias=position_bias(ab, ba))
    if bootstrap:
        report["position_consistency_ci"] = list(
            bootstrap_ci(partial(np.mean), consistent, n_resamples=bootstrap, seed=seed)
        )
    return report
