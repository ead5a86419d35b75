"""Load test of `trl-rewards serve`: many concurrent clients, every request must succeed; latency percentiles.

A local Ray Serve application (a tiny BERT reward model from `trl_rewards.testing`, so the figure is the server's
and the protocol's, not a big model's) receives `--requests` `POST /v1/rewards` calls of `--rows` completions each
from `--clients` concurrent `httpx.AsyncClient`s (one connection each, one request in flight each). Every answer is
checked (HTTP 200, one reward per completion, a number); anything else counts as a failure. The run stops by itself
after `--max_seconds` (requests not sent by then are reported as such). Printed: requests, failures, requests/s,
p50 / p90 / p99 / max latency, the batches the replicas ran (Ray Serve merges concurrent requests), and the load
average of the machine before and after.

    nice -n 10 python benchmarks/serve_load.py                      # 2,000 requests, 32 clients
    python benchmarks/serve_load.py --requests 200 --clients 8      # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def run_clients(url: str, args) -> tuple[list[float], list[str], int]:
    import httpx

    latencies, failures, sent = [], [], 0
    deadline = time.monotonic() + args.max_seconds
    counter = iter(range(args.requests))

    async def client(k: int):
        nonlocal sent
        async with httpx.AsyncClient(timeout=args.timeout, limits=httpx.Limits(max_connections=1)) as http:
            for i in counter:
                if time.monotonic() > deadline:
                    return
                sent += 1
                completions = [f"answer {i} from client {k}, part {j}" for j in range(args.rows)]
                body = {"prompts": [f"Question {i}: "] * args.rows, "completions": completions}
                start = time.perf_counter()
                try:
                    response = await http.post(f"{url}/v1/rewards", json=body)
                    rewards = response.json().get("rewards") if response.status_code == 200 else None
                    if not (isinstance(rewards, list) and len(rewards) == args.rows
                            and all(isinstance(r, float) for r in rewards)):  # fmt: skip
                        failures.append(f"request {i}: HTTP {response.status_code}: {response.text[:200]}")
                        continue
                except Exception as error:  # a refused or dropped connection is a failure like any other
                    failures.append(f"request {i}: {type(error).__name__}: {error}")
                    continue
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client(k) for k in range(args.clients)))
    return latencies, failures, sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rows", type=int, default=4, help="completions per request")
    parser.add_argument("--num_replicas", type=int, default=1)
    parser.add_argument("--max_batch_size", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--max_seconds", type=float, default=480.0, help="stop sending after this long")
    args = parser.parse_args(argv)

    import httpx
    import ray
    from ray import serve

    from trl_rewards.scripts.serve import start
    from trl_rewards.testing import save_tiny, tiny_bert_reward_model

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny(*tiny_bert_reward_model(seed=0), os.path.join(tmp, "rm"))
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            url = start({"model": model, "device": "cpu"}, port=_free_port(), num_replicas=args.num_replicas,
                        max_batch_size=args.max_batch_size, batch_wait_timeout_s=0.01)  # fmt: skip
            httpx.post(f"{url}/v1/rewards", json={"prompts": ["a"], "completions": ["b"]}, timeout=120)  # warm up
            before = httpx.get(f"{url}/health").json()
            start_time = time.perf_counter()
            latencies, failures, sent = asyncio.run(run_clients(url, args))
            wall = time.perf_counter() - start_time
            after = httpx.get(f"{url}/health").json()
        finally:
            serve.shutdown()
            ray.shutdown()
    load_after = os.getloadavg()
    ms = [1000 * x for x in latencies]
    print(f"command: python benchmarks/serve_load.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {os.cpu_count()} CPUs; load average (1, 5, 15 min) before {load_before}, after {load_after}")
    print()
    print("| requests sent | answered | failures | clients | rows/request | replicas | wall s | requests/s | "
          "p50 ms | p90 ms | p99 ms | max ms |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    if ms:
        print(f"| {sent} | {len(ms)} | {len(failures)} | {args.clients} | {args.rows} | {args.num_replicas} | "
              f"{wall:.1f} | {len(ms) / wall:.1f} | {percentile(ms, 50):.0f} | {percentile(ms, 90):.0f} | "
              f"{percentile(ms, 99):.0f} | {max(ms):.0f} |")  # fmt: skip
    print()
    print(f"not sent (stopped at --max_seconds): {args.requests - sent}; mean latency {statistics.mean(ms):.0f} ms"
          if ms else "no request answered")  # fmt: skip
    if after.get("pid") == before.get("pid"):  # one replica answered both: its counters are exact
        print(f"model calls on that replica: {after['calls'] - before['calls']} for "
              f"{after['requests'] - before['requests']} requests (Ray Serve batching)")  # fmt: skip
    for failure in failures[:10]:
        print("FAILURE", failure)


if __name__ == "__main__":
    main()
