"""Loss math, derived by hand on literal tensors, plus reference checks against torch's BCE."""

import math

import pytest
import torch
import torch.nn.functional as F

from trl_rewards.losses import (
    bradley_terry_loss,
    masked_regression_loss,
    pairwise_preference_loss,
    pairwise_win_logit,
    reward_centering_loss,
    smoothed_target,
)


def test_bt_hand_derived():
    """d = [2-1, 0-0] = [1, 0]; -log σ(1) = log(1 + e^-1) = 0.313262; -log σ(0) = log 2 = 0.693147;
    mean = 0.503204."""
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]), reduction="none")
    torch.testing.assert_close(loss, torch.tensor([math.log1p(math.exp(-1)), math.log(2)]))
    assert bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])).item() == pytest.approx(
        0.503204, abs=1e-6
    )


def test_bt_equals_bce_with_logits():
    """Standard BT is binary cross-entropy of the logit r_c - r_r against label 1."""
    chosen, rejected = torch.randn(7), torch.randn(7)
    reference = F.binary_cross_entropy_with_logits(chosen - rejected, torch.ones(7))
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), reference)


def test_bt_margin_hand_derived():
    """With margin m = 1 and d = 1: -log σ(1 - 1) = log 2."""
    loss = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), margin=torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)


def test_bt_soft_label_equals_bce_with_soft_targets():
    """Soft BT: -(p log σ(d) + (1-p) log σ(-d)) is BCE with a soft target p. By hand for d=2, p=0.75:
    -(0.75 log σ(2) + 0.25 log σ(-2)) = 0.75*0.126928 + 0.25*2.126928 = 0.626928."""
    loss = bradley_terry_loss(torch.tensor([3.0]), torch.tensor([1.0]), target=torch.tensor([0.75]))
    assert loss.item() == pytest.approx(0.626928, abs=1e-6)
    chosen, rejected, p = torch.randn(5), torch.randn(5), torch.rand(5)
    torch.testing.assert_close(
        bradley_terry_loss(chosen, rejected, target=p), F.binary_cross_entropy_with_logits(chosen - rejected, p)
    )


def test_bt_margin_with_soft_label_is_symmetric():
    """The margin applies in the direction of each side: ℓ = -p log σ(Δ - m) - (1-p) log σ(-Δ - m).

    By hand, p = 0.5, m = 1: ℓ(Δ) = 0.5 (softplus(1 - Δ) + softplus(1 + Δ)), even in Δ, so its minimum is at Δ = 0
    (ℓ'(0) = 0.5 (-σ(1) + σ(1)) = 0) with ℓ(0) = softplus(1) = log(1 + e) = 1.313262. The old form
    -(p log σ(Δ - m) + (1-p) log σ(m - Δ)) has its optimum at Δ = m + logit(p) = 1: a 50/50 pair was pushed to make
    "chosen" win by 1. Here ℓ(1) = 0.5 (log 2 + softplus(2)) = 0.5 (0.693147 + 2.126928) = 1.410038 > ℓ(0).
    Reference: p·BCE(Δ - m, 1) + (1-p)·BCE(Δ + m, 0); with p = 1 it is the hard-label margin loss."""
    half, margin = torch.tensor([0.5]), torch.tensor([1.0])
    at_zero = bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0]), margin=margin, target=half)
    at_one = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=margin, target=half)
    assert at_zero.item() == pytest.approx(math.log1p(math.e), abs=1e-6)
    assert at_one.item() == pytest.approx(1.410038, abs=1e-6)
    delta = torch.zeros(1, requires_grad=True)
    bradley_terry_loss(delta, torch.zeros(1), margin=margin, target=half).backward()
    assert delta.grad.item() == pytest.approx(0.0, abs=1e-7)

    chosen, rejected, p, m = torch.randn(5), torch.randn(5), torch.rand(5), torch.rand(5)
    d = chosen - rejected
    reference = p * F.binary_cross_entropy_with_logits(d - m, torch.ones(5), reduction="none") + (
        1 - p
    ) * F.binary_cross_entropy_with_logits(d + m, torch.zeros(5), reduction="none")
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected, margin=m, target=p, reduction="none"), reference)
    torch.testing.assert_close(
        bradley_terry_loss(chosen, rejected, margin=m, target=torch.ones(5)), bradley_terry_loss(chosen, rejected, m)
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_bt_rejects_non_finite_target_and_margin(bad):
    c, r = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    with pytest.raises(ValueError, match=r"target must be finite, but target\[1\] is"):
        bradley_terry_loss(c, r, target=torch.tensor([0.5, bad]))
    with pytest.raises(ValueError, match=r"margin must be finite, but margin\[0\] is"):
        bradley_terry_loss(c, r, margin=torch.tensor([bad, 1.0]))


def test_bt_half_target_is_symmetric():
    """p = 0.5 makes the loss even in d: swapping chosen and rejected does not change it."""
    c, r = torch.tensor([1.5, -0.3]), torch.tensor([0.2, 0.9])
    half = torch.full((2,), 0.5)
    torch.testing.assert_close(bradley_terry_loss(c, r, target=half), bradley_terry_loss(r, c, target=half))


def test_bt_is_stable_for_large_margins():
    """-log σ(-100) = 100 (to float precision), not inf; -log σ(100) ≈ 0."""
    loss = bradley_terry_loss(torch.tensor([0.0, 100.0]), torch.tensor([100.0, 0.0]), reduction="none")
    torch.testing.assert_close(loss, torch.tensor([100.0, 0.0]), atol=1e-5, rtol=0)


def test_bt_reductions_and_errors():
    c, r = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    assert bradley_terry_loss(c, r, reduction="sum").item() == pytest.approx(
        bradley_terry_loss(c, r, reduction="none").sum().item()
    )
    with pytest.raises(ValueError, match="reduction"):
        bradley_terry_loss(c, r, reduction="max")
    with pytest.raises(ValueError, match="shape mismatch"):
        bradley_terry_loss(c, torch.zeros(3))
    with pytest.raises(ValueError, match=r"target must lie in \[0, 1\]"):
        bradley_terry_loss(c, r, target=torch.tensor([1.2, 0.5]))


def test_reward_centering_hand_derived():
    """(1 + -1)^2 = 0 and (2 + 1)^2 = 9; mean 4.5."""
    assert reward_centering_loss(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 1.0])).item() == 4.5


def test_smoothed_target():
    """ε = 0.1: p=1 → 0.9, p=0.5 → 0.5, p=0 → 0.1; no target and no smoothing → None (plain loss path)."""
    like = torch.zeros(3)
    torch.testing.assert_close(
        smoothed_target(torch.tensor([1.0, 0.5, 0.0]), 0.1, 3, like), torch.tensor([0.9, 0.5, 0.1])
    )
    torch.testing.assert_close(smoothed_target(None, 0.1, 2, like), torch.tensor([0.9, 0.9]))
    assert smoothed_target(None, 0.0, 2, like) is None


def test_masked_regression_hand_derived():
    """predictions [[1, 2], [3, 4]], targets [[0, NaN], [3, 6]]: observed errors 1, 0, -2 -> squares 1, 0, 4;
    mean over the 3 observed entries = 5/3 (not 5/4: the missing rating is not a zero error), sum = 5."""
    predictions = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    targets = torch.tensor([[0.0, float("nan")], [3.0, 6.0]])
    loss = masked_regression_loss(predictions, targets)
    assert loss.item() == pytest.approx(5 / 3)
    assert masked_regression_loss(predictions, targets, reduction="sum").item() == pytest.approx(5.0)
    per_entry = masked_regression_loss(predictions, targets, reduction="none")
    assert torch.equal(per_entry.detach(), torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    loss.backward()
    # d/dp (p - y)^2 / 3 = 2 (p - y) / 3 at observed entries, exactly 0 (not NaN) at the missing one
    assert torch.allclose(predictions.grad, torch.tensor([[2 / 3, 0.0], [0.0, -4 / 3]]))


def test_masked_regression_equals_mse_when_complete():
    predictions, targets = torch.randn(5, 3), torch.randn(5, 3)
    assert masked_regression_loss(predictions, targets).item() == pytest.approx(
        F.mse_loss(predictions, targets).item()
    )


def test_masked_regression_errors():
    with pytest.raises(ValueError, match="shape mismatch"):
        masked_regression_loss(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="num_attributes"):
        masked_regression_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="no observed rating"):
        masked_regression_loss(torch.zeros(1, 2), torch.full((1, 2), float("nan")))
    with pytest.raises(ValueError, match="inf"):
        masked_regression_loss(torch.zeros(1, 2), torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError, match="reduction"):
        masked_regression_loss(torch.zeros(1, 2), torch.zeros(1, 2), reduction="max")


# ------------------------------------------------------------------------------------------ pairwise preference


def test_pairwise_preference_loss_hand_derived():
    """Hard label p = 1, l_AB = ln 3, l_BA = -ln 3: σ(ln 3) = 3/4, so both halves are -log(3/4) = 0.287682 and
    ℓ = 0.287682. Second pair, l_AB = l_BA = 0: both halves are log 2, ℓ = 0.693147."""
    ab, ba = torch.tensor([math.log(3), 0.0]), torch.tensor([-math.log(3), 0.0])
    loss = pairwise_preference_loss(ab, ba, reduction="none")
    torch.testing.assert_close(loss, torch.tensor([-math.log(0.75), math.log(2)]))
    assert pairwise_preference_loss(ab, ba).item() == pytest.approx((0.287682 + 0.693147) / 2, abs=1e-6)
    assert pairwise_preference_loss(ab, ba, reduction="sum").item() == pytest.approx(0.287682 + 0.693147, abs=1e-6)


def test_pairwise_preference_loss_soft_label_hand_derived():
    """p = 0.75, l_AB = 2, l_BA = 0: forward half -(0.75 log σ(2) + 0.25 log σ(-2)) = 0.75*0.126928 + 0.25*2.126928
    = 0.626928; swapped half -(0.25 log σ(0) + 0.75 log σ(0)) = log 2 = 0.693147; ℓ = (0.626928 + 0.693147) / 2
    = 0.660038."""
    loss = pairwise_preference_loss(torch.tensor([2.0]), torch.tensor([0.0]), target=torch.tensor([0.75]))
    assert loss.item() == pytest.approx(0.660038, abs=1e-6)


def test_pairwise_preference_loss_equals_bce_over_both_orders():
    """Reference: BCEWithLogits over the 2n sequences, (A, B) with target p and (B, A) with target 1 - p."""
    ab, ba, p = torch.randn(6), torch.randn(6), torch.rand(6)
    reference = F.binary_cross_entropy_with_logits(torch.cat([ab, ba]), torch.cat([p, 1 - p]))
    torch.testing.assert_close(pairwise_preference_loss(ab, ba, target=p), reference)
    reference_hard = F.binary_cross_entropy_with_logits(
        torch.cat([ab, ba]), torch.cat([torch.ones(6), torch.zeros(6)])
    )
    torch.testing.assert_close(pairwise_preference_loss(ab, ba), reference_hard)


def test_pairwise_preference_loss_errors_and_stability():
    assert pairwise_preference_loss(torch.tensor([200.0]), torch.tensor([-200.0])).item() == pytest.approx(0.0)
    big = pairwise_preference_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert big.item() == pytest.approx(200.0)  # -log σ(-200) = 200, finite
    with pytest.raises(ValueError, match="target"):
        pairwise_preference_loss(torch.zeros(2), torch.zeros(2), target=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="shape"):
        pairwise_preference_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
        pairwise_preference_loss(torch.zeros(2), torch.zeros(2), reduction="max")


def test_pairwise_win_logit_hand_derived():
    """l_AB = ln 3 (σ = 3/4), l_BA = 0 (σ = 1/2): P = (3/4 + 1 - 1/2) / 2 = 5/8, logit = ln(5/3) = 0.510826.
    Equal logits in both orders (pure position preference) give P = 1/2 whatever their value."""
    z = pairwise_win_logit(torch.tensor([math.log(3), 4.0]), torch.tensor([0.0, 4.0]))
    torch.testing.assert_close(z, torch.tensor([math.log(5 / 3), 0.0]))


def test_pairwise_win_logit_is_antisymmetric_and_finite():
    """Swapping the orders negates the log-odds exactly; confident logits stay finite (logit P ≈ l - log 2 + ...)."""
    ab, ba = torch.randn(50, dtype=torch.float64) * 5, torch.randn(50, dtype=torch.float64) * 5
    assert torch.equal(pairwise_win_logit(ba, ab), -pairwise_win_logit(ab, ba))
    far = pairwise_win_logit(torch.tensor([100.0]), torch.tensor([-100.0]))
    assert torch.isfinite(far).all() and far.item() > 90
