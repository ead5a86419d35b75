"""`trl-rewards serve`: reward models, PRMs and ensembles as a Ray Serve application, for many trainer ranks.

One deployment serves one reward function of ours (a reward model folder with `--model`, a PRM with `--prm`, or any
member or ensemble described by `--config rewards.yaml`, see `rewards/from_config.py`) behind FastAPI, speaking
four protocols at once (see `scripts/serve_app.py` and `rewards/remote_protocols.py`): ours (`POST /v1/rewards`,
with per-member values of an ensemble and per-step values of a PRM; `/score` is an alias), vLLM's pooling API
(`POST /classify`, `POST /pooling`) and OpenRLHF's (`POST /get_reward`); `GET /health` reports what is served, the
replica's process id and the batches run. Request bodies are pydantic models: a malformed request gets a 422 whose
JSON names the field, and never reaches a replica's model. Ray Serve's own metrics are on its metrics port.

**Batching.** Ray Serve's dynamic batching (`@serve.batch`) merges concurrent requests (many ranks, small calls) into
one call of the reward function, which then micro-batches by length and token budget as usual. A reward function
whose scores depend on the other rows of a call (an ensemble that normalizes per batch, group or running statistics)
is never merged across requests: each request is scored alone, so a client gets the rewards it would get in process.
With `normalization="running"` the statistics live in one Ray actor shared by all replicas (see `serve_app.py`).

**Where it runs.** Without `--address`, a local Ray instance starts on this machine and serves on `--host`
(default `127.0.0.1`); `--address auto` (or a Ray address) deploys onto a running Ray cluster (`ray start --head` on
one node, `ray start --address HEAD:6379` on the others), where `--num_replicas` and `--num_gpus_per_replica` place
the replicas over the nodes.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

logger = logging.getLogger(__name__)


def start(spec: dict[str, Any], address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          name: str = "trl_rewards", route_prefix: str = "/", **app_options) -> str:  # fmt: skip
    """Starts (or joins) Ray, deploys the application and returns its base URL (route prefix included)."""
    apps = {name: {"spec": spec, "route_prefix": route_prefix, **app_options}}
    return start_many(apps, address=address, host=host, port=port)[name]


def start_many(apps: dict[str, dict[str, Any]], address: str | None = None, host: str = "127.0.0.1",
               port: int = 8000) -> dict[str, str]:  # fmt: skip
    """
    Deploys several applications on one Ray Serve instance at once (their replicas start concurrently).

    Args:
        apps (`dict[str, dict]`): `{name: {"spec": ..., "route_prefix": "/rm", **build_app options}}`.

    Returns:
        `dict[str, str]`: each application's base URL (`http://host:port/rm`).
    """
    import ray
    from ray import serve
    from ray.serve.api import RunTarget

    from .serve_app import build_app

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    targets, urls = [], {}
    for name, options in apps.items():
        options = dict(options)
        spec, prefix = options.pop("spec"), options.pop("route_prefix", "/")
        targets.append(RunTarget(build_app(spec, **options), name=name, route_prefix=prefix))
        urls[name] = f"http://{host}:{port}{prefix.rstrip('/')}"
    serve.run_many(targets)
    return urls


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
    parser.add_argument(
        "--num_cpus_per_replica", type=float,
        help="CPUs reserved by each replica, and its torch threads (default: Ray's 1: a CPU replica uses 1 thread).",
    )  # fmt: skip
    parser.add_argument("--max_batch_size", type=int, default=64, help="Most requests merged into one call.")
    parser.add_argument("--batch_wait_timeout_s", type=float, default=0.01, help="Longest wait to fill a batch.")
    parser.add_argument(
        "--too_long", default="truncate", choices=["truncate", "error"],
        help="Rows over a model's max_length: truncate (as in training) and report them, or a 422 naming the row.",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.num_replicas < 1 or args.max_batch_size < 1 or args.num_gpus_per_replica < 0:
        raise ValueError("--num_replicas and --max_batch_size must be >= 1, --num_gpus_per_replica >= 0")
    if args.num_cpus_per_replica is not None and not args.num_cpus_per_replica > 0:
        raise ValueError(f"--num_cpus_per_replica must be > 0, got {args.num_cpus_per_replica}")
    spec = {"model": args.model, "prm": args.prm, "config": args.config, "device": args.device}
    url = start(spec, address=args.address, host=args.host, port=args.port, num_replicas=args.num_replicas,
                num_gpus_per_replica=args.num_gpus_per_replica, num_cpus_per_replica=args.num_cpus_per_replica,
                max_batch_size=args.max_batch_size,
                batch_wait_timeout_s=args.batch_wait_timeout_s, too_long=args.too_long)  # fmt: skip
    print(f"serving at {url} (POST /v1/rewards, /classify, /pooling, /get_reward; GET /health); Ctrl-C stops",
          flush=True)  # fmt: skip
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return url
