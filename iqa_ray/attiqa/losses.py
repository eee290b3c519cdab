"""Training losses of ATTIQA: a pairwise margin ranking loss within a batch (pretraining on
pseudo-label order) and an L1/L2 regression loss (fine-tuning on MOS)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_ranking_loss(pred: torch.Tensor, target: torch.Tensor, margin: float,
                          min_gap: float = 0.0) -> torch.Tensor:
    """Margin ranking loss over every ordered pair of a batch, per attribute column.

    For each column a and each pair (i, j) with ``target[i, a] - target[j, a] > min_gap``:
    ``max(0, margin - (pred[i, a] - pred[j, a]))``, averaged over all such (pair, column)
    terms. This is ``torch.nn.MarginRankingLoss`` with ``y = sign(target_i - target_j)`` on all
    B(B-1)/2 unordered pairs, skipping ties. Only the order of the targets is used, so
    pseudo-labels need no calibration.

    Args:
        pred: (B, A) network outputs.
        target: (B, A) pseudo-labels.
        margin: required output gap between a better and a worse image.
        min_gap: target differences at or below this count as ties and are skipped.

    Returns:
        A scalar; zero (with a gradient path) when the batch has no ordered pair.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, A)")
    target_gap = target[:, None, :] - target[None, :, :]
    pred_gap = pred[:, None, :] - pred[None, :, :]
    ordered = target_gap > min_gap
    if not bool(ordered.any()):
        return pred.sum() * 0.0
    return F.relu(margin - pred_gap[ordered]).mean()


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """``l1`` (mean absolute error) or ``l2`` (mean squared error) on standardised MOS."""
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown regression loss {kind!r}")
