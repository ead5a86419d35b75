"""The wire formats [`RemoteRewardFunction`] speaks: request bodies and how rewards are read from the responses.

- `"trl-rewards"`: `POST {url}/v1/rewards` `{"prompts": [...], "completions": [...]}` → `{"rewards": [...],
  "members": {name: {"raw": [...], "normalized": [...]}}` (an ensemble), `"steps": [{"ends": [...], "scores":
  [...]} | null, ...]` (a PRM), `"too_long": {...}, "rows_independent": bool}` (see `scripts/serve_app.py`). Any
  prompt and completion, conversational included: the server's models apply their own chat templates.
- `"vllm-classify"`: vLLM's `POST {url}/classify` (`ClassificationRequest` → `ClassificationResponse`):
  `{"model": m, "input": [prompt + completion, ...], "use_activation": false}` → `{"data": [{"index": i, "probs":
  [r], "num_classes": 1}, ...]}`. `use_activation: false` asks for the raw logit of a 1-label reward model (vLLM's
  default applies a sigmoid to it).
- `"vllm-pooling"`: vLLM's `POST {url}/pooling` (`PoolingRequest` → `PoolingResponse`): the same body with `"task":
  "classify"` → `{"data": [{"index": i, "data": [r]}, ...]}` (a nested `[[r]]` is read too).
- `"openrlhf"`: `POST {url}/get_reward` `{"query": [prompt + completion, ...], "prompts": [...]}` → `{"rewards":
  [...]}`, what OpenRLHF's remote reward model client sends.

vLLM and OpenRLHF take text: a conversational row is refused there (use `"trl-rewards"`). The older names
`"trl_rewards"` and `"vllm"` are accepted for `"trl-rewards"` and `"vllm-classify"`.
"""

from __future__ import annotations

from typing import Any

from .base import is_conversational, message_text, prompt_text

ENDPOINTS = {
    "trl-rewards": "/v1/rewards",
    "vllm-classify": "/classify",
    "vllm-pooling": "/pooling",
    "openrlhf": "/get_reward",
}
ALIASES = {"trl_rewards": "trl-rewards", "vllm": "vllm-classify"}


class BadResponseError(RuntimeError):
    """A server answered 2xx with a body that is not what its protocol promises (not retried)."""


def resolve_protocol(protocol: str) -> str:
    protocol = ALIASES.get(protocol, protocol)
    if protocol not in ENDPOINTS:
        raise ValueError(f"protocol must be one of {list(ENDPOINTS)}, got {protocol!r}")
    return protocol


def request_body(protocol: str, model: str | None, prompts: list, completions: list) -> dict[str, Any]:
    """The JSON body of one request in `protocol`."""
    if protocol == "trl-rewards":
        return {"prompts": prompts, "completions": completions}
    if any(is_conversational(p) or is_conversational(c) for p, c in zip(prompts, completions, strict=True)):
        raise ValueError(f"protocol {protocol!r} takes text; use protocol='trl-rewards' for conversational rows")
    texts = [prompt_text(p) + message_text(c) for p, c in zip(prompts, completions, strict=True)]
    if protocol == "vllm-classify":
        return {"model": model, "input": texts, "use_activation": False}
    if protocol == "vllm-pooling":
        return {"model": model, "input": texts, "task": "classify", "use_activation": False}
    return {"query": texts, "prompts": [prompt_text(p) for p in prompts]}


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadResponseError(f"{where} is {value!r}, not a number")
    return float(value)


def _pooled(data: Any, where: str) -> float | None:
    """The reward in one `PoolingResponseData.data`: `[r]` (sequence classification) or `[[r]]`."""
    while isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, list):
        raise BadResponseError(f"{where} holds {len(data)} values; a reward model served by vLLM has 1 label")
    return _number(data, where)


def parse_rewards(protocol: str, body: Any, n: int) -> list[float | None]:
    """The `n` rewards of a response body, in input order."""
    try:
        if protocol in ("vllm-classify", "vllm-pooling"):
            rows = sorted(body["data"], key=lambda row: row["index"])
            if protocol == "vllm-classify":
                rewards = [_number(row["probs"][0], f"data[{i}].probs[0]") for i, row in enumerate(rows)]
            else:
                rewards = [_pooled(row["data"], f"data[{i}].data") for i, row in enumerate(rows)]
        else:
            rewards = [_number(r, f"rewards[{i}]") for i, r in enumerate(body["rewards"])]
    except (KeyError, TypeError, IndexError) as error:
        cause = f"{type(error).__name__}: {error}"
        raise BadResponseError(f"the response is not a {protocol!r} response ({cause})") from None
    if len(rewards) != n:
        raise BadResponseError(f"returned {len(rewards)} rewards for {n} completions")
    return rewards


def parse_steps(body: Any, n: int) -> list[list[tuple[int, float]] | None]:
    """`[(character end of the step in the completion text, P(step correct)), ...]` per completion (a PRM)."""
    steps = body.get("steps") if isinstance(body, dict) else None
    if steps is None:
        raise BadResponseError("returned no step scores: the server does not serve a process reward model")
    if len(steps) != n:
        raise BadResponseError(f"returned step scores for {len(steps)} of {n} completions")
    try:
        return [None if row is None else list(zip(map(int, row["ends"]), map(float, row["scores"]), strict=True))
                for row in steps]  # fmt: skip
    except (KeyError, TypeError, ValueError) as error:
        raise BadResponseError(f"step scores are malformed ({type(error).__name__}: {error})") from None
