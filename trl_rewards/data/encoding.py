"""The one text → token ids encoding shared by training, scoring and reward functions, and right-padding.

Every trainer tokenizes with these functions and every scorer encodes with the same ones, so a reward is always read
from the token sequence the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def leading_special_count(ids: Sequence[int], special_ids: set[int]) -> int:
    """Number of special tokens (`<s>`, `[CLS]`) at the start of `ids`."""
    n = 0
    while n < len(ids) and ids[n] in special_ids:
        n += 1
    return n


def encode_text(tokenizer, text: str) -> list[int]:
    """
    Token ids of a plain text as a reward model reads it: the tokenizer's special tokens, and a decoder's sequence
    closed with eos (its tokenizer adds only `<s>`), so the reward is read at a fixed token. An encoder tokenizer
    already ends with `[SEP]` (and usually has no eos).
    """
    ids = tokenizer(text)["input_ids"]
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] not in tokenizer.all_special_ids):
        ids = ids + [tokenizer.eos_token_id]
    return ids


def encode_chat(tokenizer, messages: list[dict], tools: list | None = None, **template_kwargs) -> list[int]:
    """
    Token ids of a conversation through the tokenizer's chat template (which places the special tokens). `tools`
    (tool schemas) and `template_kwargs` (e.g. `enable_thinking=False`) are passed to the template, as TRL does.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, tools=tools, **template_kwargs)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_prompt_completion(tokenizer, prompt, completion) -> list[int]:
    """
    Token ids of one `(prompt, completion)`: a conversational prompt (list of messages) takes the completion as the
    assistant's message (or messages); a text prompt (or `None`) is concatenated with the completion.
    """
    if isinstance(prompt, list):
        content = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        return encode_chat(tokenizer, prompt + content)
    return encode_text(tokenizer, (prompt or "") + completion)


def pad_right(sequences: Sequence[Sequence[int]], value: int, pad_to_multiple_of: int | None = None) -> torch.Tensor:
    """Right-pads integer sequences into a `(batch, width)` long tensor (width rounded up to a multiple)."""
    width = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out
