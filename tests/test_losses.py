"""Loss math, derived by hand on literal tensors, plus reference checks against torch's BCE."""

import math

import pytest
import torch
import torch.nn.functional as F

from trl_rewards.losses import bradley_terry_loss, reward_centering_loss, smoothed_target


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
