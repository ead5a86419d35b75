"""Tests for `trl_rewards.rewards.normalization`: literal tensors with hand derivations, numpy references, two
processes."""

import json
import math
import os
import socket
import warnings
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import TrainerControl, TrainerState, TrainingArguments

from trl_rewards.callbacks import NormalizerCheckpointCallback
from trl_rewards.rewards.normalization import (
    NORMALIZERS_FILENAME,
    RunningZScore,
    batch_zscore,
    check_double_normalization,
    group_zscore,
    restore_normalizers,
    sigmoid_squash,
)

nan = math.nan


def _np_zscore(x, eps, axis=0):
    x = np.asarray(x, dtype=np.float64)
    return (x - np.nanmean(x, axis=axis, keepdims=True)) / (np.nanstd(x, axis=axis, keepdims=True) + eps)


# ---------------------------------------------------------------------------------------------------- batch_zscore


def test_batch_zscore_by_hand():
    """[1, 3, nan]: mean 2, population std sqrt(((1-2)^2 + (3-2)^2) / 2) = 1, so z = [-1, 1, nan] with eps=0."""
    z = batch_zscore(torch.tensor([1.0, 3.0, nan]), eps=0.0)
    torch.testing.assert_close(z, torch.tensor([-1.0, 1.0, nan]), equal_nan=True)


@pytest.mark.parametrize(
    "values", [[1.0, 2.0, nan, 4.0, 8.0], [1e8 + 0.1, 1e8 + 0.2, nan, 1e8 + 0.4], [-3.5, -3.5, 0.0, nan, nan, 12.25]]
)
def test_batch_zscore_matches_numpy(values):
    z = batch_zscore(torch.tensor(values, dtype=torch.float64), eps=1e-6)
    np.testing.assert_allclose(z.numpy(), _np_zscore(values, 1e-6), rtol=1e-10, atol=1e-12)


def test_batch_zscore_per_column_matches_numpy():
    """(N, K) rewards: each member (column) is normalized on its own."""
    values = [[1.0, 10.0], [2.0, nan], [nan, 30.0], [5.0, 50.0]]
    z = batch_zscore(torch.tensor(values, dtype=torch.float64), eps=1e-6)
    np.testing.assert_allclose(z.numpy(), _np_zscore(values, 1e-6), rtol=1e-10, atol=1e-12)


def test_batch_zscore_degenerate_batches():
    """One valid value: std 0, so (x - x) / eps = 0. All NaN: no statistics, all NaN. Constant: 0 / eps = 0."""
    torch.testing.assert_close(
        batch_zscore(torch.tensor([nan, 7.0, nan])), torch.tensor([nan, 0.0, nan]), equal_nan=True
    )
    assert torch.isnan(batch_zscore(torch.tensor([nan, nan]))).all()
    torch.testing.assert_close(batch_zscore(torch.tensor([2.0, 2.0, 2.0])), torch.zeros(3))


def test_batch_zscore_keeps_float_dtype_and_promotes_ints():
    assert batch_zscore(torch.tensor([1.0, 2.0], dtype=torch.bfloat16)).dtype == torch.bfloat16
    torch.testing.assert_close(batch_zscore(torch.tensor([0, 2]), eps=0.0), torch.tensor([-1.0, 1.0]))


def test_negative_eps_is_rejected():
    with pytest.raises(ValueError, match="eps must be >= 0, got -1"):
        batch_zscore(torch.tensor([1.0, 2.0]), eps=-1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        RunningZScore(eps=-1e-3)


# ---------------------------------------------------------------------------------------------------- group_zscore


def test_group_zscore_2x3_by_hand():
    """
    Two prompts, three completions each (eps=0).
    Group [1, 2, 3]: mean 2, var (1 + 0 + 1) / 3 = 2/3, so z = [-sqrt(3/2), 0, sqrt(3/2)].
    Group [10, 10, 40]: mean 20, var (100 + 100 + 400) / 3 = 200, so z = [-10, -10, 20] / sqrt(200)
    = [-1/sqrt(2), -1/sqrt(2), sqrt(2)].
    """
    z = group_zscore(torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0], dtype=torch.float64), group_size=3, eps=0.0)
    s, r = math.sqrt(1.5), math.sqrt(2.0)
    torch.testing.assert_close(z, torch.tensor([-s, 0.0, s, -1 / r, -1 / r, r], dtype=torch.float64))


def test_group_zscore_nan_and_constant_group():
    """Group [1, nan, 3] -> [-1, nan, 1] (mean 2, std 1); constant group [5, 5, 5] -> 0 / (0 + eps) = 0."""
    z = group_zscore(torch.tensor([1.0, nan, 3.0, 5.0, 5.0, 5.0]), group_size=3, eps=1e-6)
    torch.testing.assert_close(z, torch.tensor([-1 / (1 + 1e-6), nan, 1 / (1 + 1e-6), 0.0, 0.0, 0.0]), equal_nan=True)


def test_group_zscore_matches_numpy_per_group_and_member():
    values = np.array([[1.0, 0.0], [4.0, 1.0], [nan, 1.0], [2.0, nan], [-2.0, 0.0], [8.0, 1.0]])
    z = group_zscore(torch.tensor(values), group_size=2, eps=1e-6)
    expected = _np_zscore(values.reshape(3, 2, 2), 1e-6, axis=1).reshape(6, 2)
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_group_zscore_errors():
    with pytest.raises(ValueError, match="rewards length 6 is not divisible by group_size=4"):
        group_zscore(torch.zeros(6), group_size=4)
    with pytest.raises(ValueError, match="group_size must be a positive int, got 0"):
        group_zscore(torch.zeros(6), group_size=0)
    with pytest.raises(ValueError, match="at least one dimension"):
        group_zscore(torch.tensor(1.0), group_size=1)


# ---------------------------------------------------------------------------------------------------- sigmoid_squash


def test_sigmoid_squash_by_hand():
    """temperature 2, center 2: x=0 -> sigmoid(-1) = 1 / (1 + e); x=2 -> 0.5; x=6 -> sigmoid(2) = 1 / (1 + e^-2)."""
    y = sigmoid_squash(torch.tensor([0.0, 2.0, 6.0, nan], dtype=torch.float64), temperature=2.0, center=2.0)
    expected = torch.tensor([1 / (1 + math.e), 0.5, 1 / (1 + math.exp(-2)), nan], dtype=torch.float64)
    torch.testing.assert_close(y, expected, equal_nan=True)


def test_sigmoid_squash_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        sigmoid_squash(torch.tensor([1.0]), temperature=0)


# ---------------------------------------------------------------------------------------------------- RunningZScore

BATCHES = [[1.0, 2.0, nan], [10.0, 20.0, 30.0, nan, 4.0], [-5.5], [nan, nan], [1e3 + 0.25, 1e3 - 0.75]]


def test_running_matches_numpy_on_concatenation():
    """Chan's merge of per-batch (count, mean, M2) equals numpy's two-pass statistics of all batches together."""
    normalizer = RunningZScore()
    for batch in BATCHES:
        normalizer.update(torch.tensor(batch, dtype=torch.float32 if len(batch) == 3 else torch.float64))
    union = np.concatenate([np.array(b) for b in BATCHES])
    assert normalizer.count == 9
    assert normalizer.mean == pytest.approx(np.nanmean(union), rel=0, abs=1e-10)
    assert normalizer.var == pytest.approx(np.nanvar(union), rel=1e-12, abs=1e-10)


def test_running_accepts_lists_with_none():
    """TRL reward functions return `list[float | None]`; None counts as missing: stats of [2, 4] are mean 3, var 1."""
    normalizer = RunningZScore()
    normalizer.update([2.0, None, 4.0])
    assert (normalizer.count, normalizer.mean, normalizer.var) == (2, 3.0, 1.0)


def test_running_first_normalize_equals_batch_zscore():
    """The current batch is included in the statistics, so on a fresh normalizer both coincide."""
    values = torch.tensor([0.5, nan, 3.0, -1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(RunningZScore().normalize(values), batch_zscore(values), equal_nan=True)


def test_running_before_two_samples_only_centers():
    """After one sample (5) the std is treated as 1: normalize([7]) = 7 - 5 = 2; nothing seen yet: identity."""
    assert RunningZScore().normalize([3.0], update=False).tolist() == [3.0]
    normalizer = RunningZScore()
    assert normalizer.normalize([5.0]).tolist() == [0.0]
    assert normalizer.normalize([7.0, None], update=False).tolist()[0] == 2.0
    assert normalizer.count == 1


def test_running_normalize_without_update_keeps_stats():
    """Stats of [0, 2, 4]: mean 2, var 8/3. normalize([5], update=False) = 3 / (sqrt(8/3) + eps)."""
    normalizer = RunningZScore(eps=1e-6)
    normalizer.update(torch.tensor([0.0, 2.0, 4.0]))
    z = normalizer.normalize(torch.tensor([5.0], dtype=torch.float64), update=False)
    assert z.item() == pytest.approx(3 / (math.sqrt(8 / 3) + 1e-6), rel=1e-12)
    assert normalizer.count == 3


def test_running_freeze_and_unfreeze():
    normalizer = RunningZScore()
    normalizer.update([1.0, 3.0])
    normalizer.freeze()
    frozen_z = normalizer.normalize([100.0, 200.0])  # would move the mean if it updated
    assert (normalizer.count, normalizer.mean, normalizer.var) == (2, 2.0, 1.0)
    torch.testing.assert_close(frozen_z, torch.tensor([98.0, 198.0]) / (1 + 1e-6))
    normalizer.unfreeze()
    normalizer.update([5.0])
    assert (normalizer.count, normalizer.mean) == (3, 3.0)


def test_running_state_dict_round_trip_and_errors():
    source = RunningZScore()
    for batch in BATCHES:
        source.update(batch)
    source.freeze()
    target = RunningZScore()
    target.load_state_dict(source.state_dict())
    assert target.state_dict() == source.state_dict() and target.frozen
    with pytest.raises(KeyError, match=r"missing \['m2'\]"):
        target.load_state_dict({"count": 1, "mean": 0.0, "frozen": False})
    with pytest.raises(ValueError, match="negative count or m2"):
        target.load_state_dict({"count": 2, "mean": 0.0, "m2": -1.0, "frozen": False})


def test_running_save_load_json(tmp_path):
    source = RunningZScore()
    for batch in BATCHES:
        source.update(batch)
    path = tmp_path / "normalizer.json"
    source.save(path)
    assert json.loads(path.read_text()) == source.state_dict()
    loaded = RunningZScore().load(path)
    assert loaded.state_dict() == source.state_dict()  # exact: JSON writes floats with repr


def test_running_as_metrics():
    """[1, 3]: mean 2, population std 1."""
    normalizer = RunningZScore()
    normalizer.update([1.0, 3.0])
    assert normalizer.as_metrics("rm") == {"rm/mean": 2.0, "rm/std": 1.0, "rm/count": 2.0}


# ---------------------------------------------------------------------------------------------------- checkpointing


def _two_normalizers():
    first, second = RunningZScore(), RunningZScore()
    first.update([1.0, 2.0, 4.0])
    second.update([-10.0, nan, 10.0])
    return {"reward_model": first, "length": second}


def test_callback_writes_into_checkpoint_and_restores(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    checkpoint_dir = tmp_path / "checkpoint-5"
    checkpoint_dir.mkdir()  # the Trainer creates it before calling on_save
    normalizers = _two_normalizers()
    NormalizerCheckpointCallback(normalizers).on_save(args, TrainerState(global_step=5), TrainerControl())

    payload = json.loads((checkpoint_dir / NORMALIZERS_FILENAME).read_text())
    assert payload == {name: n.state_dict() for name, n in normalizers.items()}
    assert sorted(os.listdir(checkpoint_dir)) == [NORMALIZERS_FILENAME]  # no temporary file left behind

    restored = restore_normalizers(checkpoint_dir, {"reward_model": RunningZScore(), "length": RunningZScore()})
    assert {name: n.state_dict() for name, n in restored.items()} == payload


def test_callback_only_main_process_writes(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    state = TrainerState(global_step=3, is_world_process_zero=False)
    NormalizerCheckpointCallback(_two_normalizers()).on_save(args, state, TrainerControl())
    assert not (tmp_path / "checkpoint-3" / NORMALIZERS_FILENAME).exists()


def test_restore_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no {NORMALIZERS_FILENAME} in"):
        restore_normalizers(tmp_path, {"reward_model": RunningZScore()})
    (tmp_path / NORMALIZERS_FILENAME).write_text(json.dumps({"reward_model": RunningZScore().state_dict()}))
    with pytest.raises(KeyError, match=r"no normalizer named \['length'\]"):
        restore_normalizers(tmp_path, {"reward_model": RunningZScore(), "length": RunningZScore()})


# ------------------------------------------------------------------------------------------------ double normalization


def _grpo_advantages(rewards_per_func, num_generations, scale_rewards="group", aggregation="sum_then_normalize"):
    """TRL 1.16 `GRPOTrainer._generate_and_score_completions` advantages, unit weights, no unscorable rows."""
    from trl.trainer.utils import nanstd

    if aggregation == "sum_then_normalize":
        rewards = rewards_per_func.nansum(dim=1)
        grouped = rewards.view(-1, num_generations)
        mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
        std = (
            nanstd(grouped, dim=1).repeat_interleave(num_generations) if scale_rewards == "group" else nanstd(rewards)
        )
        advantages = rewards - mean
        return advantages if scale_rewards == "none" else advantages / (std + 1e-4)
    grouped = rewards_per_func.view(-1, num_generations, rewards_per_func.shape[1])
    reward_k = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)) / (nanstd(grouped, dim=1, keepdim=True) + 1e-4)
    rewards = reward_k.view(-1, rewards_per_func.shape[1]).nansum(dim=1)
    return (rewards - rewards.nanmean()) / (nanstd(rewards) + 1e-4)


REWARDS = torch.tensor([[3.0, 0.0], [5.0, 1.0], [11.0, 1.0], [-2.0, 0.0], [4.0, 1.0], [6.0, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("scale_rewards", ["group", "batch"])
def test_single_reward_zscore_is_cancelled_by_grpo_scaling(scale_rewards):
    """The docstring's claim: one member, z = a r + b with a > 0; GRPO's (A - mean_g) / std cancels a and b."""
    raw = REWARDS[:, :1]
    ours = _grpo_advantages(batch_zscore(raw), 3, scale_rewards)
    torch.testing.assert_close(ours, _grpo_advantages(raw, 3, scale_rewards), rtol=1e-3, atol=1e-3)


def test_single_reward_zscore_sets_scale_without_grpo_scaling():
    """scale_rewards="none": GRPO only centers, so our z-score multiplies the advantage by a = 1 / (std + eps)."""
    raw = REWARDS[:, :1]
    scale = 1 / (np.nanstd(raw.numpy()) + 1e-6)
    ours = _grpo_advantages(batch_zscore(raw), 3, "none")
    torch.testing.assert_close(ours, _grpo_advantages(raw, 3, "none") * scale)


def test_normalize_then_sum_cancels_per_member_zscore():
    ours = _grpo_advantages(batch_zscore(REWARDS), 3, aggregation="normalize_then_sum")
    raw = _grpo_advantages(REWARDS, 3, aggregation="normalize_then_sum")
    torch.testing.assert_close(ours, raw, rtol=1e-3, atol=1e-3)


def _grpo_config(tmp_path, **kwargs):
    from trl import GRPOConfig

    # activation_checkpointing given explicitly: TRL 1.16 sets the deprecated gradient_checkpointing, and
    # transformers 5.23 then raises a FutureWarning (an error under this project's pytest settings).
    return GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, activation_checkpointing=False, **kwargs)


def _expect_warnings(config, normalizes, *patterns):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages = check_double_normalization(config, normalizes)
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == messages
    assert len(messages) == len(patterns), messages
    for message, pattern in zip(messages, patterns, strict=True):
        assert pattern in message
    return messages


def test_check_double_normalization_on_grpo_configs(tmp_path):
    _expect_warnings(_grpo_config(tmp_path), True, "scale_rewards='group' divides the summed reward")
    _expect_warnings(_grpo_config(tmp_path, scale_rewards="batch"), True, "scale_rewards='batch'")
    _expect_warnings(_grpo_config(tmp_path, scale_rewards=False), True)  # mapped to "none": ours is the only scale
    _expect_warnings(_grpo_config(tmp_path), False)
    _expect_warnings(
        _grpo_config(tmp_path, scale_rewards="none", multi_objective_aggregation="normalize_then_sum"),
        True,
        "normalize_then_sum' z-scores every reward function",
    )


def test_check_double_normalization_on_rloo_config(tmp_path):
    from trl import RLOOConfig

    kwargs = {"output_dir": str(tmp_path), "use_cpu": True, "bf16": False, "activation_checkpointing": False}
    _expect_warnings(RLOOConfig(**kwargs), True)
    _expect_warnings(RLOOConfig(normalize_advantages=True, **kwargs), True, "normalize_advantages=True")


@pytest.mark.parametrize(
    ("config", "patterns"),
    [
        (SimpleNamespace(scale_rewards=True), ["scale_rewards='group'"]),  # older TRL: bool, no aggregation field
        (SimpleNamespace(scale_rewards=False), []),
        (SimpleNamespace(), []),
        (SimpleNamespace(scale_rewards="median"), ["unknown scale_rewards='median'"]),
        (SimpleNamespace(multi_objective_aggregation="max"), ["unknown multi_objective_aggregation='max'"]),
    ],
)
def test_check_double_normalization_on_other_configs(config, patterns):
    _expect_warnings(config, True, *patterns)


# ---------------------------------------------------------------------------------------------------- two processes

RANK_BATCHES = {
    0: [[1.0, 2.0, nan, 4.0], [100.0]],
    1: [[-3.0, nan, 7.5, 0.25, 9.0, 11.0], [nan, nan]],  # a rank with nothing valid still joins the collective
}
PROBE = [0.0, 10.0, nan]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank, world_size, port, out_dir):
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        synced, local = RunningZScore(), RunningZScore(sync=False)
        for batch in RANK_BATCHES[rank]:
            synced.update(torch.tensor(batch))
            local.update(torch.tensor(batch))
        probe = synced.normalize(torch.tensor(PROBE, dtype=torch.float64), update=False).tolist()
        result = {"synced": synced.state_dict(), "var": synced.var, "local": local.state_dict(), "probe": probe}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.multiprocess
def test_running_zscore_syncs_across_two_gloo_processes(tmp_path):
    mp.spawn(_dist_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]

    assert results[0]["synced"] == results[1]["synced"]  # bit-identical on both ranks
    union = np.concatenate([np.array(b) for rank in range(2) for b in RANK_BATCHES[rank]])
    assert results[0]["synced"]["count"] == 4 + 5  # valid values on rank 0 and rank 1
    assert results[0]["synced"]["mean"] == pytest.approx(np.nanmean(union), rel=0, abs=1e-10)
    assert results[0]["var"] == pytest.approx(np.nanvar(union), rel=1e-12, abs=1e-10)
    expected_probe = (np.array(PROBE) - np.nanmean(union)) / (np.nanstd(union) + 1e-6)
    np.testing.assert_allclose(results[0]["probe"], expected_probe, rtol=1e-10)
    assert results[0]["probe"][:2] == results[1]["probe"][:2]

    for rank in range(2):  # sync=False: each rank only sees its own batches
        own = np.concatenate([np.array(b) for b in RANK_BATCHES[rank]])
        assert results[rank]["local"]["count"] == np.count_nonzero(~np.isnan(own))
        assert results[rank]["local"]["mean"] == pytest.approx(np.nanmean(own), rel=1e-12)


def test_running_std_floor_bounds_a_lone_success():
    """1,000 zero rewards, frozen: std 0. The old scale `0 + eps` turned the first success into z = 1 / 1e-6 = 1e6;
    with the floor, z = (1 - 0) / (max(0, 0.01) + 1e-6) ≈ 99.99. Unfrozen, one success among 1,001 samples:
    mean = 1/1001, std = sqrt(p(1-p)) with p = 1/1001 ≈ 0.0316 > floor, so z = (1 - p) / (0.0316 + 1e-6) ≈ 31.6."""
    frozen = RunningZScore()
    frozen.update([0.0] * 1000)
    frozen.freeze()
    assert frozen.normalize([1.0]).item() == pytest.approx(1 / (0.01 + 1e-6), rel=1e-6)
    live = RunningZScore()
    live.update([0.0] * 1000)
    p = 1 / 1001
    assert live.normalize([1.0]).item() == pytest.approx((1 - p) / (math.sqrt(p * (1 - p)) + 1e-6), rel=1e-6)
    assert RunningZScore(min_std=0.0).scale == 1.0  # fewer than 2 samples: no scale yet
    with pytest.raises(ValueError, match="min_std must be >= 0"):
        RunningZScore(min_std=-1.0)


def test_running_infinite_reward_does_not_poison_the_statistics():
    """One `inf` used to make the mean inf and every later output NaN. It is now left out and normalized to NaN,
    with one warning; the next batch normalizes as if the inf had never been seen."""
    normalizer, reference = RunningZScore(), RunningZScore()
    with pytest.warns(UserWarning, match="infinite reward"):
        out = normalizer.normalize([1.0, math.inf, 3.0])
    assert math.isnan(out[1].item()) and math.isfinite(out[0].item())
    reference.normalize([1.0, None, 3.0])
    torch.testing.assert_close(normalizer.normalize([2.0, 5.0]), reference.normalize([2.0, 5.0]))
    assert normalizer.count == 4


@pytest.mark.parametrize(
    ("values", "message"),
    [("1.0", "rewards must be a tensor or a sequence"), ([1.0, "2"], "reward 1 is '2'"), ([True], "reward 0 is True")],
)
def test_running_rejects_non_numeric_rewards(values, message):
    with pytest.raises(TypeError, match=message):
        RunningZScore().normalize(values)


def test_callback_restores_the_resumed_checkpoint_on_train_begin(tmp_path):
    """Resuming used to need a hand-written `restore_normalizers` call (forgotten: the statistics silently restart
    from empty). The callback now restores `checkpoint-{global_step}` when the Trainer begins at a loaded step, and
    leaves a fresh run (step 0) alone."""
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    (tmp_path / "checkpoint-5").mkdir()
    saved = _two_normalizers()
    NormalizerCheckpointCallback(saved).on_save(args, TrainerState(global_step=5), TrainerControl())
    fresh = {"reward_model": RunningZScore(), "length": RunningZScore()}
    NormalizerCheckpointCallback(fresh).on_train_begin(args, TrainerState(global_step=0), TrainerControl())
    assert fresh["reward_model"].count == 0
    NormalizerCheckpointCallback(fresh).on_train_begin(args, TrainerState(global_step=5), TrainerControl())
    assert {k: n.state_dict() for k, n in fresh.items()} == {k: n.state_dict() for k, n in saved.items()}
