"""Implicit rewards of a DPO-trained policy: `r(x, y) = β · [log π(y|x) − log π_ref(y|x)]` over the completion tokens.

A DPO model is a reward model in disguise (Rafailov et al. 2023): its log-ratio to the reference it was trained
against ranks completions. RewardBench scores DPO models this way, with the log-ratio *summed* over the completion's
tokens (its reference-free variants also offer a length average); both are available here (`length_normalize`).

Tokens: the prompt (a text, or chat messages rendered with the chat template and a generation prompt) followed by the
completion's tokens and eos, tokenized apart as TRL's `DPOTrainer` does, so the completion's tokens are exactly the
ones its loss saw. The reference is a second model, or the same model with its LoRA adapter switched off
(`disable_adapter()`: one model in memory). Rows are right-padded in length-sorted micro-batches; padding never
moves a real token, so rewards do not depend on the batching.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import is_peft_model

from ..data.encoding import pad_right
from .batching import length_sorted_batches


def encode_prompt_and_completion(tokenizer, prompt: Any, completion: Any) -> tuple[list[int], int]:
    """`(input_ids, prompt_length)`: the prompt's ids, then the completion's ids and eos."""
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        prompt_ids = list(prompt_ids["input_ids"])
    else:
        prompt_ids = tokenizer(prompt or "")["input_ids"]
    text = completion if isinstance(completion, str) else "".join(m.get("content") or "" for m in completion)
    completion_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    if not completion_ids:
        raise ValueError("the completion has no tokens")
    return prompt_ids + completion_ids, len(prompt_ids)


class ImplicitRewardScorer:
    """
    Implicit (DPO) rewards of completions.

    Args:
        model: the DPO-trained causal LM (plain, or PEFT with the trained adapter).
        tokenizer: its tokenizer.
        ref_model (*optional*): the reference causal LM; `None` needs a PEFT `model`, whose adapter is switched off
            to get the reference.
        beta (`float`, *optional*, defaults to `0.1`): DPO's β.
        length_normalize (`bool`, *optional*, defaults to `False`): divide the log-ratio by the completion's token
            count (RewardBench's default for DPO models is the sum, `False`).
        batch_size (`int`, *optional*, defaults to `8`), max_tokens_per_batch (`int`, *optional*): micro-batching.
    """

    def __init__(
        self,
        model,
        tokenizer,
        ref_model=None,
        beta: float = 0.1,
        length_normalize: bool = False,
        batch_size: int = 8,
        max_tokens_per_batch: int | None = None,
    ):
        if ref_model is None and not is_peft_model(model):
            raise ValueError("ref_model is required unless model is a PEFT model (its base is then the reference)")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.model, self.ref_model, self.tokenizer = model.eval(), ref_model, tokenizer
        if ref_model is not None:
            ref_model.eval()
        self.beta, self.length_normalize = beta, length_normalize
        self.batch_size, self.max_tokens_per_batch = batch_size, max_tokens_per_batch
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = 0 if pad is None else pad

    def _log_probs(self, model, rows: list[tuple[list[int], int]]) -> torch.Tensor:
        """Summed log-probability of each row's completion tokens, `(len(rows),)` float64."""
        ids = pad_right([r[0] for r in rows], self.pad_token_id).to(self.device)
        mask = pad_right([[1] * len(r[0]) for r in rows], 0).to(self.device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].double()
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        positions = torch.arange(ids.shape[1] - 1, device=self.device)[None, :]
        starts = torch.tensor([r[1] for r in rows], device=self.device)[:, None]
        completion = (positions >= starts - 1) & mask[:, 1:].bool()  # token t+1 is predicted at position t
        return (token_logps * completion).sum(-1).cpu()

    @torch.inference_mode()
    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """`β · (log π − log π_ref)` per `(prompt, completion)` (divided by the completion's length if asked)."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        rows = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            try:
                rows.append(encode_prompt_and_completion(self.tokenizer, prompt, completion))
            except ValueError as error:
                raise ValueError(f"row {i}: {error}") from error
        out = torch.empty(len(rows), dtype=torch.float64)
        for batch in length_sorted_batches([len(r[0]) for r in rows], self.batch_size, self.max_tokens_per_batch):
            chosen = [rows[i] for i in batch]
            policy = self._log_probs(self.model, chosen)
            if self.ref_model is not None:
                reference = self._log_probs(self.ref_model, chosen)
            else:
                with self.model.disable_adapter() if is_peft_model(self.model) else contextlib.nullcontext():
                    reference = self._log_probs(self.model, chosen)
            ratio = policy - reference
            if self.length_normalize:
                ratio = ratio / torch.tensor([len(r[0]) - r[1] for r in chosen], dtype=torch.float64)
            out[batch] = self.beta * ratio
        return out.tolist()
