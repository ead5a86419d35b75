"""Conservative aggregation with missing members, and calibrated (fixed-statistics) normalization, by hand."""

import math

import pytest

from trl_rewards.rewards.ensemble import RewardEnsemble
from trl_rewards.rewards.model_rewards import RewardModelFunction
from trl_rewards.testing import save_tiny, tiny_llama_reward_model


class Fixed:
    def __init__(self, name, values, stats=None):
        self.__name__ = name
        self.values = values
        self.stats = stats
        self.calls = 0

    def __call__(self, prompts, completions, **kwargs):
        self.calls += 1
        return self.values[: len(completions)]

    def calibration_statistics(self):
        return self.stats


def _call(ensemble, n):
    return ensemble(prompts=["p"] * n, completions=["c"] * n)


def test_uncertainty_default_is_between_mean_and_min_and_missing_members_pay_the_mean_spread():
    """normalization="none", members a = [2, 0, 1], b = [0, 0, None]. Fully scored rows: row 0 spread |2-0|/2 = 1,
    row 1 spread 0; mean spread 0.5. lambda = 0.5: row 0 = 1 - 0.5 * 1 = 0.5 (min 0, mean 1); row 1 = 0; row 2 has
    one member (1.0): it is charged the mean spread, 1 - 0.5 * 0.5 = 0.75, not 1 - 0 = 1 as before. With lambda = 1
    two members give exactly min: row 0 = 0."""
    a, b = Fixed("a", [2.0, 0.0, 1.0]), Fixed("b", [0.0, 0.0, None])
    ensemble = RewardEnsemble([a, b], aggregation="uncertainty", normalization="none")
    assert ensemble.uncertainty_lambda == 0.5
    assert _call(ensemble, 3) == pytest.approx([0.5, 0.0, 0.75])
    strict = RewardEnsemble([a, b], aggregation="uncertainty", uncertainty_lambda=1.0, normalization="none")
    assert _call(strict, 2) == pytest.approx(_call(RewardEnsemble([a, b], aggregation="min", normalization="none"), 2))


def test_uncertainty_without_any_fully_scored_sample_charges_nothing():
    a, b = Fixed("a", [1.0, None]), Fixed("b", [None, 3.0])
    ensemble = RewardEnsemble([a, b], aggregation="uncertainty", normalization="none")
    assert _call(ensemble, 2) == pytest.approx([1.0, 3.0])


def test_min_takes_the_worst_available_member():
    a, b = Fixed("a", [2.0, None, None]), Fixed("b", [-1.0, 4.0, None])
    assert _call(RewardEnsemble([a, b], aggregation="min", normalization="none"), 3) == [-1.0, 4.0, None]


def test_calibrated_uses_fixed_statistics_from_three_sources():
    """a: given (10, 2) -> (12 - 10) / 2 = 1 and (8 - 10) / 2 = -1; b: its stored (0, 4) -> 4 / 4 = 1, -4 / 4 = -1;
    c: measured once on calibration_data (values 1, 3: mean 2, population std 1) -> (3 - 2) / 1 = 1, (1 - 2) = -1.
    The mean of the three is [1, -1] whatever the batch (a batch z-score would move with it)."""
    a = Fixed("a", [12.0, 8.0])
    b = Fixed("b", [4.0, -4.0], stats=(0.0, 4.0))
    c = Fixed("c", [3.0, 1.0])
    ensemble = RewardEnsemble(
        [a, b, c],
        normalization="calibrated",
        calibration={"a": (10.0, 2.0)},
        calibration_data={"prompts": ["p", "q"], "completions": ["x", "y"]},
        eps=0.0,
    )
    assert ensemble.calibration == {"a": (10.0, 2.0), "b": (0.0, 4.0), "c": (2.0, 1.0)}
    assert c.calls == 1 and a.calls == 0  # only the member without statistics scored the calibration data
    assert _call(ensemble, 2) == pytest.approx([1.0, -1.0])
    assert _call(ensemble, 1) == pytest.approx([1.0])  # one sample: the same value, no batch statistics involved


def test_calibrated_errors_name_the_member():
    with pytest.raises(ValueError, match="member 'a' has no statistics"):
        RewardEnsemble([Fixed("a", [1.0])], normalization="calibrated")
    with pytest.raises(ValueError, match=r"calibration names no member: \['z'\]"):
        RewardEnsemble([Fixed("a", [1.0])], normalization="calibrated", calibration={"z": (0.0, 1.0)})
    with pytest.raises(ValueError, match="apply to normalization='calibrated'"):
        RewardEnsemble([Fixed("a", [1.0])], calibration={"a": (0.0, 1.0)})
    with pytest.raises(ValueError, match="std >= 0"):
        RewardEnsemble([Fixed("a", [1.0])], normalization="calibrated", calibration={"a": (0.0, -1.0)})


def test_reward_model_function_reads_the_statistics_our_trainers_store(tmp_path):
    model, tokenizer = tiny_llama_reward_model()
    model.config.reward_mean, model.config.reward_std = 0.25, 2.0
    path = save_tiny(model, tokenizer, tmp_path / "rm")
    assert RewardModelFunction(path, device="cpu").calibration_statistics() == (0.25, 2.0)
    assert RewardModelFunction(path, device="cpu", normalize=True).calibration_statistics() == (0.0, 1.0)
    ensemble = RewardEnsemble([RewardModelFunction(path, device="cpu", name="rm")], normalization="calibrated")
    raw = RewardModelFunction(path, device="cpu")(prompts=["p"], completions=["c"])[0]
    assert _call(ensemble, 1)[0] == pytest.approx((raw - 0.25) / (2.0 + 1e-6), rel=1e-5)
    assert not math.isnan(raw)
