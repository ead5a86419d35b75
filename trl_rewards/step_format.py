"""The one definition of a process reward model's step layout: styles, step tag, separator, good/bad tokens.

A PRM reads one label per step. The layout says where: in `"classifier"` style a token-classification head reads the
last token of the separator after each step; in `"lm"` style a causal LM reads a step tag appended to each step,
where the logits of `good_token` and `bad_token` give P(step correct). The trainer stores the layout it trained with
(in the model config as `process_reward_format`, and as `process_reward.json` beside a PEFT adapter, whose folder
holds no model config); the scorer, the reward function and `merge` read it back, so every probability is read at a
trained position. The token-level layout (ids of the separator and tag) is built from it in
`data.process_tokenization`. This module imports nothing from the package.
"""

from __future__ import annotations

import json
import os
from typing import Any

PRM_STYLES = ("classifier", "lm")
DEFAULT_STEP_SEPARATOR = "\n"
LM_STYLE_DEFAULTS = {"step_tag": "<|prm_label|>", "good_token": "+", "bad_token": "-"}
FORMAT_KEYS = ("model_style", "step_separator", "step_tag", "good_token", "bad_token")
FORMAT_ATTRIBUTE = "process_reward_format"  # in the model config: the step layout the model was trained with
FORMAT_FILE = "process_reward.json"  # the same beside a PEFT adapter
IGNORE_INDEX = -100  # the label of every token that carries no step label


def check_style(style: str) -> str:
    if style not in PRM_STYLES:
        raise ValueError(f"model_style must be one of {PRM_STYLES}, got {style!r}")
    return style


def resolve_process_format(model, **explicit) -> dict[str, Any]:
    """
    The step layout to score with: explicit values (not `None`), then the model config's saved layout, then the
    defaults (style inferred from the head: a causal LM is `"lm"`).
    """
    unknown = set(explicit) - set(FORMAT_KEYS)
    if unknown:
        raise TypeError(f"unknown step-layout keys {sorted(unknown)}")
    saved = dict(getattr(model.config, FORMAT_ATTRIBUTE, None) or {})
    given = {k: v for k, v in explicit.items() if v is not None}
    style = given.get("model_style") or saved.get("model_style")
    if style is None:
        style = "lm" if model.get_output_embeddings() is not None else "classifier"
    check_style(style)
    if style == "classifier":
        extra = sorted(k for k in LM_STYLE_DEFAULTS if k in given)
        if extra:
            raise ValueError(f"{extra} are used only with model_style='lm'")
        defaults = {"step_separator": DEFAULT_STEP_SEPARATOR, **dict.fromkeys(LM_STYLE_DEFAULTS)}
    else:
        defaults = {"step_separator": DEFAULT_STEP_SEPARATOR, **LM_STYLE_DEFAULTS}
    saved = {k: v for k, v in saved.items() if v is not None and saved.get("model_style") == style}
    return {**defaults, **saved, **given, "model_style": style}


def read_format_file(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The layout saved as `process_reward.json` in `folder`, or `None` when there is none."""
    path = os.path.join(folder, FORMAT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_format_file(folder: str | os.PathLike, process_format: dict[str, Any]) -> str:
    """Writes `process_format` as `process_reward.json` in `folder`; returns the path."""
    path = os.path.join(folder, FORMAT_FILE)
    with open(path, "w") as f:
        json.dump(process_format, f, indent=2)
    return path
