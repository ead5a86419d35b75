"""`trl-rewards serve` on a local Ray instance, called through RemoteRewardFunction in each protocol: the served
rewards equal the in-process ones, shards keep their order, concurrent requests are merged into batches, and a dead
server is named after the retries."""

import socket
import threading

import pytest

from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.rewards.remote_rewards import RemoteRewardFunction, _shards
from trl_rewards.testing import save_tiny, tiny_llama_reward_model

PROMPTS = ["Q: 1+1? ", "Hello ", "", "Tell me a joke. "]
COMPLETIONS = ["A: 2", "there", "just text", "No."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import ray
    from ray import serve

    from trl_rewards.scripts.serve import start

    model_dir = save_tiny(*tiny_llama_reward_model(), tmp_path_factory.mktemp("served") / "rm")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    url = start({"model": model_dir, "device": "cpu"}, port=_free_port(), max_batch_size=16, batch_wait_timeout_s=0.2)
    yield url, model_dir
    serve.shutdown()
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["trl_rewards", "vllm", "openrlhf"])
def test_served_rewards_equal_in_process_ones(server, protocol):
    url, model_dir = server
    local = RewardModelFunction(model_dir, device="cpu")(prompts=PROMPTS, completions=COMPLETIONS)
    remote = RemoteRewardFunction(url, protocol=protocol, model="rm")
    assert remote(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(local, abs=1e-5)


@pytest.mark.slow
def test_two_urls_shard_in_order_and_concurrent_calls_are_merged(server):
    import httpx

    url, model_dir = server
    local = RewardModelFunction(model_dir, device="cpu")(prompts=PROMPTS * 2, completions=COMPLETIONS * 2)
    remote = RemoteRewardFunction(f"{url}, {url}/")
    assert remote(prompts=PROMPTS * 2, completions=COMPLETIONS * 2) == pytest.approx(local, abs=1e-5)
    before = httpx.get(f"{url}/health").json()
    results = []
    threads = [threading.Thread(target=lambda: results.append(remote(prompts=PROMPTS, completions=COMPLETIONS)))
               for _ in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = httpx.get(f"{url}/health").json()
    assert len(results) == 8 and all(r == pytest.approx(local[:4], abs=1e-5) for r in results)
    requests, calls = after["requests"] - before["requests"], after["calls"] - before["calls"]
    assert requests == 16 and calls < requests  # 8 calls x 2 shards, merged into fewer model calls


def test_dead_server_is_named_after_retries():
    remote = RemoteRewardFunction(f"http://127.0.0.1:{_free_port()}", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(RuntimeError, match=r"/score failed after 2 attempts"):
        remote(prompts=["Q"], completions=["a"])


def test_client_checks_and_shards():
    assert [list(s) for s in _shards(5, 2)] == [[0, 1, 2], [3, 4]]
    assert [list(s) for s in _shards(1, 3)] == [[0]]
    with pytest.raises(ValueError, match="needs model="):
        RemoteRewardFunction("http://x", protocol="vllm")
    with pytest.raises(ValueError, match="protocol must be one of"):
        RemoteRewardFunction("http://x", protocol="grpc")
    conversational = [[{"role": "user", "content": "hi"}]]
    with pytest.raises(ValueError, match="takes text"):
        RemoteRewardFunction("http://x", protocol="openrlhf")._payload(conversational, ["a"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        ("/score", {"completions": ["a"]}, "prompts"),
        ("/score", {"prompts": ["p"]}, "completions"),
        ("/score", {"prompts": ["p"], "completions": [3]}, "completions"),
        ("/score", {"prompts": "p", "completions": ["a"]}, "prompts"),
        ("/score", {"prompts": ["p", "q"], "completions": ["a"]}, "prompts has 2 items but completions 1"),
        ("/get_reward", {"prompts": ["p"]}, "query"),
        ("/get_reward", {"query": "text"}, "query"),
        ("/get_reward", {"query": [None]}, "query"),
        ("/classify", {"model": "rm"}, "input"),
        ("/classify", {"input": [1, 2]}, "input"),
    ],
)
def test_malformed_requests_get_a_4xx_naming_the_field(server, endpoint, body, field):
    import httpx

    url, _ = server
    response = httpx.post(url + endpoint, json=body, timeout=30)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # the replica is still serving
