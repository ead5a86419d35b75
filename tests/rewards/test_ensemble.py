"""RewardEnsemble: the math by hand on literal member outputs, None handling, loud member failures (and the opt-in
skip), the metrics it logs, option checks and the trainer-config check."""

import logging
import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trl_rewards.callbacks import NormalizerCheckpointCallback
from trl_rewards.rewards.ensemble import RewardEnsemble, RewardEnsembleMemberError
from trl_rewards.rewards.normalization import RunningZScore, batch_zscore, group_zscore

S = math.sqrt


class Literal:
    """A member that returns fixed rewards (module level, so that it pickles)."""

    def __init__(self, name, values):
        self.__name__ = name
        self.values = values

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        return list(self.values[: len(prompts)]) if isinstance(self.values, list) else self.values


class Sequenced:
    """A member that returns the next of several fixed reward lists at each call."""

    def __init__(self, name, calls):
        self.__name__ = name
        self.calls = [list(values) for values in calls]

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        return self.calls.pop(0)


class Failing:
    __name__ = "flaky"

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        raise RuntimeError("server down")


def _run(ensemble, n=4, **kwargs):
    return ensemble(prompts=["p"] * n, completions=["c"] * n, completion_ids=None, **kwargs)


# A = [1, 2, 3, None]: mean 2, population std sqrt(2/3)          -> z_A = [-sqrt(3/2), 0, sqrt(3/2), NaN]
# B = [10, 10, 40, 20]: mean 20, deviations [-10, -10, 20, 0],
#     variance (100 + 100 + 400 + 0) / 4 = 150, std sqrt(150)    -> z_B = [-sqrt(2/3), -sqrt(2/3), 2 sqrt(2/3), 0]
A = Literal("a", [1.0, 2.0, 3.0, None])
B = Literal("b", [10.0, 10.0, 40.0, 20.0])
ZA = [-S(3 / 2), 0.0, S(3 / 2), math.nan]
ZB = [-S(2 / 3), -S(2 / 3), 2 * S(2 / 3), 0.0]


def test_batch_zscore_then_mean_by_hand():
    """Row 3 has only B: its reward is z_B alone (A's None is left out, not counted as 0)."""
    out = _run(RewardEnsemble([A, B], eps=0.0))
    expected = [(ZA[0] + ZB[0]) / 2, (ZA[1] + ZB[1]) / 2, (ZA[2] + ZB[2]) / 2, ZB[3]]
    assert out == pytest.approx(expected, abs=1e-12)


def test_weighted_mean_min_median_uncertainty_by_hand():
    """With normalization="none" the members' raw rewards are combined directly:
    rows x = (1, 2, 4) and (5, 0, 1); weights (1, 1, 2).
    weighted_mean: (1 + 2 + 8) / 4 = 2.75 and (5 + 0 + 2) / 4 = 1.75;
    min: 1 and 0; median: 2 and 1;
    uncertainty (lambda 0.5): mean 7/3 minus 0.5 * population std sqrt(14/9) (deviations -4/3, -1/3, 5/3),
    and mean 2 minus 0.5 * sqrt(14/3) (deviations 3, -2, -1)."""
    members = [Literal("x", [1.0, 5.0]), Literal("y", [2.0, 0.0]), Literal("z", [4.0, 1.0])]
    run = {
        "weighted_mean": dict(weights=[1, 1, 2]),
        "min": {},
        "median": {},
        "uncertainty": dict(uncertainty_lambda=0.5),
        "mean": {},
    }
    expected = {
        "weighted_mean": [2.75, 1.75],
        "min": [1.0, 0.0],
        "median": [2.0, 1.0],
        "uncertainty": [7 / 3 - 0.5 * S(14 / 9), 2.0 - 0.5 * S(14 / 3)],
        "mean": [7 / 3, 2.0],
    }
    for aggregation, kwargs in run.items():
        ensemble = RewardEnsemble(members, aggregation=aggregation, normalization="none", **kwargs)
        assert _run(ensemble, n=2) == pytest.approx(expected[aggregation], abs=1e-12), aggregation
    # numpy references for the nonlinear ones
    rows = np.array([[1.0, 2.0, 4.0], [5.0, 0.0, 1.0]])
    assert expected["median"] == list(np.median(rows, axis=1))
    assert expected["uncertainty"] == pytest.approx(list(rows.mean(1) - 0.5 * rows.std(1)), abs=1e-12)


def test_missing_members_per_aggregation():
    """Row 0: only y (4.0); row 1: x=1, y=3; row 2: nobody -> None. An even count takes the mean of the middle two.
    The weighted mean renormalizes by the weights of the members present: row 1 = (2 * 1 + 1 * 3) / 3."""
    members = [Literal("x", [None, 1.0, None]), Literal("y", [4.0, 3.0, math.nan])]
    cases = {
        "mean": [4.0, 2.0, None],
        "median": [4.0, 2.0, None],
        "min": [4.0, 1.0, None],
        # lambda 0.5; std of (1, 3) is 1; the lone member of row 0 is charged that mean spread too: 4 - 0.5 * 1
        "uncertainty": [3.5, 2.0 - 0.5, None],
    }
    for aggregation, expected in cases.items():
        assert _run(RewardEnsemble(members, aggregation=aggregation, normalization="none"), n=3) == expected
    weighted = RewardEnsemble(members, aggregation="weighted_mean", weights=[2, 1], normalization="none")
    assert _run(weighted, n=3) == pytest.approx([4.0, 5 / 3, None])
    only_zero_weight = RewardEnsemble(members, aggregation="weighted_mean", weights=[1, 0], normalization="none")
    assert _run(only_zero_weight, n=3) == [None, 1.0, None]


def test_normalizations_equal_the_normalization_module():
    raw = torch.tensor([[1.0, 10.0], [2.0, 10.0], [3.0, 40.0], [math.nan, 20.0]], dtype=torch.float64)
    ensemble = RewardEnsemble([A, B], normalization="batch", eps=1e-6)
    torch.testing.assert_close(ensemble.normalize(raw), batch_zscore(raw, eps=1e-6), equal_nan=True)
    grouped = RewardEnsemble([A, B], normalization="group", num_generations=2)
    torch.testing.assert_close(grouped.normalize(raw), group_zscore(raw, 2, eps=1e-6), equal_nan=True)
    assert _run(grouped) == pytest.approx(grouped.aggregate(group_zscore(raw, 2, eps=1e-6)))
    with pytest.raises(ValueError, match="got 3 completions, not a multiple of num_generations=2"):
        _run(grouped, n=3)


def test_running_normalization_accumulates_across_calls():
    """The second call uses the statistics of both calls, exactly like a RunningZScore fed the same columns; it
    differs from a batch z-score of the second call alone."""
    calls = {
        "a": [[1.0, 2.0, 3.0, None], [5.0, 6.0, None, 9.0]],
        "b": [[10.0, 10.0, 40.0, 20.0], [0.0, 1.0, 2.0, 3.0]],
    }
    ensemble = RewardEnsemble([Sequenced("a", calls["a"]), Sequenced("b", calls["b"])], normalization="running")
    reference = {"a": RunningZScore(), "b": RunningZScore()}
    for step in range(2):
        out = _run(ensemble)
        columns = {
            k: torch.tensor([math.nan if v is None else v for v in calls[k][step]], dtype=torch.float64) for k in calls
        }
        za, zb = (reference[k].normalize(columns[k]).tolist() for k in ("a", "b"))
    expected = [(za[0] + zb[0]) / 2, (za[1] + zb[1]) / 2, zb[2], (za[3] + zb[3]) / 2]
    assert out == pytest.approx(expected, abs=1e-12)
    second_alone = RewardEnsemble([Literal("a", calls["a"][1]), Literal("b", calls["b"][1])])
    assert out != pytest.approx(_run(second_alone), abs=1e-3)
    assert ensemble.normalizers["a"].count == 6 and ensemble.normalizers["b"].count == 8
    assert NormalizerCheckpointCallback.for_ensemble(ensemble).normalizers is ensemble.normalizers
    clone = pickle.loads(pickle.dumps(ensemble))
    assert clone.normalizers["b"].state_dict() == ensemble.normalizers["b"].state_dict()
    with pytest.raises(ValueError, match="only normalization='running' has statistics"):
        NormalizerCheckpointCallback.for_ensemble(RewardEnsemble([A, B]))


def test_metrics_logged_through_log_metric():
    """raw_mean over the samples a member scored; normalized means 0 (batch z-scores); missing_frac 1/4 for A;
    disagreement = mean over rows 0..2 (two members) of the population std of (z_A, z_B) = |z_A - z_B| / 2."""
    logged = {}
    ensemble = RewardEnsemble([A, B], eps=0.0, name="ens")
    _run(ensemble, log_metric=logged.__setitem__)
    disagreement = np.mean([abs(ZA[i] - ZB[i]) / 2 for i in range(3)])
    expected = {
        "ens/a/raw_mean": 2.0,
        "ens/a/normalized_mean": 0.0,
        "ens/a/missing_frac": 0.25,
        "ens/b/raw_mean": 20.0,
        "ens/b/normalized_mean": 0.0,
        "ens/b/missing_frac": 0.0,
        "ens/disagreement": disagreement,
    }
    assert logged == pytest.approx(expected, abs=1e-12)
    assert ensemble.last_metrics == logged


def test_members_receive_every_argument():
    seen = {}

    class Spy:
        __name__ = "spy"

        def __call__(self, prompts, completions, completion_ids=None, **kwargs):
            seen.update(kwargs, prompts=prompts, completion_ids=completion_ids)
            return [0.0] * len(prompts)

    ensemble = RewardEnsemble({"spy": Spy(), "b": B})
    log_metric = {}.__setitem__
    ensemble(prompts=["p"] * 4, completions=["c"] * 4, completion_ids=[[1]] * 4, answer=[1] * 4, log_metric=log_metric)
    assert seen == {"prompts": ["p"] * 4, "completion_ids": [[1]] * 4, "answer": [1] * 4, "log_metric": log_metric}


@pytest.mark.parametrize(
    "member, message",
    [
        (Failing(), "member 'flaky' raised RuntimeError: server down"),
        (Literal("flaky", [1.0, 2.0]), "member 'flaky' returned 2 rewards for 4 completions"),
        (Literal("flaky", [1.0, "high", 0.0, 0.0]), "member 'flaky' returned 'high' at index 1, not a number"),
        (Literal("flaky", [1.0, 0.0, math.inf, 0.0]), "member 'flaky' returned inf at index 2"),
        (Literal("flaky", 5), "member 'flaky' returned int, not a list"),
    ],
)
def test_member_failures_are_loud_and_named(member, message):
    with pytest.raises(RewardEnsembleMemberError, match=message):
        _run(RewardEnsemble([member, B]))


def test_skip_policy_warns_records_and_drops_the_member(caplog):
    logged = {}
    ensemble = RewardEnsemble([Failing(), A, B], on_member_error="skip", eps=0.0, name="ens")
    with caplog.at_level(logging.WARNING, logger="trl_rewards.rewards.ensemble"):
        out = _run(ensemble, log_metric=logged.__setitem__)
    assert "member 'flaky' raised RuntimeError" in caplog.text and "skipping it" in caplog.text
    assert out == pytest.approx(_run(RewardEnsemble([A, B], eps=0.0)), abs=1e-12)
    assert logged["ens/flaky/failed"] == 1.0 and logged["ens/a/failed"] == 0.0
    assert logged["ens/flaky/missing_frac"] == 1.0 and "ens/flaky/raw_mean" not in logged
    with pytest.raises(RewardEnsembleMemberError, match="every member failed"):
        _run(RewardEnsemble([Failing()], on_member_error="skip"))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(weights=[1, 1]), ValueError, "weights only apply to aggregation='weighted_mean'"),
        (dict(aggregation="weighted_mean"), ValueError, "needs weights"),
        (dict(aggregation="weighted_mean", weights=[1]), ValueError, "got 1 weights for 2 members"),
        (dict(aggregation="weighted_mean", weights=[1, -1]), ValueError, "weights must be finite, >= 0"),
        (dict(aggregation="weighted_mean", weights=[0, 0]), ValueError, "not all 0"),
        (dict(uncertainty_lambda=1.0), ValueError, "uncertainty_lambda only applies to aggregation='uncertainty'"),
        (dict(aggregation="uncertainty", uncertainty_lambda=-1), ValueError, "uncertainty_lambda must be >= 0"),
        (dict(aggregation="max"), ValueError, "aggregation must be one of"),
        (dict(normalization="zscore"), ValueError, "normalization must be one of"),
        (dict(normalization="group"), ValueError, "needs num_generations"),
        (dict(num_generations=4), ValueError, "num_generations only applies to normalization='group'"),
        (dict(on_member_error="ignore"), ValueError, "on_member_error must be one of"),
        (dict(eps=-1.0), ValueError, "eps must be >= 0"),
    ],
)
def test_rejects_bad_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        RewardEnsemble([A, B], **kwargs)


def test_rejects_bad_members():
    with pytest.raises(ValueError, match="two members are named 'a'"):
        RewardEnsemble([A, Literal("a", [0.0])])
    with pytest.raises(TypeError, match="member 'Linear' is a torch.nn.Module"):
        RewardEnsemble([torch.nn.Linear(1, 1)])
    with pytest.raises(TypeError, match="member 'x' is not callable"):
        RewardEnsemble({"x": 3})
    with pytest.raises(ValueError, match="at least one member"):
        RewardEnsemble([])
    assert list(RewardEnsemble({"first": A, "second": A}).members) == ["first", "second"]


def test_check_trainer_args():
    grpo = SimpleNamespace(scale_rewards="group", multi_objective_aggregation="sum_then_normalize", num_generations=4)
    with pytest.warns(UserWarning, match="normalized twice"):
        assert len(RewardEnsemble([A, B]).check_trainer_args(grpo)) == 1
    assert RewardEnsemble([A, B], normalization="none").check_trainer_args(grpo) == []
    quiet = SimpleNamespace(scale_rewards="none", multi_objective_aggregation="sum_then_normalize", num_generations=4)
    assert RewardEnsemble([A, B], normalization="group", num_generations=4).check_trainer_args(quiet) == []
    with pytest.raises(ValueError, match="groups of num_generations=2 but the trainer generates 4"):
        RewardEnsemble([A, B], normalization="group", num_generations=2).check_trainer_args(quiet)
