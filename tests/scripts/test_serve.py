"""`trl-rewards serve` on a local Ray instance (started once for the module, three applications: a BT reward model, a
PRM and an ensemble), called through RemoteRewardFunction: the served rewards equal the in-process ones to 1e-5 in
every protocol, with an ensemble's per-member values and a PRM's per-step values; over-long rows are truncated or
dropped as the model's policy says and reported; shards keep their order and concurrent requests are merged; a GRPO
step runs with a remote reward function and an async ensemble holding a remote member beside a local one; a replica
runs `num_cpus_per_replica` torch threads; malformed requests get a 4xx naming the field."""

import asyncio
import math
import socket
import threading

import pytest
import torch
from trl.trainer.utils import is_async_callable

from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.model_rewards import ProcessRewardFunction, RewardModelFunction
from trl_rewards.rewards.remote_rewards import RemoteRewardFunction
from trl_rewards.testing import save_tiny, tiny_llama_reward_model, tiny_llama_token_classifier

pytestmark = pytest.mark.slow

PROMPTS = ["Q: 1+1? ", "Hello ", "", "Tell me a joke. "]
COMPLETIONS = ["A: 2", "there", "just text", "No."]
STEPPED = ["first step\nsecond", "only one", "\n\n", "a\nb\nc"]  # the third has no step: None
LONG = "x" * 90  # over the 64 positions of the served models


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import ray
    from ray import serve

    from trl_rewards.scripts.serve import start_many

    root = tmp_path_factory.mktemp("served")
    rm = save_tiny(*tiny_llama_reward_model(max_position_embeddings=64), root / "rm")
    prm = save_tiny(*tiny_llama_token_classifier(seed=3, max_position_embeddings=64), root / "prm")
    prm_spec = {"prm": prm, "model_style": "classifier", "name": "prm", "device": "cpu", "aggregation": "min"}
    ensemble_spec = {"members": [{"model": rm, "name": "rm", "device": "cpu"}, prm_spec], "normalization": "batch"}
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    options = {"max_batch_size": 16, "batch_wait_timeout_s": 0.2}
    apps = {
        "rm": {"spec": {"model": rm, "device": "cpu"}, "route_prefix": "/rm", "num_cpus_per_replica": 2, **options},
        "prm": {"spec": {"config": prm_spec}, "route_prefix": "/prm", **options},
        "ensemble": {"spec": {"config": ensemble_spec}, "route_prefix": "/ensemble", **options},
    }
    urls = start_many(apps, port=_free_port())
    local = {
        "rm": RewardModelFunction(rm, device="cpu"),
        "prm": ProcessRewardFunction(prm, model_style="classifier", device="cpu", aggregation="min", name="prm"),
    }
    local["ensemble"] = RewardEnsemble({"rm": local["rm"], "prm": local["prm"]}, normalization="batch")
    yield urls, local
    serve.shutdown()
    ray.shutdown()


@pytest.mark.parametrize("protocol", ["trl-rewards", "vllm-classify", "vllm-pooling", "openrlhf", "trl_rewards"])
def test_served_rewards_equal_in_process_ones(served, protocol):
    urls, local = served
    expected = local["rm"](prompts=PROMPTS, completions=COMPLETIONS)
    remote = RemoteRewardFunction(urls["rm"], protocol=protocol, model="rm")
    assert remote.score(PROMPTS, COMPLETIONS) == pytest.approx(expected, abs=1e-5)


def test_prm_step_values_equal_in_process_ones(served):
    urls, local = served
    remote = RemoteRewardFunction(urls["prm"])
    expected = local["prm"](prompts=PROMPTS, completions=STEPPED)
    assert remote.score(PROMPTS, STEPPED) == pytest.approx(expected, abs=1e-5)
    steps = remote.step_rewards(PROMPTS, STEPPED)
    assert steps[2] is None
    rows = [0, 1, 3]
    probs = local["prm"].scorer.step_probabilities([PROMPTS[i] for i in rows], [STEPPED[i].split("\n") for i in rows])
    for i, expected in zip(rows, probs, strict=True):
        assert [score for _, score in steps[i]] == pytest.approx(expected, abs=1e-5)
    assert [end for end, _ in steps[0]] == [len("first step"), len("first step\nsecond")]
    assert [end for end, _ in steps[3]] == [1, 3, 5]
    dense = RemoteRewardFunction(urls["prm"], step_rewards=True)  # a step reward function, for ProcessGRPOTrainer
    assert dense.returns_step_rewards and asyncio.run(dense(PROMPTS, STEPPED)) == steps
    assert dense.blocking()(PROMPTS, STEPPED) == steps
    with pytest.raises(ValueError, match="only protocol='trl-rewards' returns"):
        RemoteRewardFunction(urls["prm"], protocol="openrlhf", step_rewards=True)


def test_process_grpo_step_with_a_served_prm(served, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer
    from trl_rewards.trainers.process_grpo_config import ProcessGRPOConfig
    from trl_rewards.trainers.process_grpo_trainer import ProcessGRPOTrainer

    urls, local = served
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    args = ProcessGRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=6,
        max_steps=1, logging_steps=1, report_to=[], use_cpu=True, bf16=False, activation_checkpointing=False,
        save_strategy="no", seed=0, dataloader_pin_memory=False, beta=0.0,
    )  # fmt: skip
    dataset = Dataset.from_dict({"prompt": [f"What is {i} + {i}? " for i in range(4)]})
    served_prm = RemoteRewardFunction(urls["prm"], step_rewards=True, name="served_prm")
    trainer = ProcessGRPOTrainer(policy, local["rm"], args, dataset, processing_class=tokenizer,
                                 step_reward_funcs=served_prm)  # fmt: skip
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 1 and 0.0 <= logs[0]["steps/served_prm/mean_step_reward"] <= 1.0


def test_ensemble_member_values_equal_in_process_ones(served):
    urls, local = served
    ensemble = local["ensemble"]
    remote = RemoteRewardFunction(urls["ensemble"], shard=False)
    assert remote.score(PROMPTS, STEPPED) == pytest.approx(ensemble(prompts=PROMPTS, completions=STEPPED), abs=1e-5)
    raw, _ = ensemble.member_rewards(PROMPTS, STEPPED)
    normalized = ensemble.normalize(raw)
    for k, name in enumerate(["rm", "prm"]):
        for key, table in (("raw", raw), ("normalized", normalized)):
            got = [math.nan if v is None else v for v in remote.last_details["members"][name][key]]
            assert torch.tensor(got, dtype=torch.float64) == pytest.approx(table[:, k], abs=1e-5, nan_ok=True)
    with pytest.raises(ValueError, match="shard=False"):  # batch normalization: a call must not be split
        RemoteRewardFunction([urls["ensemble"], urls["ensemble"]]).score(PROMPTS, STEPPED)


def test_too_long_rows_follow_the_models_policy_and_are_reported(served):
    urls, local = served
    completions = ["fine", LONG]
    remote = RemoteRewardFunction(urls["rm"])
    assert remote.score(["", ""], completions) == pytest.approx(local["rm"](prompts=["", ""], completions=completions))
    assert remote.last_details["too_long"] == {"truncated": [1], "dropped": []}
    stepped = ["one\ntwo", "\n".join([LONG[:20]] * 4)]  # the steps alone do not fit: dropped, not a failed batch
    prm = RemoteRewardFunction(urls["prm"])
    rewards = prm.score(["", ""], stepped)
    assert rewards[1] is None and rewards[0] == pytest.approx(local["prm"](prompts=[""], completions=stepped[:1])[0])
    assert prm.last_details["too_long"] == {"truncated": [], "dropped": [1]}


def test_two_urls_shard_in_order_and_concurrent_calls_are_merged(served):
    import httpx

    urls, local = served
    url = urls["rm"]
    expected = local["rm"](prompts=PROMPTS * 2, completions=COMPLETIONS * 2)
    remote = RemoteRewardFunction(f"{url}, {url}/").blocking()
    assert remote(prompts=PROMPTS * 2, completions=COMPLETIONS * 2) == pytest.approx(expected, abs=1e-5)
    before = httpx.get(f"{url}/health").json()
    results = []
    threads = [threading.Thread(target=lambda: results.append(remote(prompts=PROMPTS, completions=COMPLETIONS)))
               for _ in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = httpx.get(f"{url}/health").json()
    assert len(results) == 8 and all(r == pytest.approx(expected[:4], abs=1e-5) for r in results)
    requests, calls = after["requests"] - before["requests"], after["calls"] - before["calls"]
    assert requests == 16 and calls < requests  # 8 calls x 2 shards, merged into fewer model calls


def test_grpo_step_with_a_remote_member_beside_a_local_one(served, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer

    urls, local = served
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    remote = RemoteRewardFunction(urls["rm"], name="remote_rm")
    ensemble = RewardEnsemble(
        {"remote_prm": RemoteRewardFunction(urls["prm"]), "local_rm": local["rm"]},
        normalization="none",
        name="ensemble",
    )  # an async member: the ensemble is async too, awaited on TRL's loop beside `remote`
    assert is_async_callable(ensemble)
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=6,
        max_steps=1, logging_steps=1, report_to=[], use_cpu=True, bf16=False, activation_checkpointing=False,
        save_strategy="no", seed=0, dataloader_pin_memory=False,
    )  # fmt: skip
    dataset = Dataset.from_dict({"prompt": [f"What is {i} + {i}? " for i in range(4)]})
    trainer = GRPOTrainer(model=policy, reward_funcs=[remote, ensemble], args=args, train_dataset=dataset,
                          processing_class=tokenizer)  # fmt: skip
    assert trainer._has_async_funcs  # the remote function runs on TRL's event loop
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 1 and math.isfinite(logs[0]["rewards/remote_rm/mean"])
    for member in ("remote_prm", "local_rm"):
        assert math.isfinite(logs[0][f"ensemble/{member}/raw_mean"])


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        ("/v1/rewards", {"completions": ["a"]}, "prompts"),
        ("/v1/rewards", {"prompts": ["p"]}, "completions"),
        ("/v1/rewards", {"prompts": ["p"], "completions": [3]}, "completions"),
        ("/score", {"prompts": "p", "completions": ["a"]}, "prompts"),
        ("/v1/rewards", {"prompts": ["p", "q"], "completions": ["a"]}, "prompts has 2 items but completions 1"),
        ("/get_reward", {"prompts": ["p"]}, "query"),
        ("/get_reward", {"query": "text"}, "query"),
        ("/get_reward", {"query": [None]}, "query"),
        ("/classify", {"model": "rm"}, "input"),
        ("/classify", {"input": [1, 2]}, "input"),
        ("/pooling", {"input": ["a"], "truncate_prompt_tokens": -5}, "truncate_prompt_tokens"),
        ("/pooling", {"input": ["a"], "task": "token_classify"}, "task"),
    ],
)
def test_malformed_requests_get_a_4xx_naming_the_field(served, endpoint, body, field):
    import httpx

    url = served[0]["rm"]
    response = httpx.post(url + endpoint, json=body, timeout=30)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.text
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # the replica is still serving


def test_replica_threads_follow_num_cpus_per_replica(served):
    import httpx

    from trl_rewards.scripts.serve_app import build_app

    health = httpx.get(f"{served[0]['rm']}/health", timeout=30).json()
    assert health["torch_threads"] == 2 and isinstance(health["niceness"], int)
    with pytest.raises(ValueError, match="num_cpus_per_replica must be > 0"):
        build_app({"model": "unused"}, num_cpus_per_replica=0)


def test_too_long_error_policy_names_the_row():
    from trl_rewards.scripts.serve_app import RewardService, TooLongError

    model, tokenizer = tiny_llama_reward_model(max_position_embeddings=64)
    service = RewardService(RewardModelFunction(model, tokenizer, device="cpu", name="rm"), too_long="error")
    with pytest.raises(TooLongError, match=r"row 1 is longer than max_length=64 of rm \(too_long='error'\)"):
        service.check_lengths(["", ""], ["short", LONG])
    report = RewardService(service.reward).respond(["", ""], ["short", LONG])
    assert report["too_long"]["truncated"] == [1] and None not in report["rewards"]
    assert service.reward.scorer.n_truncated == 1  # the check borrowed the counter; only the scoring counted


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num_replicas", "0"], "--num_replicas and --max_batch_size must be >= 1"),
        (["--num_cpus_per_replica", "0"], "--num_cpus_per_replica must be > 0, got 0.0"),
    ],
)
def test_serve_command_rejects_bad_sizes_before_starting_ray(argv, message):
    from trl_rewards.scripts.serve import main as serve_main

    with pytest.raises(ValueError, match=message):
        serve_main(["--model", "runs/rm", *argv])
