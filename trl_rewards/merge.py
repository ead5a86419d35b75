"""Merging weights: a LoRA adapter + head into a plain model (any reward-model kind), and weight-averaged reward
models (WARM, Ramé et al. 2024: several reward models fine-tuned from one initialization, averaged parameter by
parameter, are more robust than each and cost one model at inference)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence

import torch

from .modeling import (
    ADAPTER_CONFIG,
    is_adapter_path,
    load_process_reward_model,
    load_reward_model,
    read_process_format,
)
from .step_format import write_format_file

logger = logging.getLogger(__name__)

# Members further apart than this (relative L2 distance to their average) were likely not fine-tuned from one
# initialization: averaging such models mixes unrelated solutions (WARM's linear mode connectivity does not hold).
FAR_APART = 0.5


def merge_adapter(adapter_path: str, output_dir: str, head: str = "sequence", num_labels: int = 1) -> str:
    """Merges a LoRA adapter (and its trained head) into its base model and saves a plain model + tokenizer that
    loads with transformers alone. A process reward model's adapter (it carries `process_reward.json`) is merged with
    its own head and keeps its step layout; `head` and `num_labels` then do not apply. Returns `output_dir`."""
    if not is_adapter_path(adapter_path):
        raise ValueError(f"{adapter_path!r} is not a PEFT adapter folder (no {ADAPTER_CONFIG})")
    process_format = read_process_format(adapter_path)
    if process_format is not None:  # a PRM adapter: its own head (token classifier or LM) and step layout
        model, tokenizer = load_process_reward_model(adapter_path)
    else:
        model, tokenizer = load_reward_model(adapter_path, head=head, num_labels=num_labels)
    merged = model.merge_and_unload()
    merged.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    if process_format is not None:
        write_format_file(output_dir, process_format)
    return output_dir


# What makes LoRA adapters averageable: one base, and one adapter structure (which layers, which rank, which modules
# trained in full). The scaling `lora_alpha / r` may differ: each adapter is merged with its own scaling first.
ADAPTER_STRUCTURE = ("peft_type", "base_model_name_or_path", "target_modules", "r", "modules_to_save")


def adapter_structure(path: str) -> dict | None:
    """The `ADAPTER_STRUCTURE` fields of a PEFT adapter folder's `adapter_config.json` (lists as sorted lists, a local
    base as its real path), or `None` for a plain model folder."""
    if not is_adapter_path(path):
        return None
    with open(os.path.join(path, ADAPTER_CONFIG)) as f:
        config = json.load(f)
    structure = {key: config.get(key) for key in ADAPTER_STRUCTURE}
    for key in ("target_modules", "modules_to_save"):
        if isinstance(structure[key], list | tuple):
            structure[key] = sorted(structure[key])
    base = structure["base_model_name_or_path"]
    if base and os.path.isdir(base):
        structure["base_model_name_or_path"] = os.path.realpath(base)
    return structure


def check_adapters_match(paths: Sequence[str]) -> None:
    """Refuses (`ValueError` naming both members and the field) a mix of adapters and plain models, and adapters that
    differ in base model or structure (`ADAPTER_STRUCTURE`); checked from the configs, before any weight loads."""
    structures = [adapter_structure(path) for path in paths]
    first = structures[0]
    for path, structure in zip(paths[1:], structures[1:], strict=True):
        if (structure is None) != (first is None):
            kinds = ["a plain model" if s is None else "a LoRA adapter" for s in (structure, first)]
            raise ValueError(
                f"{path!r} is {kinds[0]}, {paths[0]!r} {kinds[1]}: their common initialization cannot be checked; "
                "merge the adapters first (trl-rewards merge) if they share the plain models' base"
            )
        for key in ADAPTER_STRUCTURE if structure is not None else ():
            if structure[key] != first[key]:
                raise ValueError(
                    f"{path!r} has {key}={structure[key]!r}, {paths[0]!r} {key}={first[key]!r}: only LoRA adapters "
                    "on one base with one structure are averaged"
                )


def load_members(paths: Sequence[str]):
    """
    Loads reward models to average or interpolate, each LoRA adapter merged into its base (with its trained head), and
    checks that they can be mixed parameter by parameter. Returns `(model, tokenizer, states)`: the first member
    (a plain model, to load mixed weights into), its tokenizer and every member's `state_dict`. A `ValueError` names
    the member and the difference (see `check_adapters_match`; class, parameter names, shapes).
    """
    check_adapters_match(paths)
    states, first_model, tokenizer = [], None, None
    for path in paths:
        model, member_tokenizer = load_reward_model(path, require_trained_head=True)
        if is_adapter_path(path):
            model = model.merge_and_unload()  # W0 + (alpha / r) B A, and the head from modules_to_save
        state = model.state_dict()
        if first_model is None:  # its state is copied: mixed weights are loaded into this model's own tensors
            first_model, tokenizer = model, member_tokenizer
            state = {name: tensor.detach().clone() for name, tensor in state.items()}
        elif type(model) is not type(first_model):
            raise ValueError(f"{path!r} is a {type(model).__name__}, {paths[0]!r} a {type(first_model).__name__}")
        if states and state.keys() != states[0].keys():
            raise ValueError(
                f"{path!r} has other parameters than {paths[0]!r}: {sorted(state.keys() ^ states[0].keys())[:3]}"
            )
        for name, tensor in state.items() if states else ():
            if tensor.shape != states[0][name].shape:
                raise ValueError(
                    f"{path!r}: {name} has shape {tuple(tensor.shape)}, not {tuple(states[0][name].shape)}"
                )
        states.append(state)
    return first_model, tokenizer, states


def mix_states(states: Sequence[dict], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """`sum_i w_i θ_i / sum_i w_i` for every floating-point tensor (computed in float64, cast back to the tensor's
    dtype, so a weight vector `(1, 0)` returns the first member exactly); integer buffers must be equal."""
    total = sum(weights)
    mixed = {}
    for name, tensor in states[0].items():
        if tensor.is_floating_point():
            value = sum(w * state[name].double() for w, state in zip(weights, states, strict=True)) / total
            mixed[name] = value.to(tensor.dtype)
        elif any(not torch.equal(state[name], tensor) for state in states[1:]):
            raise ValueError(f"integer buffer {name} differs between the members; they cannot be averaged")
        else:
            mixed[name] = tensor
    return mixed


def check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    weights = [1.0] * n if weights is None else [float(w) for w in weights]
    if len(weights) != n or any(not (w >= 0 and math.isfinite(w)) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be {n} finite numbers >= 0, not all 0, got {weights}")
    return weights


def average_reward_models(
    paths: Sequence[str], output_dir: str, weights: Sequence[float] | None = None, far_apart: float = FAR_APART
) -> dict[str, float]:
    """
    Weight-averages reward models (WARM) and saves the result as a plain model + tokenizer in `output_dir`.

    Every floating-point parameter and buffer becomes `sum_i w_i θ_i / sum_i w_i`; integer buffers must be equal. The
    members must share one architecture (class, parameter names and shapes); anything else raises a `ValueError`
    naming the member and the parameter. A member further than `far_apart` (relative L2 distance
    `||θ_i - θ̄|| / ||θ̄||` over the weight matrices; two independent random initializations are ~1 apart,
    fine-tuned members of one far less) gets a warning: WARM assumes one initialization. The stored `reward_mean` /
    `reward_std` are dropped (they describe a member, not the average): measure them again before `normalize=True`.

    **LoRA adapters** (e.g. saved by our trainers with `use_peft`: LoRA factors plus the score head in
    `modules_to_save`) must all be adapters on one base with one structure: same `base_model_name_or_path`, PEFT
    type, target modules, rank `r` and `modules_to_save` (checked from `adapter_config.json` before anything loads;
    `lora_alpha` may differ). Each adapter is merged into its base, `W_i = W_0 + s_i B_i A_i` with `s_i = alpha_i / r`,
    its head replaced by its trained copy, and the merged weights are averaged: `W = W_0 + sum_i w_i s_i B_i A_i /
    sum_i w_i`, the base plus the weighted mean of the deltas. The output is a plain merged model, not an adapter:
    averaging the factors instead would give `(sum w_i B_i)(sum w_i A_i) / (sum w_i)^2`, which is not the mean of the
    products `B_i A_i` (the product is bilinear), and no rank-`r` adapter holds the mean of several rank-`r` deltas.

    Args:
        paths (`Sequence[str]`): two or more reward-model folders, or two or more LoRA adapter folders on one base.
        output_dir (`str`): where the averaged model is saved.
        weights (`Sequence[float]`, *optional*): non-negative weights, one per member (default: equal).
        far_apart (`float`, *optional*, defaults to `0.5`): the warning threshold above.

    Returns:
        `dict[str, float]`: each member's relative distance to the average, by path.
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two reward models, got {len(paths)}")
    weights = check_weights(weights, len(paths))
    first_model, tokenizer, states = load_members(paths)
    averaged = mix_states(states, weights)
    distances = {}
    # Weight matrices only: norm gains and biases start equal in every initialization and would dilute the distance.
    floats = [name for name, tensor in averaged.items() if tensor.is_floating_point() and tensor.dim() >= 2]
    norm = math.sqrt(sum(float(averaged[n].double().pow(2).sum()) for n in floats)) or 1.0
    for path, state in zip(paths, states, strict=True):
        gap = math.sqrt(sum(float((state[n].double() - averaged[n].double()).pow(2).sum()) for n in floats))
        distances[path] = gap / norm
        if distances[path] > far_apart:
            logger.warning(
                "%s is %.2f (relative L2) from the average: were the members fine-tuned from one initialization? "
                "WARM assumes so",
                path,
                distances[path],
            )
    first_model.load_state_dict(averaged)
    for key in ("reward_mean", "reward_std", "reward_stats_source"):
        if hasattr(first_model.config, key):
            delattr(first_model.config, key)
    first_model.config.averaged_from = {"paths": [os.fspath(p) for p in paths], "weights": weights}
    first_model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return distances
