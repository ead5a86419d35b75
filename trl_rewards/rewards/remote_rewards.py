"""Rewards computed by a server, in TRL's reward-function contract: our `trl-rewards serve`, vLLM's pooling server
(`/classify`, `/pooling`) or an OpenRLHF-style `/get_reward` server (wire formats: `rewards/remote_protocols.py`).

**Async.** [`RemoteRewardFunction`] has an `async def __call__`: TRL's `GRPOTrainer` / `RLOOTrainer` see it as an
async reward function (`trl.trainer.utils.is_async_callable`) and await it on their event loop, concurrently with
the other async reward functions, while the sync ones run. As a [`RewardEnsemble`] member it makes the ensemble
async too (its other members run meanwhile, see `rewards/ensemble.py`); the PPO adapter awaits it. A sync call site
(evaluation, a sync ensemble) takes [`RemoteRewardFunction.blocking`], the same function with a plain `__call__` (it
runs the requests on a private event-loop thread, so it also works when called from inside a running loop).

**Sharding, retries, fail-over.** A call is split into contiguous shards, one per healthy URL, sent concurrently.
A request that fails on a transport error (refused, reset, timed out) marks its URL down for `cooldown` seconds and
is retried at once on the next healthy URL; a 5xx is retried on the next URL too (without marking it down: the
server answered); when no other URL is healthy it waits `backoff * 2**attempt` and retries. A URL whose cool-down
has passed gets shards again (and is marked down again if it still fails): fail-over away from a dead server and
back once it recovers, with no health-check traffic. A 4xx (a malformed request) or a response body that breaks the
protocol is not retried. After `retries + 1` attempts the shard's error names every URL tried and the cause; nothing
is made up. With `on_error="none"` the failed shard's samples get `None` instead (TRL leaves them out of its
statistics), a warning is logged and `num_failed` counts them (logged as `{name}/failed_samples` through
`log_metric`).

**Row-dependent servers.** An ensemble that normalizes over the call (`"batch"`, `"group"`, `"running"`) scores a
call as a whole: sharding it across servers would normalize each shard alone. Our server says so
(`rows_independent: false`); such a response to a sharded call raises, naming `shard=False`, which sends each call
whole to one URL (replicas behind one Ray Serve URL share the load instead).

The function holds only URLs, options and counters when pickled (clients and threads are rebuilt), so it pickles
for TRL's async rollout workers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from .remote_protocols import (
    ENDPOINTS,
    BadResponseError,
    parse_rewards,
    parse_steps,
    request_body,
    resolve_protocol,
)

logger = logging.getLogger(__name__)
ON_ERROR = ("raise", "none")


def _shards(n: int, k: int) -> list[range]:
    size, extra = divmod(n, k)
    bounds, start = [], 0
    for i in range(k):
        stop = start + size + (i < extra)
        bounds.append(range(start, stop))
        start = stop
    return [b for b in bounds if len(b)]


class RemoteRewardError(RuntimeError):
    """A shard failed on every attempt; the message names the URLs tried and the causes."""


class _Retryable(Exception):
    def __init__(self, message: str, mark_down: bool):
        super().__init__(message)
        self.mark_down = mark_down


class RemoteRewardFunction:
    """
    A reward function served over HTTP (async `__call__`; [`blocking`] gives the sync one).

    Args:
        urls (`str` or `Sequence[str]`): server base URLs (comma-separated in a string), e.g. `"http://h1:8000"`,
            route prefix included (`"http://h1:8000/prm"`).
        protocol (`str`, *optional*, defaults to `"trl-rewards"`): `"trl-rewards"`, `"vllm-classify"`,
            `"vllm-pooling"` or `"openrlhf"` (see `rewards/remote_protocols.py`).
        model (`str`, *optional*): the model name a vLLM server serves (its requests name one).
        timeout (`float`, *optional*, defaults to `120`): seconds per request.
        retries (`int`, *optional*, defaults to `3`): attempts per shard after the first.
        backoff (`float`, *optional*, defaults to `0.5`): first wait when no other URL can take a retry, doubled
            each time.
        cooldown (`float`, *optional*, defaults to `10`): seconds a URL that failed on a transport error gets no
            shards; then it is tried again.
        on_error (`str`, *optional*, defaults to `"raise"`): `"raise"` (a [`RemoteRewardError`] naming the URLs and
            the cause) or `"none"` (the failed samples get `None`, logged and counted in `num_failed`).
        shard (`bool`, *optional*, defaults to `True`): split a call across the URLs; `False` sends it whole to one.
        max_connections (`int`, *optional*, defaults to `64`): open connections per event loop.
        name (`str`, *optional*, defaults to `"remote_reward"`): `__name__`.
        step_rewards (`bool`, *optional*, defaults to `False`): for a served PRM: the call returns each completion's
            `[(char_end, P(step correct)), ...]` (or `None`), the step reward contract of
            [`~trl_rewards.rewards.step_rewards`], so that it can be a `step_reward_funcs` entry of
            `ProcessGRPOTrainer`, as `ProcessRewardFunction(step_rewards=True)` is in process.

    After a `"trl-rewards"` call, `last_details` holds the server's extras concatenated over the shards: `members`
    (an ensemble's per-member raw and normalized values) and `too_long` (rows truncated or dropped).

    Example:
    ```python
    >>> remote = RemoteRewardFunction("http://h1:8000,http://h2:8000", name="rm")
    >>> trainer = GRPOTrainer(model=policy, reward_funcs=[remote, accuracy_reward], args=args, train_dataset=ds)
    >>> ensemble = RewardEnsemble([remote, RewardModelFunction("small-rm")])  # async, awaited by GRPO / RLOO
    ```
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        protocol: str = "trl-rewards",
        model: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        cooldown: float = 10.0,
        on_error: str = "raise",
        shard: bool = True,
        max_connections: int = 64,
        name: str = "remote_reward",
        step_rewards: bool = False,
    ):
        urls = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else [str(u).strip() for u in urls]
        self.urls = [u.rstrip("/") for u in urls if u]
        if not self.urls:
            raise ValueError("urls is empty: give at least one server URL")
        self.protocol = resolve_protocol(protocol)
        if step_rewards and self.protocol != "trl-rewards":
            raise ValueError("step_rewards=True reads a served PRM's steps, which only protocol='trl-rewards' returns")
        # like ProcessRewardFunction(step_rewards=True): the call returns each completion's [(char_end, score), ...]
        self.returns_step_rewards = bool(step_rewards)
        if self.protocol.startswith("vllm") and not model:
            raise ValueError(f"protocol={self.protocol!r} needs model= (the name vLLM serves)")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        for option, value in (("timeout", timeout), ("backoff", backoff), ("cooldown", cooldown)):
            if not (value >= 0 and (value > 0 or option != "timeout")):
                raise ValueError(f"{option} must be {'> 0' if option == 'timeout' else '>= 0'}, got {value!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.model, self.timeout, self.retries, self.backoff = model, float(timeout), retries, float(backoff)
        self.cooldown, self.on_error, self.shard = float(cooldown), on_error, shard
        self.max_connections = max_connections
        self.__name__ = name
        self.num_failed = 0
        self.url_stats = {url: {"ok": 0, "failed": 0} for url in self.urls}
        self.last_details: dict[str, Any] = {}
        self._init_runtime()

    # -- runtime state (rebuilt after unpickling) ------------------------------------------------------------------
    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._down_until = dict.fromkeys(self.urls, 0.0)
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_down_until", "_clients", "_loop"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def healthy_urls(self) -> list[str]:
        """The URLs not in a cool-down now (all of them when every one is)."""
        now = time.monotonic()
        with self._lock:
            healthy = [url for url in self.urls if self._down_until[url] <= now]
        return healthy or list(self.urls)

    def _mark(self, url: str, ok: bool, down: bool = False) -> None:
        with self._lock:
            self.url_stats[url]["ok" if ok else "failed"] += 1
            if ok:
                self._down_until[url] = 0.0
            elif down:
                self._down_until[url] = time.monotonic() + self.cooldown

    def _next_url(self, failed: str) -> str | None:
        """Another healthy URL after `failed` in the list, or `None` when there is none."""
        now = time.monotonic()
        start = self.urls.index(failed)
        with self._lock:
            for url in self.urls[start + 1 :] + self.urls[:start]:
                if self._down_until[url] <= now:
                    return url
        return None

    def _client(self):
        import httpx

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
            client = self._clients[loop] = httpx.AsyncClient(limits=limits, timeout=self.timeout)
        return client

    # -- one shard ---------------------------------------------------------------------------------------------------
    async def _request(self, url: str, body: dict[str, Any]) -> Any:
        import httpx

        endpoint = url + ENDPOINTS[self.protocol]
        try:
            response = await self._client().post(endpoint, json=body)
        except httpx.TransportError as error:
            raise _Retryable(f"{endpoint}: {type(error).__name__}: {error}", mark_down=True) from error
        if response.status_code >= 500:
            raise _Retryable(f"{endpoint}: HTTP {response.status_code}: {response.text[:300]}", mark_down=False)
        if response.status_code >= 400:
            raise RemoteRewardError(f"{self.__name__}: {endpoint} refused the request: HTTP {response.status_code}: "
                                    f"{response.text[:500]}")  # fmt: skip
        try:
            return response.json()
        except ValueError as error:
            raise BadResponseError(f"{endpoint} answered non-JSON: {response.text[:200]!r}") from error

    async def _shard(self, url: str, prompts: list, completions: list, steps: bool) -> dict[str, Any]:
        body = request_body(self.protocol, self.model, prompts, completions)
        causes = []
        for attempt in range(self.retries + 1):
            try:
                response = await self._request(url, body)
                out = {"rewards": parse_rewards(self.protocol, response, len(prompts)), "body": response}
                if steps:
                    out["steps"] = parse_steps(response, len(prompts))
                self._mark(url, ok=True)
                return out
            except _Retryable as error:
                causes.append(str(error))
                self._mark(url, ok=False, down=error.mark_down)
            except BadResponseError as error:
                self._mark(url, ok=False)
                raise RemoteRewardError(f"{self.__name__}: {url}{ENDPOINTS[self.protocol]} {error}") from error
            if attempt == self.retries:
                break
            other = self._next_url(url)
            if other is None:  # nowhere else to go: give this one time
                await asyncio.sleep(self.backoff * 2**attempt)
            else:
                url = other
        raise RemoteRewardError(
            f"{self.__name__}: failed after {self.retries + 1} attempts; " + "; ".join(causes[-(self.retries + 1) :])
        )

    # -- a call ------------------------------------------------------------------------------------------------------
    async def _score(self, prompts, completions, steps: bool = False, log_metric=None) -> dict[str, Any]:
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"{self.__name__}: got {len(prompts)} prompts but {len(completions)} completions")
        if steps and self.protocol != "trl-rewards":
            raise ValueError(f"{self.__name__}: step scores need protocol='trl-rewards', not {self.protocol!r}")
        urls = self.healthy_urls()
        shards = _shards(len(prompts), len(urls) if self.shard else 1)
        results = await asyncio.gather(
            *(self._shard(url, prompts[s.start : s.stop], completions[s.start : s.stop], steps)
              for url, s in zip(urls, shards, strict=False)),
            return_exceptions=True,
        )  # fmt: skip
        rewards, step_rows, bodies, failed = [], [], [], 0
        for s, result in zip(shards, results, strict=True):
            if isinstance(result, BaseException):
                if self.on_error == "raise" or not isinstance(result, RemoteRewardError):
                    raise result
                logger.warning("%s; its %d samples get None (on_error='none')", result, len(s))
                failed += len(s)
                rewards += [None] * len(s)
                step_rows += [None] * len(s)
                bodies.append(None)
                continue
            rewards += result["rewards"]
            step_rows += result.get("steps", [None] * len(s))
            bodies.append(result["body"])
        if len(shards) > 1 and any(isinstance(b, dict) and b.get("rows_independent") is False for b in bodies):
            raise ValueError(
                f"{self.__name__}: the server normalizes over the whole call (an ensemble with batch, group or "
                "running normalization), so a call must not be split across URLs: pass shard=False"
            )
        with self._lock:
            self.num_failed += failed
        self.last_details = _merge_details(shards, bodies) if self.protocol == "trl-rewards" else {}
        if log_metric is not None:
            log_metric(f"{self.__name__}/failed_samples", float(failed))
            if "too_long" in self.last_details:
                log_metric(f"{self.__name__}/num_truncated", float(len(self.last_details["too_long"]["truncated"])))
        return {"rewards": rewards, "steps": step_rows}

    async def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list:
        """The rewards; with `step_rewards=True`, each completion's `[(char_end, score), ...]` (or `None`)."""
        steps = self.returns_step_rewards
        result = await self._score(prompts, completions, steps=steps, log_metric=kwargs.get("log_metric"))
        return result["steps" if steps else "rewards"]

    async def astep_rewards(self, prompts, completions, completion_ids=None, **kwargs):
        """
        Per-step rewards of a served PRM (protocol `"trl-rewards"`): for each completion, `[(end, score), ...]` with
        `end` the character offset in the completion's text where the step ends and `score` P(step correct), or
        `None` (no step, or a failed shard under `on_error="none"`).
        """
        return (await self._score(prompts, completions, steps=True, log_metric=kwargs.get("log_metric")))["steps"]

    # -- sync call sites ---------------------------------------------------------------------------------------------
    def _run(self, coroutine):
        """Runs `coroutine` on this function's private event-loop thread and waits for it."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name=f"{self.__name__}-http", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def score(self, prompts, completions, completion_ids=None, **kwargs) -> list[float | None]:
        """The rewards, from sync code (same as awaiting `__call__`)."""
        return self._run(self._score(prompts, completions, log_metric=kwargs.get("log_metric")))["rewards"]

    def step_rewards(self, prompts, completions, completion_ids=None, **kwargs):
        """[`astep_rewards`] from sync code."""
        return self._run(self._score(prompts, completions, steps=True, log_metric=kwargs.get("log_metric")))["steps"]

    def blocking(self) -> BlockingRemoteRewardFunction:
        """The same function (URLs, options, name) with a sync `__call__`; it keeps its own URL health and clients."""
        twin = BlockingRemoteRewardFunction.__new__(BlockingRemoteRewardFunction)
        twin.__setstate__(self.__getstate__())
        return twin

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.__name__!r}, urls={self.urls}, protocol={self.protocol!r})"


class BlockingRemoteRewardFunction(RemoteRewardFunction):
    """[`RemoteRewardFunction`] with a sync `__call__`, for sync call sites (evaluation, a sync ensemble)."""

    def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list:
        if self.returns_step_rewards:
            return self.step_rewards(prompts, completions, completion_ids, **kwargs)
        return self.score(prompts, completions, completion_ids, **kwargs)


def _merge_details(shards: list[range], bodies: list[Any]) -> dict[str, Any]:
    """The server's per-row extras of every shard, concatenated (rows of a failed shard: `None`)."""
    details: dict[str, Any] = {"too_long": {"truncated": [], "dropped": []}}
    member_names = next((list(b["members"]) for b in bodies if isinstance(b, dict) and b.get("members")), [])
    if member_names:
        details["members"] = {name: {"raw": [], "normalized": []} for name in member_names}
    for s, body in zip(shards, bodies, strict=True):
        body = body if isinstance(body, dict) else {}
        too_long = body.get("too_long") or {}
        for key in ("truncated", "dropped"):
            details["too_long"][key] += [s.start + i for i in too_long.get(key, [])]
        for name in member_names:
            values = (body.get("members") or {}).get(name) or {}
            for key in ("raw", "normalized"):
                details["members"][name][key] += values.get(key) or [None] * len(s)
    return details
