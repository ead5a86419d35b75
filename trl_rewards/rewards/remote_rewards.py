"""Rewards computed by a server, in TRL's reward-function contract: our `trl-rewards serve`, vLLM's pooling server
(`/classify`) or an OpenRLHF-style `/get_reward` server.

A batch is split into contiguous shards, one per URL, sent concurrently; each request is retried with exponential
backoff, and a shard that still fails raises an error naming its URL (TRL then stops; nothing is made up). The
function holds only URLs and options, so it pickles for TRL's async rollout workers. Protocols:

- `"trl_rewards"`: `POST {url}/score` `{"prompts": [...], "completions": [...]}` → `{"rewards": [...]}` (any prompt
  and completion, conversational included: the server's reward models apply their own chat templates);
- `"vllm"`: `POST {url}/classify` `{"model": model, "input": [prompt + completion, ...]}` → `{"data": [{"probs":
  [p, ...]}, ...]}`; the reward is `probs[0]` (a 1-label reward model served with `--task classify`);
- `"openrlhf"`: `POST {url}/get_reward` `{"query": [prompt + completion, ...], "prompts": [...]}` → `{"rewards":
  [...]}`, what OpenRLHF's remote reward model client sends.

vLLM and OpenRLHF take text: a conversational row is refused there (use the `"trl_rewards"` protocol).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import is_conversational, message_text, prompt_text

PROTOCOLS = {"trl_rewards": "/score", "vllm": "/classify", "openrlhf": "/get_reward"}


def _shards(n: int, k: int) -> list[range]:
    size, extra = divmod(n, k)
    bounds, start = [], 0
    for i in range(k):
        stop = start + size + (i < extra)
        bounds.append(range(start, stop))
        start = stop
    return [b for b in bounds if len(b)]


class RemoteRewardFunction:
    """
    A reward function served over HTTP.

    Args:
        urls (`str` or `Sequence[str]`): server base URLs (comma-separated in a string), e.g. `"http://h1:8000"`.
        protocol (`str`, *optional*, defaults to `"trl_rewards"`): `"trl_rewards"`, `"vllm"` or `"openrlhf"`.
        model (`str`, *optional*): the model name vLLM serves (its `/classify` wants one).
        timeout (`float`, *optional*, defaults to `120`): seconds per request.
        retries (`int`, *optional*, defaults to `3`): attempts per shard after the first.
        backoff (`float`, *optional*, defaults to `0.5`): first wait between attempts, doubled each time.
        name (`str`, *optional*, defaults to `"remote_reward"`): `__name__`.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        protocol: str = "trl_rewards",
        model: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        name: str = "remote_reward",
    ):
        urls = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else [str(u).strip() for u in urls]
        self.urls = [u.rstrip("/") for u in urls if u]
        if not self.urls:
            raise ValueError("urls is empty: give at least one server URL")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        if protocol == "vllm" and not model:
            raise ValueError("protocol='vllm' needs model= (the name vLLM serves)")
        if retries < 0 or timeout <= 0:
            raise ValueError(f"retries must be >= 0 and timeout > 0, got {retries}, {timeout}")
        self.protocol, self.model, self.timeout, self.retries, self.backoff = (
            protocol,
            model,
            timeout,
            retries,
            backoff,
        )
        self.__name__ = name

    def _payload(self, prompts: list, completions: list) -> dict[str, Any]:
        if self.protocol == "trl_rewards":
            return {"prompts": prompts, "completions": completions}
        if any(is_conversational(p) or is_conversational(c) for p, c in zip(prompts, completions, strict=True)):
            raise ValueError(f"{self.__name__}: protocol {self.protocol!r} takes text; use protocol='trl_rewards'")
        texts = [prompt_text(p) + message_text(c) for p, c in zip(prompts, completions, strict=True)]
        if self.protocol == "vllm":
            return {"model": self.model, "input": texts}
        return {"query": texts, "prompts": [prompt_text(p) for p in prompts]}

    def _parse(self, body: Any, n: int, url: str) -> list[float | None]:
        if self.protocol == "vllm":
            rewards = [row["probs"][0] for row in sorted(body["data"], key=lambda row: row.get("index", 0))]
        else:
            rewards = body["rewards"]
        if len(rewards) != n:
            raise RuntimeError(f"{self.__name__}: {url} returned {len(rewards)} rewards for {n} completions")
        return [None if r is None else float(r) for r in rewards]

    def _post(self, client, url: str, prompts: list, completions: list) -> list[float | None]:
        endpoint = url + PROTOCOLS[self.protocol]
        payload = self._payload(prompts, completions)
        attempt = 0
        while True:
            try:
                response = client.post(endpoint, json=payload, timeout=self.timeout)
                response.raise_for_status()
                return self._parse(response.json(), len(prompts), url)
            except Exception as error:  # connection refused, timeout, 5xx, bad body: retried, then named
                if attempt == self.retries:
                    raise RuntimeError(
                        f"{self.__name__}: {endpoint} failed after {self.retries + 1} attempts: "
                        f"{type(error).__name__}: {error}"
                    ) from error
                time.sleep(self.backoff * 2**attempt)
                attempt += 1

    def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list[float | None]:
        import httpx

        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"{self.__name__}: got {len(prompts)} prompts but {len(completions)} completions")
        shards = _shards(len(prompts), len(self.urls))
        with httpx.Client() as client, ThreadPoolExecutor(max_workers=len(shards) or 1) as pool:
            futures = [
                pool.submit(self._post, client, url, prompts[s.start : s.stop], completions[s.start : s.stop])
                for url, s in zip(self.urls, shards, strict=False)
            ]
            return [reward for future in futures for reward in future.result()]

    def __repr__(self) -> str:
        return f"RemoteRewardFunction(name={self.__name__!r}, urls={self.urls}, protocol={self.protocol!r})"
