"""RewardEnsemble with async members: it becomes async exactly when TRL's test says a member is; it awaits the async
members concurrently while the sync ones run in a worker thread; rewards, metrics, `None` and errors are those of the
same ensemble with blocking members; it pickles, calibrates, serves the PPO adapter and runs a real GRPO step."""

import asyncio
import functools
import math
import pickle
import threading
import time

import pytest
import torch
from trl.trainer.utils import is_async_callable as trl_is_async_callable

from trl_rewards.rewards.ensemble import AsyncRewardEnsemble, RewardEnsemble, RewardEnsembleMemberError
from trl_rewards.rewards.reward_calls import is_async_callable, run_blocking

PROMPTS = ["What is 1 + 1? ", "Hi ", "Add 3 and 4. ", "x"]
COMPLETIONS = ["2", "hello there", "7", "no"]


def length(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


class Lookup:
    """A sync member: a fixed table of rewards (None = missing), its calling thread recorded."""

    def __init__(self, name, values, delay=0.0):
        self.__name__, self.values, self.delay, self.threads, self.spans = name, values, delay, [], []

    def __call__(self, prompts, completions, **kwargs):
        self.threads.append(threading.get_ident())
        start = time.perf_counter()
        time.sleep(self.delay)
        self.spans.append((start, time.perf_counter()))
        return self.values[: len(completions)]


class AsyncLookup(Lookup):
    """The async twin of `Lookup` (what a RemoteRewardFunction looks like to TRL)."""

    async def __call__(self, prompts, completions, **kwargs):
        self.threads.append(threading.get_ident())
        start = time.perf_counter()
        await asyncio.sleep(self.delay)
        self.spans.append((start, time.perf_counter()))
        if isinstance(self.values, Exception):
            raise self.values
        return self.values[: len(completions)]


async def async_length(prompts, completions, **kwargs):
    return length(prompts, completions)


def _pair(values_a, values_b, **options):
    """The same ensemble twice: with async member `b`, and with its blocking twin."""
    async_ = RewardEnsemble([Lookup("a", values_a), AsyncLookup("b", values_b)], **options)
    sync = RewardEnsemble([Lookup("a", values_a), Lookup("b", values_b)], **options)
    return async_, sync


def test_async_exactly_when_trl_sees_an_async_member():
    class SyncClass:
        def __call__(self, prompts, completions, **kwargs):
            return length(prompts, completions)

    forms = [length, async_length, functools.partial(async_length), functools.partial(length), SyncClass(),
             AsyncLookup("x", [1.0]), Lookup("y", [1.0])]  # fmt: skip
    assert [is_async_callable(f) for f in forms] == [trl_is_async_callable(f) for f in forms]
    assert [is_async_callable(f) for f in forms] == [False, True, True, False, False, True, False]
    sync = RewardEnsemble([length, SyncClass()])
    assert type(sync) is RewardEnsemble and not trl_is_async_callable(sync)
    for members in ([length, AsyncLookup("x", [1.0])], {"a": length, "p": functools.partial(async_length)}):
        ensemble = RewardEnsemble(members)
        assert isinstance(ensemble, AsyncRewardEnsemble) and trl_is_async_callable(ensemble)
        assert isinstance(ensemble, RewardEnsemble)
    outer = RewardEnsemble({"inner": RewardEnsemble([length, async_length]), "rule": length})
    assert trl_is_async_callable(outer)  # an async ensemble is an async member


@pytest.mark.parametrize(
    "options",
    [
        {"normalization": "batch"},
        {"normalization": "none", "aggregation": "weighted_mean", "weights": [1.0, 3.0]},
        {"normalization": "group", "num_generations": 2, "aggregation": "uncertainty"},
        {"normalization": "running"},
    ],
)
def test_same_rewards_metrics_and_none_handling_as_the_blocking_ensemble(options):
    values_a, values_b = [1.0, None, 3.0, 0.5], [2.0, 4.0, None, -1.0]
    async_, sync = _pair(values_a, values_b, **options)
    for _ in range(2):  # twice: running statistics carry over identically
        logged_async, logged_sync = {}, {}
        got = asyncio.run(async_(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged_async.__setitem__))
        expected = sync(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged_sync.__setitem__)
        assert got == pytest.approx(expected, nan_ok=True)
        assert logged_async == pytest.approx(logged_sync) and async_.last_metrics == pytest.approx(sync.last_metrics)
    raw, failed = async_.member_rewards(PROMPTS, COMPLETIONS)  # the sync entry point of an async ensemble
    expected_raw, _ = sync.member_rewards(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(raw, expected_raw, equal_nan=True)
    assert failed == []


def test_async_members_overlap_each_other_and_the_sync_members():
    """Three members sleeping 0.4 s each: one sync (in a worker thread), two async (awaited together). Their sleeps
    overlap: each one starts before any of them ends (called in turn, each would start after the previous ended),
    whatever the machine's load."""
    sync_member = Lookup("local", [1.0] * 4, delay=0.4)
    slow = [AsyncLookup(f"remote{i}", [float(i)] * 4, delay=0.4) for i in range(2)]
    ensemble = RewardEnsemble([sync_member, *slow], normalization="none")

    async def call():
        loop_thread = threading.get_ident()
        start = time.perf_counter()
        rewards = await ensemble(prompts=PROMPTS, completions=COMPLETIONS)
        return rewards, time.perf_counter() - start, loop_thread

    rewards, seconds, loop_thread = asyncio.run(call())
    assert rewards == pytest.approx([2 / 3] * 4)
    spans = [span for member in (sync_member, *slow) for span in member.spans]
    assert len(spans) == 3 and max(start for start, _ in spans) < min(end for _, end in spans), spans
    assert sync_member.threads[0] != loop_thread and slow[0].threads[0] == loop_thread


def test_member_errors_are_those_of_the_blocking_ensemble():
    broken = AsyncLookup("remote", RuntimeError("server down"))
    strict = RewardEnsemble([Lookup("a", [1.0] * 4), broken])
    with pytest.raises(RewardEnsembleMemberError, match="member 'remote' raised RuntimeError: server down"):
        asyncio.run(strict(prompts=PROMPTS, completions=COMPLETIONS))
    short = RewardEnsemble([Lookup("a", [1.0] * 4), AsyncLookup("remote", [1.0])])
    with pytest.raises(RewardEnsembleMemberError, match="member 'remote' returned 1 rewards for 4 completions"):
        asyncio.run(short(prompts=PROMPTS, completions=COMPLETIONS))
    lenient = RewardEnsemble([Lookup("a", [1.0, 2.0, 3.0, 4.0]), broken], on_member_error="skip", name="e")
    logged = {}
    rewards = asyncio.run(lenient(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged.__setitem__))
    expected = RewardEnsemble([Lookup("a", [1.0, 2.0, 3.0, 4.0])], name="e")(prompts=PROMPTS, completions=COMPLETIONS)
    assert rewards == pytest.approx(expected)
    assert logged["e/remote/failed"] == 1.0 and logged["e/a/failed"] == 0.0 and logged["e/remote/missing_frac"] == 1.0
    everyone = RewardEnsemble([broken], on_member_error="skip")
    with pytest.raises(RewardEnsembleMemberError, match="every member failed"):
        asyncio.run(everyone(prompts=PROMPTS, completions=COMPLETIONS))


def test_pickles_and_calibrates_inside_and_outside_a_running_loop():
    ensemble = RewardEnsemble([Lookup("a", [1.0, 2.0, 3.0, 4.0]), AsyncLookup("b", [4.0, 0.0, 2.0, 2.0])])
    clone = pickle.loads(pickle.dumps(ensemble))
    assert type(clone) is AsyncRewardEnsemble and list(clone.members) == ["a", "b"]
    call = {"prompts": PROMPTS, "completions": COMPLETIONS}
    assert asyncio.run(clone(**call)) == pytest.approx(asyncio.run(ensemble(**call)))
    data = {"prompts": PROMPTS, "completions": COMPLETIONS}
    members = [Lookup("a", [1.0, 2.0, 3.0, 4.0]), AsyncLookup("b", [4.0, 0.0, 2.0, 2.0])]
    calibrated = RewardEnsemble(members, normalization="calibrated", calibration_data=data)
    assert calibrated.calibration["b"] == pytest.approx((2.0, math.sqrt(2.0)))

    async def build_in_a_coroutine():  # the async member is awaited on a fresh loop, not on this (running) one
        return RewardEnsemble(members, normalization="calibrated", calibration_data=data)

    assert asyncio.run(build_in_a_coroutine()).calibration == calibrated.calibration
    assert run_blocking(calibrated(**call)) == pytest.approx(asyncio.run(calibrated(**call)))


def test_ppo_adapter_awaits_an_async_ensemble():
    from trl_rewards.rewards.ppo import RewardFunctionModule
    from trl_rewards.testing import tiny_llama_tokenizer

    tokenizer = tiny_llama_tokenizer()
    async_, sync = _pair([1.0, 2.0, 3.0, 4.0], [0.0, 3.0, 1.0, 1.0])
    ids = tokenizer(["What is 1 + 1? The answer is 2.", "Hi there", "Add 3 and 4. 7", "x y"], padding=True,
                    return_tensors="pt")["input_ids"]  # fmt: skip
    module, reference = RewardFunctionModule(async_, tokenizer), RewardFunctionModule(sync, tokenizer)
    got = module.rewards(ids, tokenizer.pad_token_id, 4)
    torch.testing.assert_close(got, reference.rewards(ids, tokenizer.pad_token_id, 4))
    assert module.pop_metrics() == pytest.approx(reference.pop_metrics())


def test_grpo_step_awaits_an_async_ensemble(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from trl_rewards.testing import tiny_llama_config, tiny_llama_tokenizer

    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    remote = AsyncLookup("remote", [1.0, -1.0, 0.5, 2.0], delay=0.05)
    ensemble = RewardEnsemble([length, remote], name="ensemble")
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=6,
        max_steps=1, logging_steps=1, report_to=[], use_cpu=True, bf16=False, activation_checkpointing=False,
        save_strategy="no", seed=0, dataloader_pin_memory=False,
    )  # fmt: skip
    dataset = Dataset.from_dict({"prompt": [f"What is {i} + {i}? " for i in range(4)]})
    trainer = GRPOTrainer(model=policy, reward_funcs=[ensemble], args=args, train_dataset=dataset,
                          processing_class=tokenizer)  # fmt: skip
    assert trainer._has_async_funcs  # TRL put the ensemble on its event loop
    trainer.train()
    (log,) = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(remote.threads) == 1 and math.isfinite(log["rewards/ensemble/mean"])
    assert log["ensemble/remote/raw_mean"] == pytest.approx(0.625)
    assert log["ensemble/length/raw_mean"] == pytest.approx(ensemble.last_metrics["ensemble/length/raw_mean"])
