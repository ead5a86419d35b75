"""The application behind `trl-rewards serve`: request schemas, one replica's scoring ([`RewardService`]), the Ray
Serve deployment, and the actor that keeps running normalization one stream across replicas.

**Endpoints.** `POST /v1/rewards` (ours; `/score` is an alias) takes `{"prompts": [...], "completions": [...]}`
(text or conversational) and answers

```json
{"rewards": [r, ...], "rows_independent": true,
 "too_long": {"policy": "truncate", "max_length": {"rm": 512}, "truncated": [3], "dropped": []},
 "members": {"rm": {"raw": [...], "normalized": [...]}, ...},           # an ensemble
 "steps": [{"ends": [12, 30], "scores": [0.9, 0.2]}, null, ...]}        # a PRM: character ends and P(step correct)
```

`POST /classify` and `POST /pooling` answer vLLM's `ClassificationResponse` / `PoolingResponse` (texts in `input`,
`use_activation` honoured: vLLM applies a sigmoid to a 1-label head unless it is `false`); `POST /get_reward` is
OpenRLHF's; `GET /health` reports the function served, this replica's process id, torch thread count and niceness,
and its counters.

**Too long.** Each request is checked row by row before it joins a batch, with each model's own tokenization and
`max_length` (a reward model's default: its position limit): a reward model truncates like in training, a PRM cuts
prompt tokens from the left; both are listed in `too_long.truncated`. A row a model cannot score even truncated (a
PRM whose steps alone do not fit) gets `None` and is listed in `too_long.dropped`, so one bad row never fails the
other requests merged with it. With `--too_long error` either case is a 422 naming the row instead.

**Batching.** Rows independent of each other (a model, a PRM, an ensemble normalized `"none"` or `"calibrated"`)
are merged across concurrent requests by Ray Serve's `@serve.batch`; an ensemble normalizing over the call is scored
request by request, so a client gets what it would get in process (`rows_independent: false` tells the client not
to shard a call across servers).

**Running normalization across replicas.** Each replica holding its own `RunningZScore` would let the statistics
drift apart, and a client's reward would depend on which replica the router picked. Instead, with
`normalization="running"`, the statistics live in one Ray actor ([`RunningStatistics`], created by `build_app`
and handed to every replica): a replica computes its members' raw rewards, the actor adds them to the one set of
statistics and z-scores them in one step (actor calls run one at a time), and the replica combines the result. The
served rewards are those of one in-process ensemble seeing the calls in the order the actor received them, however
many replicas there are; the price is one small actor round trip per call. (A replica's own `normalizers` stay
unused.)
"""

import asyncio
import inspect
import math
import os
import time
from typing import Any

from pydantic import BaseModel, Field, model_validator

TOO_LONG = ("truncate", "error")
Text = str | list[dict]


class RewardsRequest(BaseModel):
    prompts: list[Text | None]
    completions: list[Text]

    @model_validator(mode="after")
    def same_length(self):
        if len(self.prompts) != len(self.completions):
            raise ValueError(f"prompts has {len(self.prompts)} items but completions {len(self.completions)}")
        return self


class GetRewardRequest(BaseModel):
    query: list[str]
    prompts: list[str] | None = None


class ClassifyRequest(BaseModel):
    model: str | None = None
    input: str | list[str]
    use_activation: bool | None = None
    activation: bool | None = None  # vLLM's older spellings of use_activation
    softmax: bool | None = None
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)


class PoolingRequest(ClassifyRequest):
    task: str | None = None


class TooLongError(ValueError):
    """A row over a model's `max_length` under `too_long="error"`."""


def _nan_to_none(values) -> list[float | None]:
    return [None if v is None or math.isnan(v) else float(v) for v in values]


def step_ends(text: str, steps: list[str]) -> list[int]:
    """Character offset in `text` where each (stripped) step ends, steps found in order."""
    ends, cursor = [], 0
    for step in steps:
        start = text.find(step, cursor)
        cursor = (start if start >= 0 else cursor) + len(step)
        ends.append(cursor)
    return ends


def build_reward_function(spec: dict[str, Any]):
    """The reward function a replica serves, built from `{"model" | "prm" | "config": path, "device": ...}`."""
    from ..rewards.from_config import build_reward
    from ..rewards.model_rewards import ProcessRewardFunction, RewardModelFunction

    if spec.get("config"):
        return build_reward(spec["config"])
    if spec.get("prm"):
        return ProcessRewardFunction(spec["prm"], device=spec.get("device"))
    return RewardModelFunction(spec["model"], device=spec.get("device"))


def running_normalization(spec: dict[str, Any]) -> bool:
    """Whether `spec` describes an ensemble with `normalization="running"` (read without loading any model)."""
    config = spec.get("config")
    if not config:
        return False
    if not isinstance(config, dict):
        import yaml

        with open(config) as f:
            config = yaml.safe_load(f)
    return isinstance(config, dict) and "members" in config and config.get("normalization", "batch") == "running"


class RunningStatistics:
    """One set of running z-score statistics per ensemble member, shared by every replica (a Ray actor)."""

    def __init__(self):
        self.normalizers: dict[str, Any] = {}

    def normalize(self, names: list[str], settings: dict[str, float], raw: list[list[float]]) -> list[list[float]]:
        import torch

        from ..rewards.normalization import RunningZScore

        table = torch.tensor(raw, dtype=torch.float64).reshape(len(raw), len(names))
        columns = []
        for k, name in enumerate(names):
            if name not in self.normalizers:
                self.normalizers[name] = RunningZScore(sync=False, **settings)
            columns.append(self.normalizers[name].normalize(table[:, k]))
        return torch.stack(columns, dim=1).tolist() if columns else []

    def state(self) -> dict[str, dict]:
        return {name: n.state_dict() for name, n in self.normalizers.items()}


class RewardService:
    """
    One replica's scoring: the reward function, its too-long check, and its per-member / per-step details.

    Args:
        reward: the reward function served (a model, a PRM, an ensemble or any function in TRL's contract).
        too_long (`str`, *optional*, defaults to `"truncate"`): `"truncate"` (report) or `"error"` (a 422).
        normalize_running (`Callable`, *optional*): `(names, settings, raw) -> normalized`, the shared statistics of a
            `normalization="running"` ensemble (see the module docstring).
    """

    def __init__(self, reward, too_long: str = "truncate", normalize_running=None):
        from ..rewards.ensemble import RewardEnsemble
        from ..rewards.model_rewards import ProcessRewardFunction, RewardModelFunction

        if too_long not in TOO_LONG:
            raise ValueError(f"too_long must be one of {TOO_LONG}, got {too_long!r}")
        self.reward, self.too_long, self.normalize_running = reward, too_long, normalize_running
        self.name = getattr(reward, "__name__", type(reward).__name__)
        self.ensemble = isinstance(reward, RewardEnsemble)
        self.prm = isinstance(reward, ProcessRewardFunction)
        normalization = getattr(reward, "normalization", "none") if self.ensemble else "none"
        self.rows_independent = normalization in ("none", "calibrated")
        members = reward.members.items() if self.ensemble else [(self.name, reward)]
        self.checked = [(n, m) for n, m in members if isinstance(m, RewardModelFunction | ProcessRewardFunction)]

    def check_lengths(self, prompts: list, completions: list) -> dict[str, Any]:
        """`{"policy", "max_length", "truncated", "dropped"}` of this request, without running any model."""
        truncated, dropped, limits = set(), set(), {}
        for name, member in self.checked:
            scorer = member.scorer
            limits[name] = scorer.max_length
            with member._lock:  # the function's own lock: no scoring runs while its counter is borrowed
                before = scorer.n_truncated
                try:
                    self._check(name, member, scorer, prompts, completions, truncated, dropped)
                finally:
                    scorer.n_truncated = before  # a check, not a scoring: the scoring counts them
        return {"policy": self.too_long, "max_length": limits, "truncated": sorted(truncated - dropped),
                "dropped": sorted(dropped)}  # fmt: skip

    def _check(self, name, member, scorer, prompts, completions, truncated: set, dropped: set) -> None:
        from ..rewards.base import prompt_text

        prm = hasattr(member, "split_steps")
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            steps = member.split_steps(completion) if prm else None
            if prm and not steps:
                continue  # no step: the PRM gives None anyway
            count = scorer.n_truncated
            try:
                scorer.encode(prompt_text(prompt), steps) if prm else scorer.encode(prompt, completion)
            except ValueError as error:
                if "max_length" not in str(error):  # not a length problem: the request's fault, a 422 as is
                    raise
                if self.too_long == "error":
                    raise TooLongError(f"row {i}: {name}: {error} (too_long='error')") from error
                dropped.add(i)
                continue
            if scorer.n_truncated > count:
                if self.too_long == "error":
                    raise TooLongError(f"row {i} is longer than max_length={scorer.max_length} of {name} "
                                       "(too_long='error')")  # fmt: skip
                truncated.add(i)

    def score_rows(self, prompts: list, completions: list) -> dict[str, Any]:
        """`{"rewards": [...], "members"?: {...}, "steps"?: [...]}` for rows that can all be scored."""
        if self.ensemble:
            return self._ensemble(prompts, completions)
        if self.prm:
            return self._prm(prompts, completions)
        from ..rewards.reward_calls import run_blocking

        output = self.reward(prompts=prompts, completions=completions)
        if inspect.isawaitable(output):  # an async reward function (e.g. a RemoteRewardFunction relayed)
            output = run_blocking(output)
        return {"rewards": _nan_to_none(output)}

    def _prm(self, prompts: list, completions: list) -> dict[str, Any]:
        from ..inference.aggregation import aggregate_step_scores
        from ..rewards.base import message_text, prompt_text

        reward = self.reward
        steps = [reward.split_steps(c) for c in completions]
        rows = [i for i, s in enumerate(steps) if s]
        with reward._lock:  # the function's own lock: one scoring at a time per model, as in process
            scorer = reward.scorer
            before = scorer.n_truncated
            probs = scorer.step_probabilities([prompt_text(prompts[i]) for i in rows], [steps[i] for i in rows])
            reward.num_truncated += scorer.n_truncated - before
        rewards, step_rows = [None] * len(completions), [None] * len(completions)
        for i, p in zip(rows, probs, strict=True):
            rewards[i] = aggregate_step_scores(p, reward.aggregation, reward.temperature)
            step_rows[i] = {"ends": step_ends(message_text(completions[i]), steps[i]), "scores": p}
        return {"rewards": rewards, "steps": step_rows}

    def _ensemble(self, prompts: list, completions: list) -> dict[str, Any]:
        import torch

        ensemble = self.reward
        raw, failed = ensemble.member_rewards(prompts, completions)
        names = list(ensemble.members)
        if ensemble.normalization == "running" and self.normalize_running is not None:
            first = next(iter(ensemble.normalizers.values()))
            settings = {"eps": first.eps, "min_std": first.min_std}
            normalized = torch.tensor(self.normalize_running(names, settings, raw.tolist()), dtype=torch.float64)
            normalized = normalized.reshape(raw.shape)
        else:
            normalized = ensemble.normalize(raw)
        members = {
            name: {"raw": _nan_to_none(raw[:, k].tolist()), "normalized": _nan_to_none(normalized[:, k].tolist())}
            for k, name in enumerate(names)
        }
        return {"rewards": ensemble.aggregate(normalized), "members": members, "failed_members": failed}

    def respond(self, prompts: list, completions: list, scored: dict[str, Any] | None = None, check=None) -> dict:
        """The `/v1/rewards` body: the length check, the scores of the kept rows (or `scored`), dropped rows `None`."""
        check = check or self.check_lengths(prompts, completions)
        kept = [i for i in range(len(completions)) if i not in set(check["dropped"])]
        if scored is None:
            scored = self.score_rows([prompts[i] for i in kept], [completions[i] for i in kept]) if kept else {}
        return expand(scored, kept, len(completions)) | {"too_long": check, "rows_independent": self.rows_independent}


def expand(scored: dict[str, Any], kept: list[int], n: int) -> dict[str, Any]:
    """Per-row lists of `scored` (rows `kept`) spread over `n` rows, `None` elsewhere."""

    def spread(values):
        out = [None] * n
        for i, value in zip(kept, values, strict=True):
            out[i] = value
        return out

    out = {"rewards": spread(scored.get("rewards", []))}
    if "steps" in scored:
        out["steps"] = spread(scored["steps"])
    if "members" in scored:
        out["members"] = {m: {k: spread(v) for k, v in d.items()} for m, d in scored["members"].items()}
        out["failed_members"] = scored["failed_members"]
    return out


def slice_rows(scored: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows `start:stop` of a `score_rows` result (one request's part of a merged batch)."""
    out = {"rewards": scored["rewards"][start:stop]}
    if "steps" in scored:
        out["steps"] = scored["steps"][start:stop]
    if "members" in scored:
        out["members"] = {m: {k: v[start:stop] for k, v in d.items()} for m, d in scored["members"].items()}
        out["failed_members"] = scored["failed_members"]
    return out


def _activation(body: ClassifyRequest) -> bool:
    for flag in (body.use_activation, body.activation, body.softmax):
        if flag is not None:
            return flag
    return True


def build_app(spec: dict[str, Any], num_replicas: int = 1, num_gpus_per_replica: float = 0.0,
              max_batch_size: int = 64, batch_wait_timeout_s: float = 0.01, too_long: str = "truncate",
              num_cpus_per_replica: float | None = None):  # fmt: skip
    """
    The Ray Serve application (a bound deployment) serving `spec`'s reward function.

    `num_cpus_per_replica` is the CPUs Ray reserves for each replica and its torch thread count (at least 1). Left
    unset, Ray reserves 1 CPU and a replica keeps the `OMP_NUM_THREADS` it inherits, which Ray sets to 1 when the
    environment does not: a CPU replica then scores with one thread whatever the machine has.
    """
    import ray
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from ray import serve

    if too_long not in TOO_LONG:
        raise ValueError(f"too_long must be one of {TOO_LONG}, got {too_long!r}")
    if num_cpus_per_replica is not None and not num_cpus_per_replica > 0:
        raise ValueError(f"num_cpus_per_replica must be > 0, got {num_cpus_per_replica!r}")
    actor_options = {"num_gpus": num_gpus_per_replica}
    if num_cpus_per_replica is not None:
        actor_options["num_cpus"] = num_cpus_per_replica
    app = FastAPI(title="trl_rewards reward server")
    statistics = ray.remote(num_cpus=0)(RunningStatistics).remote() if running_normalization(spec) else None

    @serve.deployment(
        num_replicas=num_replicas,
        ray_actor_options=actor_options,
        max_ongoing_requests=max(2 * max_batch_size, 8),  # Ray's default (5) would cap every merged batch at 5
    )
    @serve.ingress(app)
    class RewardServer:
        def __init__(self, spec: dict[str, Any], statistics):
            import torch

            if num_cpus_per_replica is not None:
                torch.set_num_threads(max(1, math.floor(num_cpus_per_replica)))
            shared = None
            if statistics is not None:

                def shared(names, settings, raw):  # noqa: E306
                    return ray.get(statistics.normalize.remote(names, settings, raw))

            self.service = RewardService(build_reward_function(spec), too_long=too_long, normalize_running=shared)
            for _, member in self.service.checked:  # ready means loaded: no first request pays for the loading
                member.load()
            self.stats = {"requests": 0, "calls": 0, "rows": 0, "score_seconds": 0.0}

        def _score(self, prompts: list, completions: list) -> dict[str, Any]:
            start = time.perf_counter()
            scored = self.service.score_rows(prompts, completions)
            self.stats["calls"] += 1
            self.stats["rows"] += len(completions)
            self.stats["score_seconds"] += time.perf_counter() - start
            return scored

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
        async def _merged(self, requests: list[tuple[list, list]]) -> list[dict]:
            prompts = [p for request in requests for p in request[0]]
            completions = [c for request in requests for c in request[1]]
            scored = await asyncio.to_thread(self._score, prompts, completions)
            out, start = [], 0
            for request in requests:
                out.append(slice_rows(scored, start, start + len(request[1])))
                start += len(request[1])
            return out

        async def respond(self, prompts: list, completions: list) -> dict[str, Any]:
            self.stats["requests"] += 1
            service = self.service
            check = await asyncio.to_thread(service.check_lengths, prompts, completions)
            kept = [i for i in range(len(completions)) if i not in set(check["dropped"])]
            rows = ([prompts[i] for i in kept], [completions[i] for i in kept])
            if not kept:
                scored = {}
            elif service.rows_independent:
                scored = await self._merged(rows)
            else:
                scored = await asyncio.to_thread(self._score, *rows)
            return service.respond(prompts, completions, scored=scored, check=check)

        async def answer(self, prompts: list, completions: list):
            try:
                return await self.respond(prompts, completions)
            except ValueError as error:  # too long under too_long="error", a bad row for a member: the client's
                return JSONResponse(status_code=422, content={"detail": f"{type(error).__name__}: {error}"})

        @app.post("/v1/rewards")
        async def rewards(self, body: RewardsRequest):
            return await self.answer(body.prompts, body.completions)

        @app.post("/score")
        async def score(self, body: RewardsRequest):
            return await self.answer(body.prompts, body.completions)

        @app.post("/get_reward")
        async def get_reward(self, body: GetRewardRequest):
            out = await self.answer([None] * len(body.query), body.query)  # full texts, as OpenRLHF sends them
            return out if isinstance(out, JSONResponse) else {"rewards": out["rewards"], "too_long": out["too_long"]}

        async def _pooled(self, body: ClassifyRequest):
            texts = body.input if isinstance(body.input, list) else [body.input]
            out = await self.answer([None] * len(texts), texts)
            if isinstance(out, JSONResponse):
                return out
            activation = _activation(body)
            return [r if r is None or not activation else 1.0 / (1.0 + math.exp(-r)) for r in out["rewards"]]

        @app.post("/classify")
        async def classify(self, body: ClassifyRequest):
            out = await self._pooled(body)
            if isinstance(out, JSONResponse):
                return out
            data = [{"index": i, "label": None, "probs": [r], "num_classes": 1} for i, r in enumerate(out)]
            return {"object": "list", "model": body.model or self.service.name, "data": data}

        @app.post("/pooling")
        async def pooling(self, body: PoolingRequest):
            if body.task not in (None, "classify", "score"):
                return JSONResponse(status_code=400, content={"detail": (
                    f"task: {body.task!r} is not served here; this server pools one reward per input (task "
                    "'classify'); per-step PRM scores are at POST /v1/rewards")})  # fmt: skip
            out = await self._pooled(body)
            if isinstance(out, JSONResponse):
                return out
            data = [{"index": i, "object": "pooling", "data": [r]} for i, r in enumerate(out)]
            return {"object": "list", "model": body.model or self.service.name, "data": data}

        @app.get("/health")
        async def health(self) -> dict:
            service = self.service
            kind = "ensemble" if service.ensemble else "prm" if service.prm else "model"
            import torch

            return {"reward_function": service.name, "kind": kind, "rows_independent": service.rows_independent,
                    "pid": os.getpid(), "torch_threads": torch.get_num_threads(), "niceness": os.nice(0),
                    **self.stats}  # fmt: skip

    return RewardServer.bind(spec, statistics)
