"""Two replicas per deployment on one local Ray instance (started once for the module): killing one replica's
process (by its PID) in the middle of a stream of calls loses no reward and changes none (the client retries, the
other replica serves), and an ensemble with `normalization="running"` served by both replicas gives the rewards of
one in-process ensemble seeing the calls in the same order (the statistics live in one actor, not per replica)."""

import os
import signal
import socket
import threading
import time

import pytest

from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.rewards.remote_rewards import RemoteRewardFunction
from trl_rewards.testing import save_tiny, tiny_bert_reward_model, tiny_llama_reward_model

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _calls(n: int) -> list[tuple[list[str], list[str]]]:
    return [([f"Q{i}: ", "P "], [f"answer {'x' * (i % 5)}", f"no {i}"]) for i in range(n)]


def _replica_pids(url: str, want: int = 2, tries: int = 60) -> dict[int, dict]:
    """`{pid: health}` of the replicas behind `url`, found by asking /health until `want` distinct ones answered."""
    import httpx

    seen = {}
    for _ in range(tries):
        health = httpx.get(f"{url}/health", timeout=30).json()
        seen[health["pid"]] = health
        if len(seen) >= want:
            break
    return seen


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import ray
    from ray import serve

    from trl_rewards.scripts.serve import start_many

    root = tmp_path_factory.mktemp("replicas")
    rm = save_tiny(*tiny_llama_reward_model(seed=1), root / "rm")
    bert = save_tiny(*tiny_bert_reward_model(seed=2), root / "bert")
    members = [{"model": rm, "name": "llama", "device": "cpu"}, {"model": bert, "name": "bert", "device": "cpu"}]
    running = {"members": members, "normalization": "running"}
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    options = {"num_replicas": 2, "max_batch_size": 8, "batch_wait_timeout_s": 0.05}
    apps = {
        "rm": {"spec": {"model": rm, "device": "cpu"}, "route_prefix": "/rm", **options},
        "running": {"spec": {"config": running}, "route_prefix": "/running", **options},
    }
    urls = start_many(apps, port=_free_port())
    yield urls, rm, bert
    serve.shutdown()
    ray.shutdown()


def test_killing_a_replica_mid_stream_loses_no_reward(served):
    urls, rm, _ = served
    local = RewardModelFunction(rm, device="cpu")
    calls = _calls(40)
    expected = [local(prompts=p, completions=c) for p, c in calls]
    pids = _replica_pids(urls["rm"])
    assert len(pids) == 2, "two replicas answer /health"
    remote = RemoteRewardFunction(urls["rm"], retries=6, backoff=0.2, timeout=60).blocking()
    undisturbed = [remote(prompts=p, completions=c) for p, c in calls[:5]]
    assert all(u == pytest.approx(e, abs=1e-5) for u, e in zip(undisturbed, expected, strict=False))

    results: dict[int, list] = {}

    def stream(worker: int):
        for i in range(worker, len(calls), 4):
            results[i] = remote(prompts=calls[i][0], completions=calls[i][1])

    threads = [threading.Thread(target=stream, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    while len(results) < 6:  # mid-stream
        time.sleep(0.05)
    victim = next(iter(pids))
    os.kill(victim, signal.SIGKILL)
    done_at_kill = len(results)
    for thread in threads:
        thread.join()  # a call that raised would leave its index out of `results`
    assert done_at_kill < len(calls)
    assert sorted(results) == list(range(len(calls))), "a call was lost"
    for i, rewards in results.items():
        assert rewards == pytest.approx(expected[i], abs=1e-5), i
    print(f"killed replica {victim} after {done_at_kill} calls; per-URL attempts: {remote.url_stats}")


def test_running_normalization_is_one_stream_across_replicas(served):
    import httpx

    urls, rm, bert = served
    local = RewardEnsemble(
        {"llama": RewardModelFunction(rm, device="cpu"), "bert": RewardModelFunction(bert, device="cpu")},
        normalization="running",
    )
    remote = RemoteRewardFunction(urls["running"], shard=False).blocking()
    before = {pid: h["requests"] for pid, h in _replica_pids(urls["running"]).items()}
    assert len(before) == 2
    for i, (prompts, completions) in enumerate(_calls(12)):
        assert remote(prompts=prompts, completions=completions) == pytest.approx(
            local(prompts=prompts, completions=completions), abs=1e-5
        ), i
        members = remote.last_details["members"]
        raw, _ = local.member_rewards(prompts, completions)
        assert members["bert"]["raw"] == pytest.approx(raw[:, 1].tolist(), abs=1e-5)
    after = {pid: h["requests"] for pid, h in _replica_pids(urls["running"]).items()}
    assert after.keys() == before.keys()
    served_by = {pid: after[pid] - before[pid] for pid in before}
    assert all(count > 0 for count in served_by.values()), f"one replica served every call: {served_by}"
    assert httpx.get(f"{urls['running']}/health").json()["rows_independent"] is False
