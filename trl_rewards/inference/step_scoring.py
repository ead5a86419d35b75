"""Scoring solutions step by step with a trained process reward model (PRM), and aggregating step scores.

[`ProcessRewardScorer`] returns P(step correct) for every step of a solution (given as a list of steps, or as text
split on a separator) and a solution score aggregated from them. It encodes with the very function the trainer
tokenizes with ([`encode_steps`]), so every probability is read at a trained label position, and it reads the step
layout (style, separator, tag, good/bad tokens) that [`ProcessRewardTrainer`] stores in the model config (and, for a
LoRA adapter, in `process_reward.json` beside it).

Sequences are right-padded in length-sorted micro-batches: padding never moves a real token, so the probabilities do
not depend on the batch size or the order of the inputs. With `prefix_sharing=True` (decoder PRMs), solutions of the
same prompt (GRPO's groups) run their common prefix once and reuse its KV cache
([`~trl_rewards.inference.shared_prefix_scoring.shared_prefix_outputs`]); the probabilities are the same. Outcome
reward models are scored with [`~trl_rewards.inference.sequence_scoring.RewardScorer`]. This module imports no
trainer code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.encoding import pad_right
from ..data.process_tokenization import EncodedSteps, build_step_format, encode_steps, single_token_id
from ..data.stepwise import split_steps
from ..losses import step_tag_logits
from ..modeling import is_decoder_model, load_process_reward_model, prepare_tokenizer
from ..step_format import resolve_process_format
from .aggregation import aggregate_step_scores
from .batching import length_sorted_batches
from .sequence_scoring import place_model, prompt_key, resolve_max_length, warn_truncated
from .shared_prefix_scoring import check_shared_prefix_model, shared_prefix_outputs

# Config attributes of causal LMs whose forward rescales the logits after the LM head (Gemma 2, Cohere, Granite):
# those models are scored through their own forward.
_LOGIT_RESCALING = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class ProcessRewardScorer:
    """
    Per-step probabilities and aggregated solution scores from a process reward model.

    Args:
        model: a PRM: a token classifier (2 labels, 1 = good) or a causal LM with a step tag (plain or PEFT).
        tokenizer: its tokenizer (with the step tag, in `"lm"` style).
        model_style, step_separator, step_tag, good_token, bad_token (`str`, *optional*): the step layout; by
            default the one saved in the model config by the trainer (see [`resolve_process_format`]).
        text_separator (`str`, *optional*, defaults to `"\\n"`): what splits a solution given as one string.
        batch_size (`int`, *optional*, defaults to `16`): most solutions per forward pass.
        max_tokens_per_batch (`int`, *optional*): most padded tokens per forward pass.
        max_length (`int`, *optional*): longer sequences lose prompt tokens from the left as in training
            (`self.n_truncated` counts them, and each call that cuts logs one warning with its count); a solution
            whose steps alone do not fit raises a `ValueError`, since every step needs its probability. Defaults to
            the model's position limit (no truncation only for a model without one).
        device: where to run; the model is moved there. Defaults to the model's device.
        prefix_sharing (`bool`, *optional*, defaults to `False`): score the solutions of one prompt (equal prompts,
            e.g. GRPO's groups) with their common prefix run once and its KV cache reused by each solution (same
            probabilities; decoders with `"sdpa"`/`"eager"` attention only, an encoder is an error).
    """

    def __init__(
        self,
        model,
        tokenizer,
        model_style: str | None = None,
        step_separator: str | None = None,
        step_tag: str | None = None,
        good_token: str | None = None,
        bad_token: str | None = None,
        text_separator: str = "\n",
        batch_size: int = 16,
        max_tokens_per_batch: int | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        prefix_sharing: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not text_separator:
            raise ValueError("text_separator must not be empty")
        self.format = resolve_process_format(
            model,
            model_style=model_style,
            step_separator=step_separator,
            step_tag=step_tag,
            good_token=good_token,
            bad_token=bad_token,
        )
        self.device, self.model = place_model(model, device)
        self.tokenizer = prepare_tokenizer(tokenizer, model)
        self.step_format = build_step_format(
            tokenizer, self.format["model_style"], self.format["step_separator"], self.format["step_tag"]
        )
        if self.format["model_style"] == "lm":
            self.good_token_id = single_token_id(tokenizer, self.format["good_token"], "good_token")
            self.bad_token_id = single_token_id(tokenizer, self.format["bad_token"], "bad_token")
        self.decoder = is_decoder_model(model)
        if prefix_sharing:
            check_shared_prefix_model(model)
        self.prefix_sharing = prefix_sharing
        self.text_separator = text_separator
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_length = resolve_max_length(max_length, model, tokenizer)
        self.n_truncated = 0

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, model_args=None, **kwargs) -> ProcessRewardScorer:
        """Loads a plain model or an adapter folder with [`load_process_reward_model`] and wraps it."""
        model, tokenizer = load_process_reward_model(
            model_name_or_path,
            model_style=kwargs.get("model_style"),
            model_args=model_args,
            partition_under_zero3=False,
        )
        return cls(model, tokenizer, **kwargs)

    def split(self, solution: str | Sequence[str]) -> list[str]:
        """A solution's steps: a list is kept as is, a string is split on `text_separator` (empty parts dropped)."""
        steps = split_steps(solution, self.text_separator) if isinstance(solution, str) else list(solution)
        if not steps or not all(isinstance(s, str) and s.strip() for s in steps):
            raise ValueError(f"a solution needs at least one non-empty step, got {solution!r:.80}")
        return steps

    def encode(self, prompt: str, solution: str | Sequence[str]) -> EncodedSteps:
        """Token ids and label positions of one solution, exactly as the trainer builds them."""
        encoded = encode_steps(self.tokenizer, self.step_format, prompt, self.split(solution))
        fitted = encoded.fit(self.max_length)
        if fitted is None or fitted.n_dropped_steps:
            # Training may drop leading steps with their labels; a scorer owes a probability for every step.
            needed = len(encoded.input_ids) - (encoded.step_starts[0] - encoded.context_start)
            raise ValueError(
                f"scoring every step needs at least {needed} tokens (all steps whole, the prompt cut away), more "
                f"than max_length={self.max_length}"
            )
        self.n_truncated += fitted is not encoded
        return fitted

    def _step_logits(self, inputs: dict) -> torch.Tensor:
        """`[z_bad, z_good]` at every token, `(batch, T, 2)`, from the model run on `inputs`."""
        head = self._two_row_head() if self.format["model_style"] == "lm" else None
        if head is not None:
            # Only the good and bad rows of the LM head: never the (batch, seq, vocab) logits.
            weight, bias = head
            hidden = self.model.get_decoder()(**inputs).last_hidden_state
            return hidden @ weight.T + (bias if bias is not None else 0)
        logits = self.model(**inputs).logits
        if self.format["model_style"] == "lm":
            logits = step_tag_logits(logits, self.good_token_id, self.bad_token_id)
        return logits

    def _forward(self, rows: list[EncodedSteps]) -> list[list[float]]:
        inputs = {
            "input_ids": pad_right([row.input_ids for row in rows], self.tokenizer.pad_token_id).to(self.device),
            "attention_mask": pad_right([[1] * len(row.input_ids) for row in rows], 0).to(self.device),
            **({"use_cache": False} if self.decoder else {}),
        }
        batch = torch.tensor([i for i, row in enumerate(rows) for _ in row.label_positions], device=self.device)
        positions = torch.tensor([p for row in rows for p in row.label_positions], device=self.device)
        logits = self._step_logits(inputs)[batch, positions]
        probs = torch.sigmoid((logits[..., 1] - logits[..., 0]).double()).cpu().tolist()
        out, start = [], 0
        for row in rows:
            out.append(probs[start : start + len(row.label_positions)])
            start += len(row.label_positions)
        return out

    def _shared_prefix_forward(self, prompts: Sequence[str], rows: list[EncodedSteps]) -> list[list[float]]:
        """The step probabilities of `rows`, the rows of one prompt sharing their common prefix."""
        logits = shared_prefix_outputs(
            self.model,
            self._step_logits,
            [row.input_ids for row in rows],
            [prompt_key(prompt, i) for i, prompt in enumerate(prompts)],
            [row.label_positions for row in rows],
            self.tokenizer.pad_token_id,
            self.device,
            self.batch_size,
            self.max_tokens_per_batch,
        )
        return [torch.sigmoid(z[:, 1] - z[:, 0]).tolist() for z in logits]

    def _two_row_head(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """`(weight, bias)` rows `[bad, good]` of a plain linear LM head over a decoder body, or `None` when the
        model's logits need its own forward (an adapted or quantized head, logits rescaled after the head)."""
        config = getattr(self.model, "config", None)
        if any(getattr(config, name, None) is not None for name in _LOGIT_RESCALING):
            return None
        get_decoder = getattr(self.model, "get_decoder", None)
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if get_decoder is None or get_decoder() is None or type(head) is not torch.nn.Linear:
            return None
        if not head.weight.is_floating_point():
            return None
        rows = [self.bad_token_id, self.good_token_id]
        return head.weight[rows], None if head.bias is None else head.bias[rows]

    @torch.inference_mode()
    def step_probabilities(
        self, prompts: Sequence[str], solutions: Sequence[str | Sequence[str]]
    ) -> list[list[float]]:
        """
        P(step correct) for every step of every solution.

        Args:
            prompts (`Sequence[str]`): the problems.
            solutions (`Sequence[str | Sequence[str]]`): each a list of steps or a text split on `text_separator`.

        Returns:
            `list[list[float]]`: one list per solution, one probability per step, in input order.
        """
        if len(prompts) != len(solutions):
            raise ValueError(f"got {len(prompts)} prompts but {len(solutions)} solutions")
        rows, before = [], self.n_truncated
        for i, (prompt, solution) in enumerate(zip(prompts, solutions, strict=True)):
            try:
                rows.append(self.encode(prompt, solution))
            except ValueError as err:
                raise ValueError(f"solution {i}: {err}") from err
        warn_truncated(self.n_truncated - before, len(rows), "solutions", self.max_length, "prompt tokens cut")
        if self.prefix_sharing:
            return self._shared_prefix_forward(prompts, rows)
        out: list[list[float]] = [[] for _ in rows]
        for batch in length_sorted_batches(
            [len(r.input_ids) for r in rows], self.batch_size, self.max_tokens_per_batch
        ):
            for i, probs in zip(batch, self._forward([rows[i] for i in batch]), strict=True):
                out[i] = probs
        return out

    def score(
        self,
        prompts: Sequence[str],
        solutions: Sequence[str | Sequence[str]],
        aggregation: str = "product",
        temperature: float | None = None,
    ) -> list[float]:
        """One score per solution: its step probabilities aggregated by [`aggregate_step_scores`]."""
        aggregate_step_scores([1.0], aggregation, temperature)  # rejects a bad method/temperature before any forward
        return [
            aggregate_step_scores(p, aggregation, temperature) for p in self.step_probabilities(prompts, solutions)
        ]
