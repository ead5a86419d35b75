"""Reward functions under multi-process GRPO: two real processes on CPU (gloo), plain data parallel
(`torch.distributed.run`) and DeepSpeed ZeRO-3 (`accelerate launch --use_deepspeed`), each running real
`trl.GRPOTrainer` steps rewarded by a `RewardEnsemble(normalization="running")` of two reward models with different
tokenizers (given as folders and loaded lazily during training) and a rule-based answer check.

Checked on every rank: the model members ran on the expected device with whole weights (under ZeRO-3 too, where the
policy is partitioned and the same folder loaded for training is not whole); their rewards equal a plain
single-process rescoring of the texts they saw; the running statistics `(count, mean, M2)` are identical on both
ranks and equal those of the union of the rewards computed on both ranks (count = all samples scored, `None`
excluded); the per-member metrics reach the trainer's logs, averaged across ranks as TRL does.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trl_rewards.inference.sequence_scoring import RewardScorer
from trl_rewards.rewards.rule_rewards import AnswerCorrectnessReward
from trl_rewards.testing import save_tiny, tiny_bert_reward_model, tiny_llama_reward_model

pytestmark = [pytest.mark.multiprocess]
HERE = Path(__file__).resolve().parent
WORKER = HERE / "grpo_worker.py"
MODEL_MEMBERS = ("llama_rm", "bert_rm")
MEMBERS = (*MODEL_MEMBERS, "answer_correctness")
LAUNCHERS = ("plain", "zero3")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo_rms")
    return {
        "llama_rm": save_tiny(*tiny_llama_reward_model(seed=1), root / "llama_rm"),
        "bert_rm": save_tiny(*tiny_bert_reward_model(seed=2), root / "bert_rm"),
    }


@pytest.fixture(scope="module", params=LAUNCHERS)
def ranks(request, models, launcher, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"grpo_{request.param}")
    cmd = [
        *(launcher.torchrun() if request.param == "plain" else launcher.deepspeed(3)),
        str(WORKER),
        "--llama_rm",
        models["llama_rm"],
        "--bert_rm",
        models["bert_rm"],
        "--out",
        str(out),
    ]
    launcher.run(cmd, out, timeout=300)
    loaded = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return request.param, loaded


def test_two_ranks_and_the_expected_backend(ranks):
    launcher, (rank0, rank1) = ranks
    assert [rank0["rank"], rank1["rank"]] == [0, 1]
    for rank in (rank0, rank1):
        assert rank["world_size"] == 2 and rank["backend"] == "gloo"
        assert rank["deepspeed"] is (launcher == "zero3")
        assert len(rank["calls"]) == 2  # max_steps=2, one generation (and one reward call) per step
        assert all(call["zero3_enabled"] is (launcher == "zero3") for call in rank["calls"])
    # the ranks scored different prompts: each holds its own slice of the global batch
    assert {c["prompts"][0] for c in rank0["calls"]}.isdisjoint({c["prompts"][0] for c in rank1["calls"]})


def _expected_device(rank: int) -> tuple[str, str]:
    """(model device, scorer device) of a member built with the default device on this host, for `rank`."""
    if not torch.cuda.is_available():
        return "cpu", "cpu"
    if rank < torch.cuda.device_count():
        return f"cuda:{rank}", f"cuda:{rank}"
    return "cuda:0", "cuda"  # more ranks than GPUs: the current device


def test_members_on_the_expected_device_and_whole(ranks):
    launcher, loaded = ranks
    for rank in loaded:
        for name in MODEL_MEMBERS:
            member = rank["members"][name]
            assert (member["device"], member["scorer_device"]) == _expected_device(rank["rank"]), (name, member)
            assert member["loaded_in_training"] and member["whole"], (name, member)
        if launcher == "zero3":
            # ZeRO-3 was really active: the policy is partitioned, and so is a reward model loaded for training.
            assert rank["policy_partitioned"] is True
            assert rank["partitioned_load_whole"] is False
        else:
            assert rank["policy_partitioned"] is False and rank["partitioned_load_whole"] is None
    counts = {name: loaded[0]["members"][name]["num_parameters"] for name in MODEL_MEMBERS}
    assert all(rank["members"][name]["num_parameters"] == counts[name] for rank in loaded for name in counts)


def test_member_rewards_equal_a_single_process_rescoring(ranks, models, launcher):
    """Each rank scored its texts with the right model and tokenizer: a plain process gives the same rewards."""
    _, loaded = ranks
    scorers = {name: RewardScorer.from_pretrained(path) for name, path in models.items()}
    scorers["bert_rm"].max_length = 64  # as in the worker
    worker = launcher.module(WORKER)
    gold = dict(zip(*(worker.prompts()[column] for column in ("prompt", "answer")), strict=True))
    answer = AnswerCorrectnessReward()
    for rank in loaded:
        for call in rank["calls"]:
            prompts, completions = call["prompts"], call["completions"]
            for name, scorer in scorers.items():
                assert call["raw"][name] == pytest.approx(scorer.score(prompts, completions), abs=1e-5), name
            expected = answer(prompts, completions, answer=[gold[p] for p in prompts])
            assert [None if math.isnan(v) else v for v in call["raw"]["answer_correctness"]] == expected
    assert any(  # the prompt without a gold answer was scored somewhere, so `None` handling is exercised
        math.isnan(v) for rank in loaded for call in rank["calls"] for v in call["raw"]["answer_correctness"]
    )


def test_running_statistics_agree_across_ranks_and_cover_every_sample(ranks):
    _, (rank0, rank1) = ranks
    assert rank0["normalizers"] == rank1["normalizers"]  # bit-identical on both ranks
    total_scored = sum(len(call["prompts"]) for rank in (rank0, rank1) for call in rank["calls"])
    assert total_scored == 2 * 2 * 2  # 2 ranks x 2 calls x per_device_train_batch_size 2
    for name in MEMBERS:
        values = np.array([v for rank in (rank0, rank1) for call in rank["calls"] for v in call["raw"][name]])
        values = values[~np.isnan(values)]
        stats = rank0["normalizers"][name]
        if name in MODEL_MEMBERS:
            assert stats["count"] == total_scored
        assert stats["count"] == values.size
        assert stats["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
        assert stats["m2"] == pytest.approx(((values - values.mean()) ** 2).sum(), rel=1e-7, abs=1e-12)
        assert stats["frozen"] is False


def test_per_member_metrics_logged_and_averaged_across_ranks(ranks):
    _, loaded = ranks
    for rank in loaded:
        logs = rank["logs"]
        assert len(logs) == 2 and all(math.isfinite(entry["loss"]) for entry in logs)
        for step, entry in enumerate(logs):
            for name in MEMBERS:
                for stat in ("raw_mean", "normalized_mean", "missing_frac"):
                    assert f"ensemble/{name}/{stat}" in entry, (name, stat)
                # TRL averages a reward function's `log_metric` values over the ranks that logged one
                columns = [np.array(r["calls"][step]["raw"][name]) for r in loaded]
                means = [c[~np.isnan(c)].mean() for c in columns if not np.isnan(c).all()]
                assert entry[f"ensemble/{name}/raw_mean"] == pytest.approx(np.mean(means), rel=1e-5, abs=1e-6)
            assert "ensemble/disagreement" in entry and "rewards/ensemble/mean" in entry
            assert "llama_rm/num_truncated" in entry and "bert_rm/num_truncated" in entry
    for entry0, entry1 in zip(loaded[0]["logs"], loaded[1]["logs"], strict=True):  # gathered: the same on every rank
        ensemble0 = {key: value for key, value in entry0.items() if key.startswith("ensemble/")}
        assert ensemble0 == {key: value for key, value in entry1.items() if key.startswith("ensemble/")}
