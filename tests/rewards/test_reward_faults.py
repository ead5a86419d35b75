"""Bad input and concurrency through the Python API of the reward functions, the ensemble and the normalizers: each
bad value gets an error that names it (index, member, field), and nothing is silently turned into a number."""

import math
import threading
import time

import pytest
import torch
from transformers import LlamaForCausalLM

import trl_rewards.rewards.model_rewards as model_rewards
from trl_rewards.modeling import load_reward_model
from trl_rewards.rewards.ensemble import RewardEnsemble, RewardEnsembleMemberError
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.rewards.normalization import RunningZScore, batch_zscore
from trl_rewards.testing import save_tiny, tiny_llama_config, tiny_llama_reward_model, tiny_llama_tokenizer


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    return save_tiny(*tiny_llama_reward_model(), tmp_path_factory.mktemp("rm") / "tiny")


def test_path_built_reward_loads_once_and_counts_exactly_under_threads(reward_dir, monkeypatch):
    """4 threads call one path-built reward function at once. The model loads once (the loader is slowed so the
    threads overlap: without the lock each thread saw no model and loaded its own) and `num_truncated` is the sum
    of the 4 calls' truncations exactly: each call truncates its 3 long completions (max_length=12), so 4 x 3 = 12."""
    loads = []

    def slow_load(*args, **kwargs):
        loads.append(threading.get_ident())
        time.sleep(0.3)
        return load_reward_model(*args, **kwargs)

    monkeypatch.setattr(model_rewards, "load_reward_model", slow_load)
    reward = RewardModelFunction(reward_dir, max_length=12, device="cpu")
    prompts = ["Q: "] * 4
    completions = ["short", "a much longer answer", "another long answer here", "yet another long one"]
    results, errors = [], []

    def call():
        try:
            results.append(reward(prompts=prompts, completions=completions))
        except Exception as error:  # surfaced below, with the thread's error
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(loads) == 1
    assert reward.num_truncated == 12
    assert all(r == pytest.approx(results[0], abs=1e-6) for r in results)


@pytest.mark.parametrize(
    ("prompts", "completions", "error", "message"),
    [
        ("Q", ["a"], TypeError, "prompts must be a list, got str"),
        (["Q"], "a", TypeError, "completions must be a list, got str"),
        (["Q", "R"], ["a"], ValueError, "got 2 prompts but 1 completions"),
        (["Q", "R"], ["a", None], TypeError, "completion 1 is NoneType"),
        (["Q"], [3.5], TypeError, "completion 0 is float"),
    ],
)
def test_reward_function_rejects_bad_inputs_naming_them(reward_dir, prompts, completions, error, message):
    reward = RewardModelFunction(reward_dir, device="cpu")
    with pytest.raises(error, match=message):
        reward(prompts=prompts, completions=completions)


def test_reward_function_refuses_a_model_without_a_trained_head(tmp_path):
    """A causal LM loads into a sequence classifier with a random head, whose scores mean nothing; scoring it must
    fail with a reason instead of returning numbers."""
    tokenizer = tiny_llama_tokenizer()
    torch.manual_seed(0)
    path = save_tiny(LlamaForCausalLM(tiny_llama_config(tokenizer)), tokenizer, tmp_path / "lm")
    reward = RewardModelFunction(path, device="cpu")
    with pytest.raises(ValueError, match="holds no trained reward head"):
        reward(prompts=["Q"], completions=["a"])


class Fixed:
    def __init__(self, name, values):
        self.__name__ = name
        self.values = values

    def __call__(self, prompts, completions, **kwargs):
        return self.values


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["1.5", 0.0], r"member 'bad' returned '1.5' at index 0, not a number"),
        ([True, 0.0], r"member 'bad' returned True at index 0, not a number"),
        ([math.inf, 0.0], r"member 'bad' returned inf at index 0"),
        ([0.0], r"member 'bad' returned 1 rewards for 2 completions"),
        (3.0, r"member 'bad' returned float, not a list"),
    ],
)
def test_ensemble_names_the_member_and_index_of_a_bad_reward(values, message):
    ensemble = RewardEnsemble([Fixed("good", [1.0, 2.0]), Fixed("bad", values)])
    with pytest.raises(RewardEnsembleMemberError, match=message):
        ensemble(prompts=["p", "q"], completions=["a", "b"])


def test_normalizers_keep_nan_as_missing_and_reject_text():
    out = batch_zscore(torch.tensor([1.0, math.nan, 3.0]))
    assert math.isnan(out[1].item()) and out[0].item() == pytest.approx(-1.0, abs=1e-5)
    with pytest.raises(TypeError, match="reward 1 is 'x'"):
        RunningZScore().update([1.0, "x"])
