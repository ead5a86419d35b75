r"""A multi-attribute reward model as a TRL reward function, and ArmoRM's second stage (prompt-conditioned gating).

[`AttributeRewardFunction`] follows TRL's contract (`fn(prompts, completions, completion_ids=None, **kwargs) ->
list[float]`, picklable, `__name__`), like [`RewardModelFunction`], so it goes to `GRPOTrainer` / `RLOOTrainer`, a
[`RewardEnsemble`] or the PPO adapter. The reward is either fixed weights over the attribute scores (HelpSteer2:
`Σ_k w_k s_k`) or an [`AttributeGating`] layer (ArmoRM). Each call logs every attribute's mean score
(`{name}/{attribute}`) through TRL's `log_metric`.

**ArmoRM stage 2** (Wang et al., 2024, "Interpretable Preferences via Multi-Objective Reward Modeling and
Mixture-of-Experts"). The attribute model is frozen; a small MLP reads the prompt's embedding `e(x)` (final hidden
state at the read-out token, [`AttributeScorer.embed_prompts`]) and outputs non-negative weights that sum to 1,
`w(x) = softmax(MLP(e(x)) / τ)`. Before mixing, each attribute is de-biased against verbosity: with `v` the
verbosity score, `s_k' = s_k - λ_k v`, where `λ_k = cov(s_k, v) / var(v)` on a reference set, so that
`corr(s_k', v) = 0` there exactly (and the verbosity attribute itself becomes 0: it can no longer be rewarded). The
reward is `β Σ_k w_k(x) s_k'(x, y)` with a learned scale `β > 0`, and only the MLP and `β` are trained, with the
Bradley-Terry loss on preference pairs ([`fit_attribute_gating`]; plain PyTorch, the base model never runs
backward).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..inference.attribute_scoring import AttributeScorer, saved_num_attributes
from ..losses import bradley_terry_loss
from ..modeling import load_reward_model
from .base import ModelBackedReward, model_name


def verbosity_debias_coefficients(scores, verbosity_index: int) -> np.ndarray:
    """
    `λ` of shape `(K,)`: `λ_k = cov(s_k, v) / var(v)` over the reference scores `(N, K)`, `v` their verbosity
    column, so that `s_k - λ_k v` is uncorrelated with `v` on them (`λ` of verbosity itself is 1).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or not 0 <= verbosity_index < scores.shape[1]:
        raise ValueError(
            f"scores must be (N, K) with verbosity_index in [0, K), got {scores.shape}, {verbosity_index}"
        )
    v = scores[:, verbosity_index] - scores[:, verbosity_index].mean()
    var = float(np.mean(v**2))
    if len(scores) < 2 or var <= 0:
        raise ValueError("the reference verbosity scores are constant: the verbosity correction is undefined")
    return ((scores - scores.mean(0)) * v[:, None]).mean(0) / var


class AttributeGating(torch.nn.Module):
    """
    ArmoRM's gating layer: prompt embedding `(N, H)` -> attribute weights `(N, K)` on the simplex, and the gated,
    verbosity-corrected reward `β Σ_k w_k s_k'` (module docstring).

    Args:
        embedding_size (`int`): `H`, the reward model's hidden size.
        attributes (`Sequence[str]`): the attribute names, in score-column order.
        hidden_size (`int`): width of the MLP's hidden layer.
        temperature (`float`): `τ` of the softmax.
        verbosity (`str`, *optional*): the verbosity attribute to de-bias against (`None`: no correction).
    """

    def __init__(
        self,
        embedding_size: int,
        attributes: Sequence[str],
        hidden_size: int = 64,
        temperature: float = 1.0,
        verbosity: str | None = None,
    ):
        super().__init__()
        if verbosity is not None and verbosity not in attributes:
            raise ValueError(f"verbosity={verbosity!r} is not one of the attributes {list(attributes)}")
        if temperature <= 0 or hidden_size < 1:
            raise ValueError(f"temperature must be > 0 and hidden_size >= 1, got {temperature}, {hidden_size}")
        self.options = {
            "embedding_size": int(embedding_size),
            "attributes": list(attributes),
            "hidden_size": int(hidden_size),
            "temperature": float(temperature),
            "verbosity": verbosity,
        }
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(embedding_size, hidden_size),
            torch.nn.GELU(),
            torch.nn.Linear(hidden_size, len(attributes)),
        )
        self.log_scale = torch.nn.Parameter(torch.zeros(()))
        self.register_buffer("debias", torch.zeros(len(attributes), dtype=torch.float64))

    @property
    def attributes(self) -> list[str]:
        return self.options["attributes"]

    def weights(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`(N, K)` non-negative attribute weights summing to 1 for `(N, H)` prompt embeddings."""
        return torch.softmax(self.mlp(embeddings) / self.options["temperature"], dim=-1)

    def corrected(self, scores: torch.Tensor) -> torch.Tensor:
        """`(N, K)` scores with each attribute's verbosity component removed (`s_k - λ_k v`)."""
        if self.options["verbosity"] is None:
            return scores
        v = scores[:, self.attributes.index(self.options["verbosity"])]
        return scores - self.debias.to(scores.dtype) * v[:, None]

    def forward(self, embeddings: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """`(N,)` rewards `β Σ_k w_k(x) s_k'` of `(N, H)` prompt embeddings and `(N, K)` attribute scores."""
        weights = self.weights(embeddings.to(self.log_scale.dtype))
        return self.log_scale.exp() * (weights * self.corrected(scores.to(weights.dtype))).sum(-1)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the options and weights to one file (loaded back by [`load`])."""
        torch.save({"options": self.options, "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AttributeGating:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        gating = cls(**saved["options"])
        gating.load_state_dict(saved["state_dict"])
        return gating.eval()


def fit_attribute_gating(
    prompt_embeddings,
    chosen_scores,
    rejected_scores,
    attributes: Sequence[str],
    *,
    verbosity: str | None = None,
    reference_scores=None,
    hidden_size: int = 64,
    temperature: float = 1.0,
    epochs: int = 50,
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> AttributeGating:
    """
    Trains an [`AttributeGating`] on preference pairs with the Bradley-Terry loss; the attribute model is frozen, so
    its outputs are precomputed ([`AttributeScorer.embed_prompts`] and [`AttributeScorer.score_attributes`]).

    Args:
        prompt_embeddings (array of shape `(N, H)`): the prompt of each pair.
        chosen_scores, rejected_scores (arrays of shape `(N, K)`): attribute scores of each side.
        attributes (`Sequence[str]`): the attribute names, in column order.
        verbosity (`str`, *optional*): the attribute to de-bias against; `λ` is measured on `reference_scores`
            (default: every chosen and rejected score).
        hidden_size, temperature: of the gating MLP.
        epochs, learning_rate, batch_size, weight_decay, seed: of the Adam fit (full passes over shuffled pairs).

    Returns:
        [`AttributeGating`] in eval mode, on the CPU.
    """
    embeddings = torch.as_tensor(np.asarray(prompt_embeddings), dtype=torch.float32)
    chosen = torch.as_tensor(np.asarray(chosen_scores), dtype=torch.float32)
    rejected = torch.as_tensor(np.asarray(rejected_scores), dtype=torch.float32)
    n, k = chosen.shape if chosen.dim() == 2 else (None, None)
    if n is None or k != len(attributes) or rejected.shape != chosen.shape or embeddings.shape[:1] != (n,):
        raise ValueError(
            f"need (N, H) embeddings and (N, {len(attributes)}) chosen/rejected scores; got "
            f"{tuple(embeddings.shape)}, {tuple(chosen.shape)}, {tuple(rejected.shape)}"
        )
    torch.manual_seed(seed)
    gating = AttributeGating(embeddings.shape[1], attributes, hidden_size, temperature, verbosity)
    if verbosity is not None:
        reference = torch.cat([chosen, rejected]).numpy() if reference_scores is None else reference_scores
        lam = verbosity_debias_coefficients(reference, list(attributes).index(verbosity))
        gating.debias.copy_(torch.as_tensor(lam))
    optimizer = torch.optim.Adam(gating.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    gating.train()
    for _ in range(epochs):
        for batch in torch.randperm(n, generator=generator).split(batch_size):
            loss = bradley_terry_loss(
                gating(embeddings[batch], chosen[batch]), gating(embeddings[batch], rejected[batch])
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return gating.eval()


def fit_gating_from_pairs(
    scorer: AttributeScorer, prompts: Sequence[Any], chosen: Sequence[Any], rejected: Sequence[Any], **kwargs
) -> AttributeGating:
    """[`fit_attribute_gating`] on preference pairs scored by `scorer` (its raw or normalized attribute scores, as
    the scorer is set up; use the same scorer setup in [`AttributeRewardFunction`])."""
    return fit_attribute_gating(
        scorer.embed_prompts(prompts),
        scorer.score_attributes(prompts, chosen),
        scorer.score_attributes(prompts, rejected),
        scorer.attributes,
        **kwargs,
    )


class AttributeRewardFunction(ModelBackedReward):
    r"""
    A multi-attribute reward model as a TRL reward function: its attribute scores combined by fixed `weights`, or
    by a prompt-conditioned [`AttributeGating`] (ArmoRM).

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`): a folder (plain model or adapter, loaded lazily on the
            first call) or a loaded K-output sequence-classification model.
        tokenizer (tokenizer or `str`, *optional*): required with a loaded model.
        weights (`dict[str, float]` or `list[float]`, *optional*): e.g. `{"helpfulness": 1.0, "verbosity": -0.5}`
            (attributes not named weigh 0). Default: the weights stored by the trainer, else the mean.
        gating ([`AttributeGating`] or path, *optional*): use the gated reward instead of `weights`.
        name (`str`, *optional*): `__name__` (TRL's `rewards/{name}/mean`); defaults to the folder name.
        normalize (`bool`): z-score each attribute with the statistics stored by the trainer before combining.
        batch_size, max_tokens_per_batch, max_length, padding_side, device, model_args, base_model_name_or_path,
            dtype: as for [`RewardModelFunction`].

    Each call logs `{name}/{attribute}` (the attribute's mean score over the call) through TRL's `log_metric` and
    keeps them in `last_metrics`.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        weights=None,
        gating: AttributeGating | str | os.PathLike | None = None,
        name: str | None = None,
        normalize: bool = False,
        batch_size: int = 16,
        max_tokens_per_batch: int | None = None,
        max_length: int | None = None,
        padding_side: str = "right",
        device: str | torch.device | None = None,
        model_args=None,
        base_model_name_or_path: str | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        if weights is not None and gating is not None:
            raise ValueError("give weights or gating, not both: a gating layer computes the weights per prompt")
        load_options = {"model_args": model_args, "base_model_name_or_path": base_model_name_or_path, "dtype": dtype}
        self._init_source(model, tokenizer, device, load_options)
        self.__name__ = name or model_name(model if self._path is None else None, self._path, "attribute_reward")
        self.gating = AttributeGating.load(gating) if isinstance(gating, str | os.PathLike) else gating
        self.scorer_options = {
            "weights": weights,
            "normalize": normalize,
            "batch_size": batch_size,
            "max_tokens_per_batch": max_tokens_per_batch,
            "max_length": max_length,
            "padding_side": padding_side,
        }
        self.last_metrics: dict[str, float] = {}
        self._scorer = None
        if self._path is None:
            self._build_scorer()  # a loaded model: fail now on bad weights or a missing statistic

    def _load_from_path(self):
        source = self._tokenizer_source
        return load_reward_model(
            self._path,
            num_labels=saved_num_attributes(self._path),
            tokenizer_name_or_path=os.fspath(source) if isinstance(source, str | os.PathLike) else None,
            partition_under_zero3=False,
            require_trained_head=True,
            **self._load_options,
        )

    def _build_scorer(self) -> AttributeScorer:
        with self._lock:
            if self._scorer is None:
                model, tokenizer = self._load()
                scorer = AttributeScorer(model, tokenizer, device=self.device, **self.scorer_options)
                if self.gating is not None and self.gating.attributes != scorer.attributes:
                    raise ValueError(
                        f"{self.__name__}: the gating layer was fitted on attributes {self.gating.attributes}, the "
                        f"model has {scorer.attributes}"
                    )
                self._scorer = scorer
            return self._scorer

    @property
    def scorer(self) -> AttributeScorer:
        """The underlying [`AttributeScorer`] (loads the model if needed)."""
        return self._build_scorer()

    def _rewards(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float | None]:
        scorer = self._build_scorer()
        scores = scorer.score_attributes(list(prompts), list(completions))
        if self.gating is None:
            rewards = scorer.combine(scores)
        else:
            embeddings = torch.as_tensor(scorer.embed_prompts(list(prompts)))
            with torch.no_grad():
                rewards = self.gating(embeddings, torch.as_tensor(scores)).double().tolist()
        self.last_metrics = {
            f"{self.__name__}/{attribute}": float(np.mean(scores[:, k]))
            for k, attribute in enumerate(scorer.attributes)
        }
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for key, value in self.last_metrics.items():
                log_metric(key, value)
        return rewards

    def __repr__(self) -> str:
        source = self._path if self._path is not None else type(self._model).__name__
        return f"AttributeRewardFunction(name={self.__name__!r}, model={source!r}, gated={self.gating is not None})"
