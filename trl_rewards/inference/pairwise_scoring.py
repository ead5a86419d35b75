"""Scoring with a pairwise preference model: the position-debiased probability that one response beats another.

A pairwise model (trained by [`PairwisePreferenceTrainer`]) reads `prompt + A + B` in the fixed template of
`data.pairwise` and outputs `l_AB`, the log-odds of P(A ≻ B). [`PairwiseScorer`] runs both orders of every pair and
averages them, `P(A ≻ B) = (σ(l_AB) + 1 - σ(l_BA)) / 2` (`losses.pairwise_win_logit`), so a model's preference for a
position cancels out and `P(a, b) + P(b, a) = 1` exactly: each pair is scored in one canonical orientation (so both
calls run the same sequences in the same micro-batches), the log-odds are exactly antisymmetric, and the probabilities
are formed from the smaller side `σ(-|logit P|)`, whose complement is exact in float64.

Sequences are encoded by `data.pairwise.encode_pair_orders` exactly as in training and scored by [`RewardScorer`]
(length-sorted micro-batches, padding that moves no real token). A pair longer than `max_length` loses the start of
its prompt and, only when the responses alone do not fit, the ends of its responses (equal shares); such pairs are
counted in `n_truncated` / `n_responses_cut` and each call that cuts logs one warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.pairwise import PairIds, encode_pair_orders
from ..losses import pairwise_win_logit
from ..modeling import load_reward_model
from .sequence_scoring import RewardScorer, resolve_max_length, warn_truncated

_TRUNCATION = "the start of the prompt cut first, then the ends of both responses in equal shares"


def win_probabilities(log_odds: torch.Tensor) -> list[float]:
    """`σ(log_odds)` as floats built so that the values of `z` and `-z` sum to exactly 1."""
    small = torch.sigmoid(-log_odds.double().abs())  # min(P, 1 - P), accurate to the last bit
    return torch.where(log_odds > 0, 1 - small, small).tolist()


def _check_texts(prompt, a, b) -> None:
    for name, value in (("prompt", prompt), ("a", a), ("b", b)):
        if not isinstance(value, str) and not (name == "prompt" and value is None):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")


class PairwiseScorer:
    """
    Win probabilities from a pairwise preference model, averaged over both orders.

    Args:
        model: a pairwise preference model with a 1-output sequence-classification head (plain or PEFT).
        tokenizer: its tokenizer.
        batch_size (`int`): most sequences per forward pass (each pair is two sequences).
        max_tokens_per_batch (`int`, *optional*): most padded tokens per forward pass.
        max_length (`int`, *optional*): most tokens per sequence; defaults to the model's position limit.
        device: where to run; the model is moved there. Defaults to the model's device.

    Example:

    ```python
    >>> scorer = PairwiseScorer.from_pretrained("pair-pm")
    >>> scorer.win_probability(["What is 2+2?"], ["4"], ["5"])
    [0.93...]
    ```
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 16,
        max_tokens_per_batch: int | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
    ):
        self.max_length = resolve_max_length(max_length, model, tokenizer)
        self._scorer = RewardScorer(
            model, tokenizer, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, device=device
        )
        self.model, self.tokenizer, self.device = self._scorer.model, self._scorer.tokenizer, self._scorer.device
        self.n_truncated = 0
        self.n_responses_cut = 0

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, model_args=None, **kwargs) -> PairwiseScorer:
        """Loads a plain model or an adapter folder with `load_reward_model` (whole on this rank under ZeRO-3)."""
        load_kwargs = {k: kwargs.pop(k) for k in ("gguf_file", "dtype") if k in kwargs}
        model, tokenizer = load_reward_model(
            model_name_or_path, model_args=model_args, partition_under_zero3=False, **load_kwargs
        )
        return cls(model, tokenizer, **kwargs)

    def encode(self, prompt: str | None, a: str, b: str) -> PairIds:
        """Both orders of `(prompt, a, b)`, encoded and fit to `max_length` as in training (responses cut only when
        they alone do not fit); counts what was cut."""
        _check_texts(prompt, a, b)
        ids = encode_pair_orders(self.tokenizer, prompt, a, b, self.max_length, cut_responses=True)
        self.n_truncated += ids.prompt_cut > 0 or ids.responses_cut
        self.n_responses_cut += ids.responses_cut
        return ids

    def order_logits(
        self, prompts: Sequence[str | None], a_list: Sequence[str], b_list: Sequence[str]
    ) -> tuple[list[float], list[float]]:
        """`(logits_ab, logits_ba)`: the model's logit of P(first ≻ second) for each pair as given and swapped."""
        if not len(prompts) == len(a_list) == len(b_list):
            raise ValueError(f"got {len(prompts)} prompts, {len(a_list)} first and {len(b_list)} second responses")
        if not len(prompts):
            return [], []
        before = self.n_truncated
        # Each pair is encoded in a canonical orientation (texts in sorted order), so that (a, b) and (b, a) put the
        # same sequences in the same micro-batches: their logits, and so P(a, b) + P(b, a) == 1, are then exact.
        pairs, swapped = [], []
        for row, (prompt, a, b) in enumerate(zip(prompts, a_list, b_list, strict=True)):
            try:
                _check_texts(prompt, a, b)
                swapped.append(a > b)
                pairs.append(self.encode(prompt, *((b, a) if swapped[-1] else (a, b))))
            except (TypeError, ValueError) as error:
                raise type(error)(f"row {row}: {error}") from error
        warn_truncated(self.n_truncated - before, len(pairs), "pairs", self.max_length, _TRUNCATION)
        logits = self._scorer.score_ids([ids.ab for ids in pairs] + [ids.ba for ids in pairs])
        first, second = logits[: len(pairs)], logits[len(pairs) :]
        logits_ab = [s if flip else f for f, s, flip in zip(first, second, swapped, strict=True)]
        logits_ba = [f if flip else s for f, s, flip in zip(first, second, swapped, strict=True)]
        return logits_ab, logits_ba

    def win_probability(
        self, prompts: Sequence[str | None], a_list: Sequence[str], b_list: Sequence[str]
    ) -> list[float]:
        """P(a ≻ b) per row, averaged over both orders: `(σ(l_ab) + 1 - σ(l_ba)) / 2`; `P(a, b) + P(b, a) == 1`."""
        return self.score_both_orders(prompts, a_list, b_list)["win_probability"]

    def score_both_orders(
        self, prompts: Sequence[str | None], a_list: Sequence[str], b_list: Sequence[str]
    ) -> dict[str, list[Any]]:
        """
        Everything the two orders say about each pair, for evaluation (`evaluation.pairwise_eval`) and position
        checks: `logits_ab`, `logits_ba`, `p_first_ab` = σ(l_ab) and `p_first_ba` = σ(l_ba) (each order's P(first
        ≻ second)), `win_probability` (debiased P(a ≻ b)) and `position_consistent` (the verdict is the same in
        both orders: one logit > 0 and the other < 0).
        """
        logits_ab, logits_ba = self.order_logits(prompts, a_list, b_list)
        ab = torch.tensor(logits_ab, dtype=torch.float64)
        ba = torch.tensor(logits_ba, dtype=torch.float64)
        return {
            "logits_ab": logits_ab,
            "logits_ba": logits_ba,
            "p_first_ab": torch.sigmoid(ab).tolist(),
            "p_first_ba": torch.sigmoid(ba).tolist(),
            "win_probability": win_probabilities(pairwise_win_logit(ab, ba)),
            "position_consistent": (((ab > 0) & (ba < 0)) | ((ab < 0) & (ba > 0))).tolist(),
        }
