"""The A2 losses (docs/METHODS.md section 9; Han et al., "Constructive Assimilation"), for V views.

A2 trains on two "expert" views z1, z2 of each image plus one generated view z3:

    A2-InfoNCE = symmetric InfoNCE(z1, z2; tau) - (alpha / tau) * 1/2 [mean_i z1_i.z3_i + mean_i z2_i.z3_i]

This project's encoders embed every colour view (l, ab, ori) of one crop with its own half-
network into a shared space and contrast the views with each other (CMC). So the experts are
the V view embeddings of the real crop, ``experts[X]`` ``[B, d]``, and the generated image is
embedded the same way, ``generated[Y]`` ``[B, d]``. With V = 2 experts and one generated
embedding, every formula below is exactly the paper's:

- ``a2_infonce``: mean over ordered view pairs (X, Y), X != Y, of the cross-entropy of
  ``experts[X] @ experts[Y].T / tau`` with target i for row i (in-batch negatives), minus
  ``(alpha / tau) * A`` where the alignment A = mean over (X, Y) of mean_i experts[X]_i .
  generated[Y]_i.
- ``a2_simclr``: the same, with SimCLR's NT-Xent as the contrast: anchor experts[X]_i against
  experts[Y] (positive at i) and the other rows of experts[X] (its own row masked out).
- ``a2_full``: SupCon over the pool of all expert and generated embeddings (2V sets of B
  rows): each row's positives are the other rows of the same image (the generated view is a
  full positive, so alpha is unused): mean over rows of
  ``-1/|P| sum_{p in P} log(exp(s_ip / tau) / sum_{a != i} exp(s_ia / tau))``.

All embeddings are expected L2-normalised (the encoders' ``embed`` output).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def alignment(experts: Sequence[Tensor], generated: Sequence[Tensor]) -> Tensor:
    """A = mean over (X, Y) of mean_i experts[X]_i . generated[Y]_i (a scalar)."""
    e = torch.stack(list(experts))  # [V, B, d]
    g = torch.stack(list(generated))  # [G, B, d]
    # sum over X, Y of <e_X, g_Y> = <sum_X e_X, sum_Y g_Y>
    return (e.sum(0) * g.sum(0)).sum(1).mean() / (len(experts) * len(generated))


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(n) for b in range(n) if a != b]


def a2_infonce(experts: Sequence[Tensor], generated: Sequence[Tensor], alpha: float, tau: float) -> Tensor:
    """A2-InfoNCE (module docstring); experts and generated are lists of ``[B, d]``."""
    target = torch.arange(experts[0].shape[0], device=experts[0].device)
    nce = torch.stack([F.cross_entropy(experts[a] @ experts[b].T / tau, target) for a, b in _pairs(len(experts))]).mean()
    return nce - (alpha / tau) * alignment(experts, generated)


def a2_simclr(experts: Sequence[Tensor], generated: Sequence[Tensor], alpha: float, tau: float) -> Tensor:
    """A2-SimCLR (module docstring): NT-Xent between expert views minus the alignment term."""
    b = experts[0].shape[0]
    target = torch.arange(b, device=experts[0].device)
    self_mask = torch.eye(b, dtype=torch.bool, device=experts[0].device)
    losses = []
    for x, y in _pairs(len(experts)):
        cross = experts[x] @ experts[y].T / tau
        same = (experts[x] @ experts[x].T / tau).masked_fill(self_mask, float("-inf"))
        losses.append(F.cross_entropy(torch.cat([cross, same], 1), target))
    return torch.stack(losses).mean() - (alpha / tau) * alignment(experts, generated)


def a2_full(experts: Sequence[Tensor], generated: Sequence[Tensor], alpha: float, tau: float) -> Tensor:
    """A2-full (module docstring): SupCon with every other view of the image as a positive."""
    del alpha  # the generated view is a full positive here
    pool = torch.cat(list(experts) + list(generated))  # [S*B, d]
    b = experts[0].shape[0]
    n = pool.shape[0]
    image = torch.arange(n, device=pool.device) % b
    eye = torch.eye(n, dtype=torch.bool, device=pool.device)
    logits = (pool @ pool.T / tau).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (image[:, None] == image[None, :]) & ~eye
    return -(log_prob.masked_fill(~positive, 0).sum(1) / positive.sum(1)).mean()


A2_LOSS_FNS = {"infonce": a2_infonce, "simclr": a2_simclr, "full": a2_full}
