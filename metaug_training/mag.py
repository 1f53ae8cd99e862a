"""MAG: meta feature augmentation generator (docs/METHODS.md section 5).

One small MLP per view maps that view's L2-normalised 128-d embedding ``z`` to an augmented
embedding ``z^`` on the same sphere:

    Linear(d -> h), BN1d(h), ReLU, Linear(h -> h), BN1d(h), ReLU, Linear(h -> d), L2-normalise

with ``h`` the encoder's fc width (2048 for alexnet at width 1.0, 1024 at width 0.5, the
projection-head input width for resnet50; see :func:`mag_hidden_width`). A MAG only ever takes
the ``d``-dim embedding; any other input width is an error (the official code silently builds a
fresh random Linear in that case; we refuse instead).

MAGs are trained only through the meta step (:mod:`metaug_training.meta`) and always run in
train mode (BN batch statistics); their BN running statistics are never used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MAG(nn.Module):
    """Meta feature augmentation generator for one view.

    Args:
        dim: embedding dimension d (input and output), the encoder's ``embedding_dim`` (128).
        hidden: hidden width h, the encoder's fc width (see :func:`mag_hidden_width`).

    Forward: ``[B, d] -> [B, d]``, rows unit-norm.
    """

    def __init__(self, dim: int = 128, hidden: int = 2048) -> None:
        super().__init__()
        if dim < 1 or hidden < 1:
            raise ValueError(f"dim and hidden must be >= 1, got {dim}, {hidden}")
        self.dim = int(dim)
        self.hidden = int(hidden)
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(
                f"a MAG takes the view's {self.dim}-d embedding [B, {self.dim}], got shape {tuple(z.shape)}"
            )
        return F.normalize(self.net(z), dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}"


def build_mags(views: Sequence[str], dim: int = 128, hidden: int = 2048) -> nn.ModuleDict:
    """One :class:`MAG` per view: ``nn.ModuleDict({view: MAG(dim, hidden)})`` in view order."""
    views = tuple(views)
    if not views or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct and non-empty, got {views!r}")
    return nn.ModuleDict({v: MAG(dim, hidden) for v in views})


def _head_input_width(head: nn.Module) -> int:
    if isinstance(head, nn.Linear):
        return head.in_features
    for m in head.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise ValueError(f"cannot find a Linear layer in projection head {head!r}")


def mag_hidden_width(encoder: nn.Module) -> int:
    """The MAG hidden width that follows the encoder: the input width of its projection head
    (= the fc7 width for alexnet: ``round(2048 * width)``; 2048 for resnet50).

    ``encoder`` is a :class:`metaug_features.MetAugEncoder` (anything with ``halves`` whose
    modules have a ``head``). All halves must agree.
    """
    halves = getattr(encoder, "halves", None)
    if halves is None:
        raise ValueError("encoder has no `halves`; pass hidden= explicitly")
    widths = set()
    for v, half in halves.items():
        head = getattr(half, "head", None)
        if head is None:
            raise ValueError(f"half {v!r} has no projection head (truncated encoder?)")
        widths.add(_head_input_width(head))
    if len(widths) != 1:
        raise ValueError(f"halves disagree on their fc width: {sorted(widths)}")
    return widths.pop()


def build_mags_for(encoder: nn.Module) -> nn.ModuleDict:
    """MAGs matching an encoder: views, ``embedding_dim`` and hidden width from the encoder
    (``encoder.config.views``, ``encoder.config.embedding_dim``, :func:`mag_hidden_width`)."""
    cfg = encoder.config
    return build_mags(cfg.views, cfg.embedding_dim, mag_hidden_width(encoder))


def apply_mags(mags: nn.ModuleDict, z: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{view: MAG_view(z[view])}`` for every view of ``z`` (each a MAG output ``[B, d]``)."""
    missing = [v for v in z if v not in mags]
    if missing:
        raise ValueError(f"no MAG for view(s) {missing}; MAGs exist for {list(mags.keys())}")
    return {v: mags[v](t) for v, t in z.items()}


@torch.no_grad()
def mag_norms(mags: nn.ModuleDict) -> dict[str, float]:
    """Logging helper (docs/METHODS.md section 4 asks to log MAG weight / grad norms because with the
    default delta the MAGs barely learn): ``{"mag_weight_norm": ..., "mag_grad_norm": ...}``,
    global L2 norms over all MAG parameters (grad norm 0.0 when no grads are set)."""
    w = torch.zeros(())
    g = torch.zeros(())
    for p in mags.parameters():
        w = w + p.detach().double().pow(2).sum().cpu()
        if p.grad is not None:
            g = g + p.grad.detach().double().pow(2).sum().cpu()
    return {"mag_weight_norm": float(w.sqrt()), "mag_grad_norm": float(g.sqrt())}
