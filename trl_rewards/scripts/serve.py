"""`trl-rewards serve`: reward models, PRMs and ensembles as a Ray Serve application, for many trainer ranks.

One deployment serves one reward function of ours (a reward model folder with `--model`, a PRM with `--prm`, or any
member or ensemble described by `--config rewards.yaml`, see `rewards/from_config.py`) behind FastAPI, speaking
three protocols at once (see `rewards/remote_rewards.py`): ours (`POST /score`), vLLM's pooling API
(`POST /classify`) and OpenRLHF's (`POST /get_reward`); `GET /health` reports what is served and the batches run.
Request bodies are pydantic models: a malformed request gets a 422 whose JSON names the field, and never reaches a
replica's model.

**Batching.** Ray Serve's dynamic batching (`@serve.batch`) merges concurrent requests (many ranks, small calls) into
one call of the reward function, which then micro-batches by length and token budget as usual. A reward function
whose scores depend on the other rows of a call (an ensemble that normalizes per batch or per group) is never merged
across requests: each request is scored alone, so a client gets the rewards it would get in process.

**Where it runs.** Without `--address`, a local Ray instance starts on this machine and serves on `--host`
(default `127.0.0.1`); `--address auto` (or a Ray address) deploys onto a running Ray cluster (`ray start --head` on
one node, `ray start --address HEAD:6379` on the others), where `--num_replicas` and `--num_gpus_per_replica` place
the replicas over the nodes.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' body types (pydantic models defined in
# `build_app`) from their annotations, which must be the classes, not strings.
import argparse
import logging
import time
from typing import Any

logger = logging.getLogger(__name__)


def build_reward_function(spec: dict[str, Any]):
    """The reward function a replica serves, built from `{"model" | "prm" | "config": path, "device": ...}`."""
    from ..rewards.from_config import build_reward
    from ..rewards.model_rewards import ProcessRewardFunction, RewardModelFunction

    if spec.get("config"):
        return build_reward(spec["config"])
    if spec.get("prm"):
        return ProcessRewardFunction(spec["prm"], device=spec.get("device"))
    return RewardModelFunction(spec["model"], device=spec.get("device"))


def _request_models():
    """Pydantic bodies of the three protocols: a malformed request gets FastAPI's 422 naming the field."""
    from pydantic import BaseModel, model_validator

    Text = str | list[dict]

    class ScoreRequest(BaseModel):
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

    return ScoreRequest, GetRewardRequest, ClassifyRequest


def build_app(spec: dict[str, Any], num_replicas: int = 1, num_gpus_per_replica: float = 0.0,
              max_batch_size: int = 64, batch_wait_timeout_s: float = 0.01):  # fmt: skip
    """The Ray Serve application (a bound deployment) serving `spec`'s reward function."""
    from fastapi import FastAPI
    from ray import serve

    app = FastAPI(title="trl_rewards reward server")
    ScoreRequest, GetRewardRequest, ClassifyRequest = _request_models()

    @serve.deployment(num_replicas=num_replicas, ray_actor_options={"num_gpus": num_gpus_per_replica})
    @serve.ingress(app)
    class RewardServer:
        def __init__(self, spec: dict[str, Any]):
            self.reward = build_reward_function(spec)
            self.name = getattr(self.reward, "__name__", "reward")
            self.merge = getattr(self.reward, "normalization", "none") == "none"  # rows independent of each other
            self.stats = {"requests": 0, "calls": 0, "rows": 0}

        def _score(self, prompts: list, completions: list) -> list:
            self.stats["calls"] += 1
            self.stats["rows"] += len(completions)
            return self.reward(prompts=prompts, completions=completions)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
        async def _merged(self, requests: list[tuple[list, list]]) -> list[list]:
            prompts = [p for request in requests for p in request[0]]
            completions = [c for request in requests for c in request[1]]
            rewards, out, start = self._score(prompts, completions), [], 0
            for request in requests:
                out.append(rewards[start : start + len(request[1])])
                start += len(request[1])
            return out

        async def rewards(self, prompts: list, completions: list) -> list:
            if len(prompts) != len(completions):
                raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
            self.stats["requests"] += 1
            if not completions:
                return []
            if self.merge:
                return await self._merged((prompts, completions))
            return self._score(prompts, completions)

        @app.post("/score")
        async def score(self, body: ScoreRequest) -> dict:
            return {"rewards": await self.rewards(body.prompts, body.completions)}

        @app.post("/get_reward")
        async def get_reward(self, body: GetRewardRequest) -> dict:
            queries = body.query  # the full texts (prompt + response), as OpenRLHF sends them
            return {"rewards": await self.rewards([None] * len(queries), queries)}

        @app.post("/classify")
        async def classify(self, body: ClassifyRequest) -> dict:
            texts = body.input if isinstance(body.input, list) else [body.input]
            rewards = await self.rewards([None] * len(texts), texts)
            return {
                "object": "list",
                "data": [{"index": i, "probs": [r], "num_classes": 1} for i, r in enumerate(rewards)],
            }

        @app.get("/health")
        async def health(self) -> dict:
            return {"reward_function": self.name, "merges_requests": self.merge, **self.stats}

    return RewardServer.bind(spec)


def start(spec: dict[str, Any], address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          name: str = "trl_rewards", **app_options) -> str:  # fmt: skip
    """Starts (or joins) Ray, deploys the application and returns its base URL."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(spec, **app_options), name=name, route_prefix="/")
    return f"http://{host}:{port}"


def main(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(
        prog="trl-rewards serve", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Reward model folder or Hub id (sequence classifier).")
    source.add_argument("--prm", help="Process reward model folder or Hub id.")
    source.add_argument("--config", help="YAML file describing a member or an ensemble (rewards/from_config.py).")
    parser.add_argument("--device", help="Device of the models in each replica (default: its GPU, else cpu).")
    parser.add_argument("--address", help="Ray cluster address (`auto` for a running one); default: start Ray here.")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host (0.0.0.0 to serve other machines).")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port.")
    parser.add_argument("--num_replicas", type=int, default=1, help="Replicas of the deployment.")
    parser.add_argument("--num_gpus_per_replica", type=float, default=0.0, help="GPUs reserved by each replica.")
    parser.add_argument("--max_batch_size", type=int, default=64, help="Most requests merged into one call.")
    parser.add_argument("--batch_wait_timeout_s", type=float, default=0.01, help="Longest wait to fill a batch.")
    args = parser.parse_args(argv)
    if args.num_replicas < 1 or args.max_batch_size < 1 or args.num_gpus_per_replica < 0:
        raise ValueError("--num_replicas and --max_batch_size must be >= 1, --num_gpus_per_replica >= 0")
    spec = {"model": args.model, "prm": args.prm, "config": args.config, "device": args.device}
    url = start(spec, address=args.address, host=args.host, port=args.port, num_replicas=args.num_replicas,
                num_gpus_per_replica=args.num_gpus_per_replica, max_batch_size=args.max_batch_size,
                batch_wait_timeout_s=args.batch_wait_timeout_s)  # fmt: skip
    print(f"serving at {url} (POST /score, /classify, /get_reward; GET /health); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return url
