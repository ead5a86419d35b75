"""Process-step and outcome losses, derived by hand on literal tensors, plus reference checks against torch."""

import math

import pytest
import torch
import torch.nn.functional as F

from trl_rewards.losses import outcome_loss, process_step_loss, step_tag_logits, step_tag_loss, token_outcome_loss

NLL_SIGMOID_2 = math.log1p(math.exp(-2))  # -log σ(2) = 0.126928
NLL_SIGMOID_1 = math.log1p(math.exp(-1))  # -log σ(1) = 0.313262
NLL_SIGMOID_MINUS_1 = math.log1p(math.exp(1))  # -log σ(-1) = 1.313262


def test_process_step_loss_hand_derived():
    """Three positions, logits [z_bad, z_good]:
    - [0, 0], label -100: ignored;
    - [0, 2], label 1 (good): d = z_good - z_bad = 2, loss = -log σ(2) = 0.126928;
    - [1, 0], label 0 (bad): d = -1, loss = -log σ(-d) = -log σ(1) = 0.313262.
    mean over the 2 labelled positions = 0.220095, sum = 0.440190."""
    logits = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [1.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    assert process_step_loss(logits, labels).item() == pytest.approx(0.220095, abs=1e-6)
    assert process_step_loss(logits, labels, reduction="sum").item() == pytest.approx(0.440190, abs=1e-6)
    torch.testing.assert_close(
        process_step_loss(logits, labels, reduction="none"), torch.tensor([[0.0, NLL_SIGMOID_2, NLL_SIGMOID_1]])
    )


def test_process_step_loss_equals_cross_entropy_with_ignore_index():
    logits = torch.randn(3, 7, 2)
    labels = torch.randint(0, 2, (3, 7))
    labels[torch.rand(3, 7) < 0.5] = -100
    labels[0, 0] = 1  # at least one labelled position
    reference = F.cross_entropy(logits.view(-1, 2), labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(process_step_loss(logits, labels), reference)


def test_process_step_loss_is_stable_for_large_gaps():
    """d = -1000 on a good step: -log σ(-1000) = 1000 exactly, not inf."""
    loss = process_step_loss(torch.tensor([[[500.0, -500.0]]]), torch.tensor([[1]]))
    assert loss.item() == pytest.approx(1000.0)


def test_process_step_loss_ignores_inf_logits_at_ignored_positions():
    """Position 0 is ignored and holds [inf, -inf] (d = -inf): masking by multiplication gave 0 * inf = nan.
    Position 1, label 1, logits [0, 2]: -log σ(2) = 0.126928 for every reduction; the gradient at position 0 is 0."""
    logits = torch.tensor([[[math.inf, -math.inf], [0.0, 2.0]]], requires_grad=True)
    labels = torch.tensor([[-100, 1]])
    for reduction in ("mean", "sum"):
        assert process_step_loss(logits, labels, reduction=reduction).item() == pytest.approx(NLL_SIGMOID_2, abs=1e-6)
    torch.testing.assert_close(
        process_step_loss(logits, labels, reduction="none"), torch.tensor([[0.0, NLL_SIGMOID_2]]), atol=1e-6, rtol=0
    )
    process_step_loss(logits, labels).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0].abs().sum() == 0


def test_token_outcome_loss_ignores_inf_scores_at_unsupervised_positions():
    """Row 0 supervises token 0 only (score 2, y = 1): -log σ(2) = 0.126928; token 1 holds -inf and is ignored."""
    scores = torch.tensor([[2.0, -math.inf]], requires_grad=True)
    loss = token_outcome_loss(scores, torch.tensor([1.0]), torch.tensor([[1, 0]]))
    assert loss.item() == pytest.approx(NLL_SIGMOID_2, abs=1e-6)
    loss.backward()
    assert torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_outcome_losses_reject_non_finite_labels(bad):
    with pytest.raises(ValueError, match=r"labels must be finite, but labels\[1\] is"):
        outcome_loss(torch.zeros(2), torch.tensor([1.0, bad]))
    with pytest.raises(ValueError, match="labels must be finite"):
        token_outcome_loss(torch.zeros(2, 3), torch.tensor([bad, 1.0]), torch.ones(2, 3))


@pytest.mark.parametrize(
    "logits, labels, message",
    [
        (torch.zeros(1, 2, 2), torch.full((1, 2), -100), "no labelled position"),
        (torch.zeros(1, 2, 2), torch.tensor([[2, 0]]), "labels must be 0, 1 or ignore_index"),
        (torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), "size-2"),
        (torch.zeros(1, 2, 2), torch.zeros(1, 3, dtype=torch.long), "labels shape"),
    ],
)
def test_process_step_loss_rejects_bad_input(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        process_step_loss(logits, labels)


def test_step_tag_loss_hand_derived_reads_only_two_logits():
    """Vocabulary of 5, bad token id 1, good token id 3. At the tag position logits are [0.5, 1, -2, 3, 9]:
    z_bad = 1, z_good = 3, so for a good step loss = -log σ(3 - 1) = 0.126928. Token 4's large logit (9) plays no
    part: the softmax is over the two selected logits only."""
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 0.0], [0.5, 1.0, -2.0, 3.0, 9.0]]])
    labels = torch.tensor([[-100, 1]])
    loss = step_tag_loss(logits, labels, good_token_id=3, bad_token_id=1)
    assert loss.item() == pytest.approx(NLL_SIGMOID_2, abs=1e-6)
    torch.testing.assert_close(step_tag_logits(logits, 3, 1)[0, 1], torch.tensor([1.0, 3.0]))  # [bad, good]
    reference = F.cross_entropy(logits[..., [1, 3]].view(-1, 2), labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(loss, reference)


def test_step_tag_loss_rejects_bad_token_ids():
    logits, labels = torch.zeros(1, 1, 4), torch.tensor([[1]])
    with pytest.raises(ValueError, match="must differ"):
        step_tag_loss(logits, labels, 2, 2)
    with pytest.raises(ValueError, match="good_token_id=9 is outside the vocabulary of size 4"):
        step_tag_loss(logits, labels, 9, 1)


def test_outcome_loss_hand_derived():
    """Scores [2, -1], both correct (y = 1): -log σ(2) = 0.126928, -log σ(-1) = 1.313262, mean 0.720095.
    A wrong solution with score 1: -log σ(-1) = 1.313262."""
    loss = outcome_loss(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx(0.720095, abs=1e-6)
    wrong = outcome_loss(torch.tensor([1.0]), torch.tensor([0.0]), reduction="none")
    torch.testing.assert_close(wrong, torch.tensor([NLL_SIGMOID_MINUS_1]))


def test_outcome_loss_equals_bce_with_logits():
    scores, hard, soft = torch.randn(9), torch.randint(0, 2, (9,)).float(), torch.rand(9)
    for labels in (hard, soft):
        reference = torch.nn.BCEWithLogitsLoss()(scores, labels)
        torch.testing.assert_close(outcome_loss(scores, labels), reference)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        outcome_loss(scores, hard * 2)


def test_token_outcome_loss_hand_derived():
    """Row 0 (correct, y = 1) supervises tokens 0 and 1 (scores 2, 0): (-log σ(2) - log σ(0)) / 2 =
    (0.126928 + 0.693147) / 2 = 0.410038; its masked token (-5) does not count.
    Row 1 (wrong, y = 0) supervises token 2 (score 1): -log σ(-1) = 1.313262.
    Mean over the 2 rows: 0.861650 (per-row means, so a long row does not outweigh a short one)."""
    scores = torch.tensor([[2.0, 0.0, -5.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 1]])
    labels = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(
        token_outcome_loss(scores, labels, mask, reduction="none"),
        torch.tensor([(NLL_SIGMOID_2 + math.log(2)) / 2, NLL_SIGMOID_MINUS_1]),
    )
    assert token_outcome_loss(scores, labels, mask).item() == pytest.approx(0.861650, abs=1e-6)


def test_token_outcome_loss_reference_and_errors():
    scores, labels = torch.randn(4, 6), torch.randint(0, 2, (4,)).float()
    mask = torch.rand(4, 6) < 0.6
    mask[:, 0] = True
    per_token = F.binary_cross_entropy_with_logits(scores, labels[:, None].expand(4, 6), reduction="none")
    reference = ((per_token * mask).sum(1) / mask.sum(1)).mean()
    torch.testing.assert_close(token_outcome_loss(scores, labels, mask), reference)
    mask[2] = False
    with pytest.raises(ValueError, match="row 2 has no supervised token"):
        token_outcome_loss(scores, labels, mask)
