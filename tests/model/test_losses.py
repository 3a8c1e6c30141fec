import math

import pytest
import torch

from lisa_model.losses import (
    LisaLoss,
    LossWeights,
    combine_losses,
    dice_loss,
    mask_losses,
    sigmoid_bce_loss,
)

LN3 = math.log(3.0)


def _small_case():
    # sigmoid(logits) = [[0.75, 0.25], [0.5, 0.5]]
    logits = torch.tensor([[[LN3, -LN3], [0.0, 0.0]]])
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    return logits, targets


def test_bce_by_hand():
    logits, targets = _small_case()
    # Per-pixel -log(p correct) = -log .75, -log .75, -log .5, -log .5
    expected = (2 * math.log(4 / 3) + 2 * math.log(2)) / 4
    loss = sigmoid_bce_loss(logits, targets)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_dice_by_hand():
    logits, targets = _small_case()
    # sum(p*t) = 1.25, sum(p) = 2, sum(t) = 2
    eps = 1e-6
    expected = 1 - (2 * 1.25 / 1000 + eps) / (4 / 1000 + eps)
    loss = dice_loss(logits, targets)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(0.375, abs=1e-3)


def test_perfect_prediction_gives_near_zero_losses():
    targets = torch.zeros(2, 8, 8)
    targets[0, 2:5, 2:5] = 1
    targets[1, :, :4] = 1
    logits = (targets * 2 - 1) * 50.0
    assert sigmoid_bce_loss(logits, targets).max().item() < 1e-6
    assert dice_loss(logits, targets).abs().max().item() < 1e-5


def test_mask_losses_normalise_per_mask():
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(1, 6, 5, generator=gen), torch.randn(3, 4, 7, generator=gen)]
    gts = [(torch.rand(x.shape, generator=gen) > 0.5).float() for x in logits]

    bce, dice = mask_losses(logits, gts)

    per_mask_bce = torch.cat([sigmoid_bce_loss(x, g) for x, g in zip(logits, gts)])
    per_mask_dice = torch.cat([dice_loss(x, g) for x, g in zip(logits, gts)])
    assert per_mask_bce.shape == (4,)
    torch.testing.assert_close(bce, per_mask_bce.mean())
    torch.testing.assert_close(dice, per_mask_dice.mean())
    # Not the mean of per-item means, which would weight the lone mask 3x.
    item_mean = torch.stack([sigmoid_bce_loss(x, g).mean() for x, g in zip(logits, gts)]).mean()
    assert not torch.isclose(bce, item_mean)


def test_mask_losses_casts_to_float32():
    logits, targets = _small_case()
    bce, dice = mask_losses([logits.to(torch.bfloat16)], [targets.to(torch.uint8)])
    assert bce.dtype == dice.dtype == torch.float32


def test_zero_mask_item_contributes_nothing():
    logits, targets = _small_case()
    empty = torch.zeros(0, 3, 3)
    bce, dice = mask_losses([empty, logits], [empty.clone(), targets])
    torch.testing.assert_close(bce, sigmoid_bce_loss(logits, targets)[0])
    torch.testing.assert_close(dice, dice_loss(logits, targets)[0])


def test_no_masks_at_all_gives_connected_zeros():
    logits = torch.zeros(0, 3, 3, requires_grad=True)
    bce, dice = mask_losses([logits], [torch.zeros(0, 3, 3)])
    assert bce.item() == 0.0 and dice.item() == 0.0
    (bce + dice).backward()
    assert logits.grad is not None

    bce, dice = mask_losses([], [])
    assert bce.item() == 0.0 and dice.item() == 0.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="item 1"):
        mask_losses(
            [torch.zeros(1, 2, 2), torch.zeros(2, 4, 4)],
            [torch.zeros(1, 2, 2), torch.zeros(2, 4, 5)],
        )
    with pytest.raises(ValueError):
        mask_losses([torch.zeros(1, 2, 2)], [])


def test_gradient_flows_to_logits():
    logits, targets = _small_case()
    logits = logits.clone().requires_grad_(True)
    bce, dice = mask_losses([logits], [targets])
    (bce + dice).backward()
    assert logits.grad is not None
    assert logits.grad.abs().sum().item() > 0
    # BCE gradient is (p - t) / num_pixels; dice adds to it, so check BCE alone.
    logits.grad = None
    mask_losses([logits], [targets])[0].backward()
    expected = (torch.sigmoid(logits.detach()) - targets) / 4
    torch.testing.assert_close(logits.grad, expected)


def test_default_weights_match_paper():
    assert LossWeights() == LossWeights(ce=1.0, bce=2.0, dice=0.5)


def test_combine_losses():
    ce, bce, dice = torch.tensor(0.3), torch.tensor(0.2), torch.tensor(0.8)
    out = combine_losses(ce, bce, dice)
    assert isinstance(out, LisaLoss)
    assert out.total.item() == pytest.approx(0.3 + 2 * 0.2 + 0.5 * 0.8)
    assert (out.ce, out.bce, out.dice) == (ce, bce, dice)

    custom = combine_losses(ce, bce, dice, LossWeights(ce=0.0, bce=1.0, dice=1.0))
    assert custom.total.item() == pytest.approx(1.0)
