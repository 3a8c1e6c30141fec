"""Training losses of LISA: text cross-entropy plus per-mask BCE and dice.

The total is ``ce_w * ce + bce_w * bce + dice_w * dice`` with the paper's
weights 1.0 / 2.0 / 0.5. Mask losses are averaged per mask over the whole
batch, not per image, as in the reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LossWeights:
    ce: float = 1.0
    bce: float = 2.0
    dice: float = 0.5


def sigmoid_bce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """BCE-with-logits averaged over the pixels of each mask.

    Args:
        logits, targets: [N,H,W] float tensors (targets in [0, 1]).

    Returns:
        [N] per-mask loss.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.flatten(1).mean(1)


def dice_loss(logits: Tensor, targets: Tensor, scale: float = 1000.0, eps: float = 1e-6) -> Tensor:
    """Dice loss per mask on sigmoid probabilities.

    ``1 - (2*sum(p*t)/scale + eps) / ((sum(p)+sum(t))/scale + eps)``; the
    ``scale`` keeps ``eps`` meaningful relative to large pixel counts.

    Args:
        logits, targets: [N,H,W] float tensors.

    Returns:
        [N] per-mask loss.
    """
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (probs * targets).sum(-1) / scale
    denominator = (probs.sum(-1) + targets.sum(-1)) / scale
    return 1 - (numerator + eps) / (denominator + eps)


def mask_losses(pred_logits: list[Tensor], gt_masks: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Batch BCE and dice, each summed over all masks and divided by their number.

    Args:
        pred_logits: per item, [n_i,H_i,W_i] mask logits.
        gt_masks: per item, [n_i,H_i,W_i] binary targets (same shape).

    Returns:
        ``(bce, dice)`` scalar float32 tensors. With no masks at all they are
        zeros, tied to the logits' graph when any logits exist so backward
        still works under DDP.
    """
    if len(pred_logits) != len(gt_masks):
        raise ValueError(f"got {len(pred_logits)} prediction items but {len(gt_masks)} target items")
    bce_sum = dice_sum = None
    num_masks = 0
    for i, (logits, targets) in enumerate(zip(pred_logits, gt_masks)):
        if logits.shape != targets.shape or logits.dim() != 3:
            raise ValueError(
                f"item {i}: expected matching [n,H,W] logits and targets, got "
                f"{tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        if logits.shape[0] == 0:
            continue
        logits = logits.float()
        targets = targets.float()
        item_bce = sigmoid_bce_loss(logits, targets).sum()
        item_dice = dice_loss(logits, targets).sum()
        bce_sum = item_bce if bce_sum is None else bce_sum + item_bce
        dice_sum = item_dice if dice_sum is None else dice_sum + item_dice
        num_masks += logits.shape[0]
    if num_masks == 0:
        if not pred_logits:
            return torch.zeros(()), torch.zeros(())
        zero = sum(logits.float().sum() for logits in pred_logits) * 0
        return zero, zero.clone()
    return bce_sum / (num_masks + 1e-8), dice_sum / (num_masks + 1e-8)


@dataclass
class LisaLoss:
    total: Tensor
    ce: Tensor
    bce: Tensor
    dice: Tensor


def combine_losses(ce: Tensor, bce: Tensor, dice: Tensor, weights: LossWeights = LossWeights()) -> LisaLoss:
    """Weighted total plus the unweighted components (for logging)."""
    total = weights.ce * ce + weights.bce * bce + weights.dice * dice
    return LisaLoss(total=total, ce=ce, bce=bce, dice=dice)
