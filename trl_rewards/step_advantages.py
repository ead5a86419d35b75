r"""Dense (per-token) GRPO advantages from step rewards, as pure functions: DeepSeekMath's process supervision.

DeepSeekMath (Shao et al. 2024, section 4.1.3, "process supervision with GRPO") gives every step of every completion
of a group a reward, normalizes those rewards over *all the steps of the group*, and gives each token the sum of the
normalized rewards of the steps that end at or after it:

$$\tilde r_i^{(j)} = \frac{r_i^{(j)} - \mathrm{mean}(R)}{\mathrm{std}(R)}, \qquad
A_{i,t} = \sum_{j:\ \mathrm{end}(j) \ge t} \tilde r_i^{(j)}$$

where `R` is the set of step rewards of the `G` completions of one prompt. A token after a completion's last step
end gets no process advantage (`0`): no step, hence no step reward, covers it; but a step ending with the text ends
on the completion's last token, so the eos token (which the decoded text drops) shares the last step's credit.

**Contract of a step reward function.** It is called like a TRL reward function,
`fn(prompts, completions, completion_ids=None, **kwargs)`, and returns, per completion, a list of
`(char_end, reward)` pairs or `None`: `char_end` is the (exclusive) character offset in the completion's text where
the step ends, strictly increasing within a completion, `1 <= char_end <= len(text)`; `None` (or `[]`) means "no
step reward for this completion" (e.g. no step boundary in it). [`check_step_rewards`] enforces it. Offsets are in
characters of the text, never in tokens, so a PRM with its own tokenizer and a rule-based checker speak the same
language; [`token_char_ends`] and [`step_end_tokens`] map them onto the *policy's* token positions.

**Combination with outcome rewards** ([`combine_advantages`]): `A_{i,t} = w_o · A_i^{outcome} + w_p · A_{i,t}`, the
outcome advantage (TRL's own, one per completion) broadcast over the tokens, plus the process advantage.

Normalization mirrors TRL's `scale_rewards`: `"group"` divides by the group's step std (DeepSeekMath), `"batch"` by the
std of every step of the batch, `"none"` only centers; the std is Bessel-corrected and `eps = 1e-4` is added as
TRL does, so a group with one step per completion (ending at its last token) gets exactly TRL's outcome advantages.
This module imports nothing from the package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

SCALE_REWARDS = ("group", "batch", "none")
EPS = 1e-4  # TRL's: advantages / (std + 1e-4)

StepRewards = list[tuple[int, float]] | None


def check_step_rewards(output: Any, texts: Sequence[str], name: str) -> list[list[tuple[int, float]]]:
    """
    Checks a step reward function's output against the contract and returns it as lists (`None` becomes `[]`).

    Args:
        output: what the function returned.
        texts (`Sequence[str]`): the completions' texts, to check the offsets against.
        name (`str`): the function's name, for the error messages.

    Returns:
        `list[list[tuple[int, float]]]`: per completion, the `(char_end, reward)` pairs.
    """
    if isinstance(output, str | bytes) or not isinstance(output, Sequence):
        raise TypeError(f"step reward function {name!r} must return a list, got {type(output).__name__}")
    if len(output) != len(texts):
        raise ValueError(f"step reward function {name!r} returned {len(output)} rows for {len(texts)} completions")
    checked = []
    for row, (steps, text) in enumerate(zip(output, texts, strict=True)):
        if steps is None:
            checked.append([])
            continue
        if isinstance(steps, str | bytes) or not isinstance(steps, Sequence):
            raise TypeError(
                f"step reward function {name!r}, completion {row}: expected a list of (char_end, reward) pairs or "
                f"None, got {type(steps).__name__}"
            )
        pairs, previous = [], 0
        for k, pair in enumerate(steps):
            if not isinstance(pair, Sequence) or isinstance(pair, str | bytes) or len(pair) != 2:
                raise TypeError(f"step reward function {name!r}, completion {row}, step {k}: {pair!r} is not a pair")
            end, reward = pair
            if isinstance(end, bool) or not isinstance(end, int):
                raise TypeError(
                    f"step reward function {name!r}, completion {row}, step {k}: char_end {end!r} is not an int"
                )
            if not previous < end <= len(text):
                raise ValueError(
                    f"step reward function {name!r}, completion {row}, step {k}: char_end {end} must be > {previous} "
                    f"(offsets strictly increase from 1) and <= {len(text)} (the completion's length)"
                )
            if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
                raise ValueError(
                    f"step reward function {name!r}, completion {row}, step {k}: reward {reward!r} is not a finite "
                    "number"
                )
            pairs.append((end, float(reward)))
            previous = end
        checked.append(pairs)
    return checked


def token_char_ends(tokenizer, ids: Sequence[int]) -> list[int]:
    """
    For each token of `ids`, the character offset where it ends in `tokenizer.decode(ids, skip_special_tokens=True)`
    (the text TRL gives reward functions). A special token (dropped by that decoding) ends where the previous token
    ends.

    The tokenizer's offsets (one encoding of the decoded text) are used when re-encoding gives back exactly the
    generated ids; otherwise (a non-canonical tokenization sampled by the policy) each prefix is decoded, which is
    exact for any tokenizer. The result never decreases and ends at the text's length.
    """
    ids = [int(i) for i in ids]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    special = set(tokenizer.all_special_ids)
    kept = [j for j, token in enumerate(ids) if token not in special]
    ends = None
    if getattr(tokenizer, "is_fast", False) and kept:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if encoding["input_ids"] == [ids[j] for j in kept]:
            ends = [0] * len(ids)
            for j, (_, end) in zip(kept, encoding["offset_mapping"], strict=True):
                ends[j] = end
    if ends is None:
        ends = [len(tokenizer.decode(ids[: j + 1], skip_special_tokens=True)) for j in range(len(ids))]
    running = 0
    for j, end in enumerate(ends):  # special tokens, and trimmed offsets of whitespace tokens, never go backwards
        running = ends[j] = max(running, min(end, len(text)))
    if ends:
        last = max(kept) if kept else len(ids) - 1
        for j in range(last, len(ids)):  # trailing whitespace the offsets trim still belongs to the last real token
            ends[j] = len(text)
    return ends


def step_end_tokens(char_ends: Sequence[int], token_ends: Sequence[int]) -> list[int]:
    """
    The policy token where each step ends: the first token whose character end reaches the step's `char_end` (the
    token holding the step's last character, even when that token runs past the step). A step ending with the text
    ends at the last token, so the tokens the decoding drops after it (the eos token) share its credit: ending the
    completion is part of its last step.

    Args:
        char_ends (`Sequence[int]`): step ends in characters, increasing (see [`check_step_rewards`]).
        token_ends (`Sequence[int]`): the tokens' character ends, from [`token_char_ends`].

    Returns:
        `list[int]`: one token index per step (two steps may share a token when one token spans a boundary).
    """
    out, t = [], 0
    for end in char_ends:
        while t < len(token_ends) and token_ends[t] < end:
            t += 1
        if t == len(token_ends):
            total = token_ends[-1] if token_ends else 0
            raise ValueError(f"a step ends at character {end}, past the completion's {total} decoded characters")
        out.append(len(token_ends) - 1 if end == token_ends[-1] else t)
    return out


def normalize_step_rewards(
    step_rewards: Sequence[Sequence[float]], num_generations: int, scale_rewards: str = "group", eps: float = EPS
) -> list[list[float]]:
    r"""
    DeepSeekMath's normalization: each step reward minus the mean of every step reward of its group (the
    `num_generations` consecutive completions of one prompt), divided by their std (`scale_rewards="group"`), by the
    std of every step of the batch (`"batch"`) or not at all (`"none"`).

    Args:
        step_rewards (`Sequence[Sequence[float]]`): per completion, its step rewards (possibly none), `B` rows,
            `B` a multiple of `num_generations`.
        num_generations (`int`): completions per group.
        scale_rewards (`str`, *optional*, defaults to `"group"`): see above (TRL's option of the same name).
        eps (`float`, *optional*, defaults to `1e-4`): added to the std, as TRL does.

    Returns:
        `list[list[float]]`: the normalized rewards, same shape. A group without any step has nothing to normalize; one
        with a single step gets `0` for it (its std is undefined, as with TRL's advantages).

    Example: a group of two completions with step rewards `[1, 0]` and `[1]`: `R = {1, 0, 1}`, mean `2/3`, std
    (Bessel) `sqrt(((1/3)² + (2/3)² + (1/3)²) / 2) = sqrt(1/3)`, so `[[0.577, -1.155], [0.577]]` (to `eps`).
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    if num_generations < 1 or len(step_rewards) % num_generations:
        raise ValueError(f"{len(step_rewards)} completions do not form groups of num_generations={num_generations}")
    flat = torch.tensor([r for row in step_rewards for r in row], dtype=torch.float64)
    counts = torch.tensor([len(row) for row in step_rewards])
    group_of_step = torch.repeat_interleave(torch.arange(len(step_rewards)) // num_generations, counts)
    n_groups = len(step_rewards) // num_generations
    size = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group_of_step, torch.ones_like(flat))
    mean = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group_of_step, flat) / size.clamp(min=1)
    centered = flat - mean[group_of_step]
    if scale_rewards == "group":
        squares = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group_of_step, centered**2)
        std = (squares / (size - 1).clamp(min=1)).sqrt()
        std = torch.where(size > 1, std, torch.full_like(std, math.nan))[group_of_step]
    elif scale_rewards == "batch":
        std = flat.std() if flat.numel() > 1 else torch.tensor(math.nan, dtype=torch.float64)
    if scale_rewards != "none":
        centered = torch.nan_to_num(centered / (std + eps), nan=0.0)
    values = centered.tolist()
    out, start = [], 0
    for n in counts.tolist():
        out.append(values[start : start + n])
        start += n
    return out


def token_advantages(
    step_tokens: Sequence[Sequence[int]], normalized: Sequence[Sequence[float]], length: int
) -> torch.Tensor:
    r"""
    `A[i, t] = Σ_{j: step_tokens[i][j] >= t} normalized[i][j]`: every token gets the normalized rewards of the steps
    that end at or after it (the step's own end token included).

    Args:
        step_tokens (`Sequence[Sequence[int]]`): per completion, the token index where each step ends.
        normalized (`Sequence[Sequence[float]]`): the matching normalized rewards.
        length (`int`): `T`, the padded completion length.

    Returns:
        `torch.Tensor` of shape `(B, T)`, float32.

    Example: steps ending at tokens `[1, 3]` with rewards `[0.5, -1]` and `T = 5` give `[-0.5, -0.5, -1, -1, 0]`.
    """
    out = torch.zeros(len(step_tokens), length + 1, dtype=torch.float64)
    for i, (tokens, rewards) in enumerate(zip(step_tokens, normalized, strict=True)):
        if len(tokens) != len(rewards):
            raise ValueError(f"completion {i}: {len(tokens)} step ends but {len(rewards)} rewards")
        if tokens and not 0 <= max(tokens) < length:
            raise ValueError(f"completion {i}: a step ends at token {max(tokens)}, outside [0, {length})")
        out[i].index_add_(0, torch.tensor(list(tokens), dtype=torch.long), torch.tensor(list(rewards)).double())
    # a reversed cumulative sum: what ends at or after t
    return out.flip(1).cumsum(1).flip(1)[:, :length].float()


def combine_advantages(
    outcome: torch.Tensor, process: torch.Tensor, outcome_weight: float, process_weight: float
) -> torch.Tensor:
    """
    `outcome_weight · outcome[:, None] + process_weight · process`: the outcome advantage (one per completion,
    shape `(B,)`) broadcast over the tokens, plus the process advantage `(B, T)`. Returns `(B, T)`.
    """
    if outcome.dim() != 1 or process.dim() != 2 or outcome.shape[0] != process.shape[0]:
        raise ValueError(
            f"expected outcome (B,) and process (B, T), got {tuple(outcome.shape)} and {tuple(process.shape)}"
        )
    return outcome_weight * outcome.unsqueeze(1).to(process.dtype) + process_weight * process


def step_statistics(step_rewards: Sequence[Sequence[float]], bad_threshold: float) -> dict[str, float]:
    """
    Step-level metrics of a batch: `mean_step_reward` (over every step), `steps_per_completion`, `no_steps_frac`
    (completions without any step), `first_bad_found` (share of the completions with steps where some step reward is
    below `bad_threshold`, i.e. a first bad step is located) and `first_bad_position` (mean index of that step,
    relative to the completion's step count, NaN when none is found).
    """
    n = len(step_rewards)
    flat = [r for row in step_rewards for r in row]
    with_steps = [row for row in step_rewards if row]
    firsts = [next((k for k, r in enumerate(row) if r < bad_threshold), None) for row in with_steps]
    found = [(k, len(row)) for k, row in zip(firsts, with_steps, strict=True) if k is not None]
    return {
        "mean_step_reward": sum(flat) / len(flat) if flat else math.nan,
        "steps_per_completion": len(flat) / n if n else math.nan,
        "no_steps_frac": (n - len(with_steps)) / n if n else math.nan,
        "first_bad_found": len(found) / len(with_steps) if with_steps else math.nan,
        "first_bad_position": sum(k / m for k, m in found) / len(found) if found else math.nan,
    }
