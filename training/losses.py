"""The self-supervised losses, as pure functions of tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, z) = -cos(p, stopgrad(z))``, averaged over the batch.

    Parameters
    ----------
    p, z : torch.Tensor [shape=(B, D)]
        Predictor output of one view and projector output of the other. No gradient flows
        into ``z`` (the target branch).

    Returns
    -------
    torch.Tensor [shape=()]
        In [-1, 1]; -1 when every ``p`` points the way of its ``z``.
    """
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def simsiam_loss(p1, z1, p2, z2) -> torch.Tensor:
    """Symmetric SimSiam loss ``D(p1, z2)/2 + D(p2, z1)/2`` [shape=()]."""
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


def info_nce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row ``i`` of ``pred`` must pick row ``i`` of ``target``.

    Parameters
    ----------
    pred, target : torch.Tensor [shape=(..., N, D)]
        Predictions and the true future encodings; every other row of ``target`` (in the same
        leading index) is a negative. Leading dimensions are independent problems.

    Returns
    -------
    torch.Tensor [shape=()]
        ``mean_i [ -pred_i . target_i + log sum_j exp(pred_i . target_j) ]``, the mean also
        over the leading dimensions.
    """
    n = pred.shape[-2]
    logits = pred @ target.transpose(-1, -2)                      # (..., N, N)
    labels = torch.arange(n, device=pred.device).expand(logits.shape[:-1])
    return F.cross_entropy(logits.reshape(-1, n), labels.reshape(-1))


def cpc_loss(z: torch.Tensor, c: torch.Tensor, predictors) -> torch.Tensor:
    """CPC loss over ``k = 1..len(predictors)`` future steps, negatives from the batch.

    For each ``k`` and each time ``t``, ``predictors[k-1](c[:, t])`` must pick ``z[b, t+k]`` of
    its own example ``b`` among the ``z[:, t+k]`` of the whole batch (:func:`info_nce` at each
    step); averaged over ``t`` and ``k``.

    Parameters
    ----------
    z : torch.Tensor [shape=(B, T, D)]
    c : torch.Tensor [shape=(B, T, C)]
    """
    losses = []
    for k, predict in enumerate(predictors, start=1):
        if z.shape[1] <= k:
            break
        pred = predict(c[:, :-k])                      # (B, T-k, D)
        target = z[:, k:]                              # (B, T-k, D)
        # one InfoNCE per time step, the batch as negatives: time leads
        losses.append(info_nce(pred.transpose(0, 1), target.transpose(0, 1)))
    if not losses:
        raise ValueError(f"sequence of {z.shape[1]} steps is too short for CPC")
    return torch.stack(losses).mean()
