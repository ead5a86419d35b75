"""Adapter + head → plain model: merges a LoRA reward model of any kind into a model transformers loads alone."""

from __future__ import annotations

from .modeling import (
    ADAPTER_CONFIG,
    is_adapter_path,
    load_process_reward_model,
    load_reward_model,
    read_process_format,
)
from .step_format import write_format_file


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
