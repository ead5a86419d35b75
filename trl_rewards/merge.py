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


def _load_for_average(path: str):
    model, tokenizer = load_reward_model(path, require_trained_head=True)
    base = None
    if is_adapter_path(path):
        with open(os.path.join(path, ADAPTER_CONFIG)) as f:
            base = json.load(f).get("base_model_name_or_path")
        model = model.merge_and_unload()
    return model, tokenizer, base


def average_reward_models(
    paths: Sequence[str], output_dir: str, weights: Sequence[float] | None = None, far_apart: float = FAR_APART
) -> dict[str, float]:
    """
    Weight-averages reward models (WARM) and saves the result as a plain model + tokenizer in `output_dir`.

    Every floating-point parameter and buffer becomes `sum_i w_i θ_i / sum_i w_i`; integer buffers must be equal. The
    members must share one architecture (class, parameter names and shapes) and, for LoRA adapters (each merged into
    its base first), one base model; anything else raises a `ValueError` naming the member and the parameter. A
    member further than `far_apart` (relative L2 distance `||θ_i - θ̄|| / ||θ̄||` over the weight matrices; two
    independent random initializations are ~1 apart, fine-tuned members of one far less) gets a warning:
    WARM assumes one initialization. The stored `reward_mean` / `reward_std` are dropped (they describe a member, not
    the average): measure them again before `normalize=True`.

    Args:
        paths (`Sequence[str]`): two or more reward-model folders or LoRA adapter folders.
        output_dir (`str`): where the averaged model is saved.
        weights (`Sequence[float]`, *optional*): non-negative weights, one per member (default: equal).
        far_apart (`float`, *optional*, defaults to `0.5`): the warning threshold above.

    Returns:
        `dict[str, float]`: each member's relative distance to the average, by path.
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two reward models, got {len(paths)}")
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths) or any(not (w >= 0 and math.isfinite(w)) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be {len(paths)} finite numbers >= 0, not all 0, got {weights}")
    loaded = [_load_for_average(path) for path in paths]
    first_model, tokenizer, first_base = loaded[0]
    reference = first_model.state_dict()
    states = [reference]
    for path, (model, _, base) in zip(paths[1:], loaded[1:], strict=True):
        if type(model) is not type(first_model):
            raise ValueError(f"{path!r} is a {type(model).__name__}, {paths[0]!r} a {type(first_model).__name__}")
        if base != first_base:
            raise ValueError(f"{path!r} is an adapter on {base!r}, {paths[0]!r} on {first_base!r}: one base needed")
        state = model.state_dict()
        if state.keys() != reference.keys():
            raise ValueError(
                f"{path!r} has other parameters than {paths[0]!r}: {sorted(state.keys() ^ reference.keys())[:3]}"
            )
        for name, tensor in state.items():
            if tensor.shape != reference[name].shape:
                raise ValueError(
                    f"{path!r}: {name} has shape {tuple(tensor.shape)}, not {tuple(reference[name].shape)}"
                )
        states.append(state)
    total = sum(weights)
    averaged = {}
    for name, tensor in reference.items():
        if tensor.is_floating_point():
            mixed = sum(w * state[name].double() for w, state in zip(weights, states, strict=True)) / total
            averaged[name] = mixed.to(tensor.dtype)
        elif any(not torch.equal(state[name], tensor) for state in states[1:]):
            raise ValueError(f"integer buffer {name} differs between the members; they cannot be averaged")
        else:
            averaged[name] = tensor
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
