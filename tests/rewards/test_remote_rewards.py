"""RemoteRewardFunction against small in-process HTTP servers (no Ray): async and sync call sites, every protocol's
wire format, fail-over away from a dead URL and back once it recovers, retries on 5xx but not on 4xx,
`on_error="none"`, PRM step mode, pickling, and membership of a RewardEnsemble beside a local member (the blocking
twin in a sync ensemble, the async function itself in an async one, with the same rewards)."""

import asyncio
import json
import pickle
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from trl.trainer.utils import is_async_callable

from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.remote_protocols import BadResponseError, parse_rewards, request_body
from trl_rewards.rewards.remote_rewards import RemoteRewardError, RemoteRewardFunction, _shards

PROMPTS = ["Q: 1+1? ", "Hello ", "", "Tell me a joke. ", "x", "yy"]
COMPLETIONS = ["A: 2", "there\nfriend", "just text", "No.", "a\nbb\nccc", "z"]


def rule(prompt: str, completion: str) -> float:
    return len(completion) + len(prompt) / 100


class Stub:
    """A reward server on 127.0.0.1 answering every protocol with `rule`; `fail` makes the next requests fail."""

    def __init__(self, port: int = 0, rows_independent: bool = True):
        self.hits, self.fail, self.rows_independent = 0, [], rows_independent
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                stub.hits += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = stub.fail.pop(0) if stub.fail else 200
                answer = stub.answer(self.path, body) if status == 200 else {"detail": "stub failure"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str, body: dict) -> dict:
        if path == "/v1/rewards":
            rewards = [rule(p or "", c) for p, c in zip(body["prompts"], body["completions"], strict=True)]
            steps = [{"ends": [len(c)], "scores": [0.5]} for c in body["completions"]]
            return {"rewards": rewards, "steps": steps, "rows_independent": self.rows_independent,
                    "too_long": {"truncated": [0], "dropped": []}}  # fmt: skip
        if path == "/get_reward":
            return {"rewards": [rule("", q) for q in body["query"]]}
        data = [rule("", text) for text in body["input"]]
        if path == "/classify":
            return {"data": [{"index": i, "probs": [r], "num_classes": 1} for i, r in reversed(list(enumerate(data)))]}
        return {"data": [{"index": i, "object": "pooling", "data": [r]} for i, r in enumerate(data)]}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stub():
    server = Stub()
    yield server
    server.close()


EXPECTED = [rule(p, c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]


def test_async_for_trl_and_blocking_for_sync_call_sites(stub):
    remote = RemoteRewardFunction(stub.url, name="rm")
    assert is_async_callable(remote) and not is_async_callable(remote.blocking())
    assert asyncio.run(remote(prompts=PROMPTS, completions=COMPLETIONS)) == pytest.approx(EXPECTED)
    assert remote.blocking()(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(EXPECTED)
    assert remote.score(PROMPTS, COMPLETIONS) == pytest.approx(EXPECTED)
    assert remote.last_details["too_long"]["truncated"] == [0]  # the server's per-row report, kept
    clone = pickle.loads(pickle.dumps(remote.blocking()))
    assert clone(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(EXPECTED)


def test_async_calls_run_concurrently_on_one_loop(stub):
    remote = RemoteRewardFunction([stub.url, stub.url])

    async def many():
        return await asyncio.gather(*(remote(prompts=PROMPTS, completions=COMPLETIONS) for _ in range(8)))

    assert all(r == pytest.approx(EXPECTED) for r in asyncio.run(many()))
    assert stub.hits == 16  # 8 calls x 2 shards


@pytest.mark.parametrize("protocol", ["vllm-classify", "vllm-pooling", "openrlhf", "vllm"])
def test_text_protocols(stub, protocol):
    remote = RemoteRewardFunction(stub.url, protocol=protocol, model="rm").blocking()
    expected = [rule("", p + c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    assert remote(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(expected)


def test_wire_formats():
    assert request_body("vllm-pooling", "m", ["a"], ["b"]) == {
        "model": "m", "input": ["ab"], "task": "classify", "use_activation": False}  # fmt: skip
    assert request_body("vllm-classify", "m", [None], ["b"])["use_activation"] is False
    assert parse_rewards("vllm-pooling", {"data": [{"index": 0, "data": [[1.5]]}]}, 1) == [1.5]
    with pytest.raises(BadResponseError, match="1 label"):
        parse_rewards("vllm-pooling", {"data": [{"index": 0, "data": [0.1, 0.9]}]}, 1)
    with pytest.raises(BadResponseError, match="returned 1 rewards for 2"):
        parse_rewards("trl-rewards", {"rewards": [1.0]}, 2)
    with pytest.raises(BadResponseError, match="not a number"):
        parse_rewards("openrlhf", {"rewards": ["1.0"]}, 1)
    with pytest.raises(BadResponseError, match="not a 'vllm-classify' response"):
        parse_rewards("vllm-classify", {"rewards": [1.0]}, 1)


def test_fail_over_from_a_dead_url_and_back_when_it_recovers(stub):
    dead_port = _free_port()
    dead = f"http://127.0.0.1:{dead_port}"
    remote = RemoteRewardFunction([dead, stub.url], retries=2, backoff=0.01, cooldown=60.0, timeout=5).blocking()
    assert remote(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(EXPECTED)  # dead shard moved over
    assert remote.url_stats[dead] == {"ok": 0, "failed": 1} and remote.url_stats[stub.url]["ok"] == 2
    assert remote.healthy_urls() == [stub.url]
    assert remote(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(EXPECTED)
    assert remote.url_stats[dead]["failed"] == 1 and remote.url_stats[stub.url]["ok"] == 3  # not tried in cool-down
    revived = Stub(port=dead_port)
    try:
        remote._down_until[dead] -= (
            60.0  # as if the 60 s cool-down had passed (no sleep: a loaded machine can't skew it)
        )
        assert remote(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(EXPECTED)
        assert remote.url_stats[dead]["ok"] == 1 and revived.hits == 1  # back in rotation after the cool-down
    finally:
        revived.close()


def test_5xx_is_retried_4xx_is_not(stub):
    remote = RemoteRewardFunction(stub.url, retries=2, backoff=0.01).blocking()
    stub.fail = [503, 500]
    assert remote(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(EXPECTED)
    assert stub.hits == 3
    stub.fail = [422]
    with pytest.raises(RemoteRewardError, match=r"/v1/rewards refused the request: HTTP 422"):
        remote(prompts=PROMPTS, completions=COMPLETIONS)
    assert stub.hits == 4


def test_dead_server_raises_naming_it_or_gives_none_when_asked():
    dead = f"http://127.0.0.1:{_free_port()}"
    remote = RemoteRewardFunction(dead, retries=1, backoff=0.01, timeout=2).blocking()
    with pytest.raises(RemoteRewardError, match=rf"failed after 2 attempts; {dead}/v1/rewards: ConnectError"):
        remote(prompts=["Q"], completions=["a"])
    lenient = RemoteRewardFunction(dead, retries=1, backoff=0.01, timeout=2, on_error="none", name="rm").blocking()
    logged = {}
    assert lenient(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged.__setitem__) == [None] * 6
    assert lenient.num_failed == 6 and logged["rm/failed_samples"] == 6.0


def test_row_dependent_server_refuses_sharding_and_steps_are_read():
    stub = Stub(rows_independent=False)
    try:
        with pytest.raises(ValueError, match="shard=False"):
            RemoteRewardFunction([stub.url, stub.url]).score(PROMPTS, COMPLETIONS)
        whole = RemoteRewardFunction([stub.url, stub.url], shard=False)
        assert whole.score(PROMPTS, COMPLETIONS) == pytest.approx(EXPECTED)
        steps = whole.step_rewards(PROMPTS, COMPLETIONS)
        assert steps == [[(len(c), 0.5)] for c in COMPLETIONS]
    finally:
        stub.close()


def _local(prompts, completions, **kwargs):
    return [float(len(p)) for p in prompts]


def test_member_of_an_ensemble_beside_a_local_member(stub):
    remote = RemoteRewardFunction(stub.url, name="remote")
    ensemble = RewardEnsemble({"remote": remote.blocking(), "local": _local}, normalization="none")
    assert not is_async_callable(ensemble)
    expected = [(r + len(p)) / 2 for r, p in zip(EXPECTED, PROMPTS, strict=True)]
    assert ensemble(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(expected)


def test_async_member_makes_an_async_ensemble_equal_to_the_blocking_one(stub):
    remote = RemoteRewardFunction([stub.url, stub.url], name="remote")
    options = {"aggregation": "weighted_mean", "weights": [2.0, 1.0], "normalization": "batch", "name": "e"}
    ensemble = RewardEnsemble({"remote": remote, "local": _local}, **options)
    blocking = RewardEnsemble({"remote": remote.blocking(), "local": _local}, **options)
    assert is_async_callable(ensemble) and not is_async_callable(blocking)  # TRL awaits the first one
    logged, logged_blocking = {}, {}
    rewards = asyncio.run(ensemble(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged.__setitem__))
    expected = blocking(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged_blocking.__setitem__)
    assert rewards == pytest.approx(expected) and logged == pytest.approx(logged_blocking)
    assert logged["remote/failed_samples"] == 0.0 and stub.hits == 4  # 2 calls x 2 shards
    clone = pickle.loads(pickle.dumps(ensemble))  # what TRL's async rollout workers need
    assert is_async_callable(clone) and asyncio.run(clone(prompts=PROMPTS, completions=COMPLETIONS)) == rewards
    raw, _ = clone.member_rewards(PROMPTS, COMPLETIONS)  # sync code (the server, evaluation) still gets its table
    assert raw[:, 0].tolist() == pytest.approx(EXPECTED)


def test_options_are_checked():
    assert [list(s) for s in _shards(5, 2)] == [[0, 1, 2], [3, 4]]
    assert [list(s) for s in _shards(1, 3)] == [[0]]
    for kwargs, message in [
        ({"protocol": "vllm-pooling"}, "needs model="),
        ({"protocol": "grpc"}, "protocol must be one of"),
        ({"on_error": "skip"}, "on_error must be one of"),
        ({"retries": -1}, "retries must be"),
        ({"timeout": 0}, "timeout must be > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            RemoteRewardFunction("http://x", **kwargs)
    with pytest.raises(ValueError, match="urls is empty"):
        RemoteRewardFunction(" , ")
    conversational = [[{"role": "user", "content": "hi"}]]
    with pytest.raises(ValueError, match="takes text"):
        request_body("openrlhf", None, conversational, ["a"])
    with pytest.raises(ValueError, match="step scores need protocol='trl-rewards'"):
        RemoteRewardFunction("http://x", protocol="openrlhf").step_rewards(["a"], ["b"])
