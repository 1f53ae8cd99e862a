"""Memory bank for instance discrimination (docs/METHODS.md section 3, as in CMC).

One bank per view holds a unit-norm 128-d "memory" of every training sample. For an anchor
feature ``z[x][i]`` of view X and dataset index ``idx[i]`` the bank returns ``K + 1`` scores
against view Y's bank: column 0 is the positive (the slot of ``idx[i]`` itself), columns
``1..K`` are negatives drawn uniformly with replacement from ``[0, N)``. Scores are plain dot
products; temperatures / score maps belong to the losses.

Three scoring modes give the same tensors (up to float rounding) for the same sample indices:

- ``"full"`` (default, docs/METHODS.md section 3(a)): ``S = z[x] @ bank[y].T`` (``[B, N]``) then
  ``S.gather(1, sample_idx)``. One GEMM instead of a ``B x (K+1) x d`` gather; on the 2-core
  machine ~4 ms against ~270 ms per view pair for N = 50,000, K = 4096 (a planning figure,
  docs/METHODS.md section 10). Memory is
  ``B x N`` floats per pair, so for very large N (ImageNet) prefer ``"gather"`` or ``"shared"``.
- ``"gather"``: the naive reference, ``bank[y][sample_idx]`` (``[B, K+1, d]``) then a batched
  dot product. Exact, slow.
- ``"shared"`` (docs/METHODS.md section 3(b)): *a change of sampling*: one set of K negatives is shared by every
  anchor of the batch (as MoCo does). ``sample`` then returns a ``[B, K+1]`` tensor whose columns
  ``1..K`` are the same for every row, and scores are ``z[x] @ bank[y][neg].T`` plus a row-wise
  positive dot product.

The module holds no optimiser state and never calls ``torch.distributed``: under DDP the caller
gathers features and indices from all ranks before :meth:`MemoryBank.update`, and must make
sure every rank holds the same bank (same seed at init, same gathered updates).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import BankConfig, ModelConfig

SCORING_MODES = ("full", "gather", "shared")


def view_pairs(views: Sequence[str]) -> list[tuple[str, str]]:
    """Ordered pairs ``(x, y)``, ``x != y``, in the fixed order used everywhere in training.

    For each unordered pair ``(a, b)`` of ``views`` in ``itertools.combinations`` order, first
    ``(a, b)`` then ``(b, a)``: for ``("l", "ab", "ori")`` this gives
    ``(l,ab), (ab,l), (l,ori), (ori,l), (ab,ori), (ori,ab)``; for ``("l", "ab")``
    ``(l,ab), (ab,l)``. Pair ``(x, y)`` means "anchor from view x scored against bank y".
    """
    pairs: list[tuple[str, str]] = []
    for a, b in itertools.combinations(views, 2):
        pairs.append((a, b))
        pairs.append((b, a))
    return pairs


class MemoryBank(nn.Module):
    """Per-view memory bank (docs/METHODS.md section 3).

    Args:
        views: view names in canonical order (e.g. ``("l", "ab")`` or ``("l", "ab", "ori")``).
        num_samples: N, the number of training samples (dataset indices are ``0..N-1``).
        dim: feature dimension d (the encoder's ``embedding_dim``, 128).
        num_negatives: K, negatives per anchor (default 4096 as the paper; the official config uses 1024).
        momentum: m in ``slot <- normalise(m * slot + (1 - m) * z)`` (default 0.5).
        scoring: ``"full"`` (default), ``"gather"`` or ``"shared"``; see the module docstring.
        generator: optional ``torch.Generator`` used for the random init and, unless
            :meth:`sample` gets its own, for negative sampling. Must live on the bank's device
            for sampling on that device.

    Buffers (saved in ``state_dict``): ``bank``, float32 ``[V, N, d]``, every row unit-norm at
    init (standard normal rows, normalised: uniform on the sphere).
    """

    bank: Tensor

    def __init__(
        self,
        views: Sequence[str],
        num_samples: int,
        # Defaults defined once, by the config sections (model.embedding_dim, bank.*).
        dim: int = ModelConfig.embedding_dim,
        num_negatives: int = BankConfig.num_negatives,
        momentum: float = BankConfig.momentum,
        scoring: str = BankConfig.scoring,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        views = tuple(views)
        if len(views) < 2 or len(set(views)) != len(views):
            raise ValueError(f"MemoryBank needs at least two distinct views, got {views!r}")
        if num_samples < 1 or dim < 1 or num_negatives < 1:
            raise ValueError(
                f"num_samples, dim and num_negatives must be >= 1, got {num_samples}, {dim}, {num_negatives}"
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if scoring not in SCORING_MODES:
            raise ValueError(f"scoring must be one of {SCORING_MODES}, got {scoring!r}")
        self.views = views
        self.num_samples = int(num_samples)
        self.dim = int(dim)
        self.num_negatives = int(num_negatives)
        self.momentum = float(momentum)
        self.scoring = scoring
        self.generator = generator
        init = torch.randn(len(views), num_samples, dim, generator=generator)
        self.register_buffer("bank", F.normalize(init, dim=-1))
        self._view_index = {v: i for i, v in enumerate(views)}
        self._workspace = _Workspace()

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The ordered view pairs of :meth:`scores`, see :func:`view_pairs`."""
        return view_pairs(self.views)

    def extra_repr(self) -> str:
        return (
            f"views={self.views}, N={self.num_samples}, d={self.dim}, K={self.num_negatives}, "
            f"momentum={self.momentum}, scoring={self.scoring!r}"
        )

    def view_bank(self, view: str) -> Tensor:
        """The ``[N, d]`` memory of one view (a view of the buffer, not a copy)."""
        return self.bank[self._view_index[view]]

    # ------------------------------------------------------------------ sampling
    def sample(self, idx: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw positives and negatives for a batch.

        Args:
            idx: LongTensor ``[B]`` of dataset indices in ``[0, N)``.
            generator: overrides the bank's generator for this draw.

        Returns:
            LongTensor ``[B, K+1]`` on ``idx.device``: column 0 is ``idx`` (the positive),
            columns ``1..K`` are uniform with replacement over ``[0, N)``. A negative may
            equal the anchor's own index (as in CMC; with N in the tens of thousands this is rare
            and harmless). In ``"shared"`` mode the K negatives are drawn once and repeated for
            every row.
        """
        if idx.dim() != 1:
            raise ValueError(f"idx must be a 1-d LongTensor [B], got shape {tuple(idx.shape)}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must be an integer tensor, got {idx.dtype}")
        idx = idx.long()
        # Range check on CPU only: on an accelerator it would cost a host sync every step.
        if idx.device.type == "cpu" and idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
            raise ValueError(f"dataset indices must lie in [0, {self.num_samples}), got range "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        gen = generator if generator is not None else self.generator
        b, k = idx.shape[0], self.num_negatives
        if self.scoring == "shared":
            neg = torch.randint(0, self.num_samples, (1, k), generator=gen, device=idx.device)
            neg = neg.expand(b, k)
        else:
            neg = torch.randint(0, self.num_samples, (b, k), generator=gen, device=idx.device)
        return torch.cat([idx.unsqueeze(1), neg], dim=1)

    # ------------------------------------------------------------------ scoring
    def _check_features(self, z: Mapping[str, Tensor], sample_idx: Tensor) -> None:
        missing = [v for v in self.views if v not in z]
        extra = [v for v in z if v not in self._view_index]
        if missing or extra:
            raise ValueError(f"features must have exactly the bank's views {self.views}; "
                             f"missing {missing}, unexpected {extra}")
        b = sample_idx.shape[0]
        for v in self.views:
            t = z[v]
            if t.dim() != 2 or t.shape[1] != self.dim or t.shape[0] != b:
                raise ValueError(f"features of view {v!r} must be [B={b}, d={self.dim}], "
                                 f"got {tuple(t.shape)}")
        if sample_idx.dim() != 2 or sample_idx.shape[1] != self.num_negatives + 1:
            raise ValueError(f"sample_idx must be [B, K+1={self.num_negatives + 1}], "
                             f"got {tuple(sample_idx.shape)}")

    def pair_scores(self, anchor: Tensor, view: str, sample_idx: Tensor) -> Tensor:
        """Scores ``[B, K+1]`` of anchors ``[B, d]`` against bank ``view`` at ``sample_idx``.

        ``out[i, j] = <anchor[i], bank[view][sample_idx[i, j]]>``; differentiable w.r.t.
        ``anchor`` only (the bank is a buffer). Computed according to ``self.scoring``.
        """
        mem = self.view_bank(view)
        if anchor.dtype != mem.dtype:
            anchor = anchor.to(mem.dtype)
        if self.scoring == "full":
            # docs/METHODS.md section 3(a): one [B, N] GEMM, then pick each row's K+1 columns; the backward is a
            # fused gather-and-sum (see sampled_scores). Same numbers as the per-anchor gather
            # up to float rounding (both are d-term dot products of the same vectors).
            return sampled_scores(anchor, mem, sample_idx, self._workspace)
        if self.scoring == "gather":
            rows = mem[sample_idx]  # [B, K+1, d], the expensive reference path
            return torch.bmm(rows, anchor.unsqueeze(2)).squeeze(2)
        # "shared": one set of negatives for the whole batch (docs/METHODS.md section 3(b)).
        neg = sample_idx[0, 1:]
        # Checked on CPU only (a host sync elsewhere).
        if sample_idx.device.type == "cpu" and not torch.equal(
                sample_idx[:, 1:], neg.unsqueeze(0).expand_as(sample_idx[:, 1:])):
            raise ValueError("scoring='shared' needs the same negatives in every row of "
                             "sample_idx (draw them with MemoryBank.sample)")
        pos = (anchor * mem[sample_idx[:, 0]]).sum(dim=1, keepdim=True)
        return torch.cat([pos, anchor @ mem[neg].t()], dim=1)

    def scores(self, z: Mapping[str, Tensor], sample_idx: Tensor) -> dict[tuple[str, str], Tensor]:
        """Cross-view scores for every ordered view pair.

        Args:
            z: ``{view: [B, d]}`` anchors for every bank view (encoder features or MAG outputs).
            sample_idx: LongTensor ``[B, K+1]`` from :meth:`sample`.

        Returns:
            ``{(x, y): [B, K+1]}`` in the order of :func:`view_pairs`: anchor ``z[x]`` against
            bank ``y``; column 0 is the positive. Differentiable w.r.t. ``z`` only. Nothing is
            written to the bank.
        """
        self._check_features(z, sample_idx)
        return self.scores_many([z], sample_idx)[0]

    def scores_many(self, anchor_sets: Sequence[Mapping[str, Tensor]],
                    sample_idx: Tensor) -> list[dict[tuple[str, str], Tensor]]:
        """:meth:`scores` for several anchor sets at once (e.g. encoder features and MAG outputs).

        Each set maps *some or all* views to ``[B, d]`` anchors; for set ``k`` the result holds
        ``(x, y)`` for every pair whose anchor view ``x`` is in the set, in :func:`view_pairs`
        order. Anchors of the same pair from several sets are stacked into one ``[n*B, d]``
        product (one bigger GEMM in ``"full"`` mode instead of n small ones); the numbers are
        those of separate :meth:`scores` calls up to float rounding.
        """
        b = sample_idx.shape[0]
        if sample_idx.dim() != 2 or sample_idx.shape[1] != self.num_negatives + 1:
            raise ValueError(f"sample_idx must be [B, K+1={self.num_negatives + 1}], "
                             f"got {tuple(sample_idx.shape)}")
        for zs in anchor_sets:
            for v, t in zs.items():
                if v not in self._view_index:
                    raise ValueError(f"unknown view {v!r}; the bank holds {self.views}")
                if t.dim() != 2 or t.shape != (b, self.dim):
                    raise ValueError(f"anchors of view {v!r} must be [B={b}, d={self.dim}], "
                                     f"got {tuple(t.shape)}")
        out: list[dict[tuple[str, str], Tensor]] = [{} for _ in anchor_sets]
        for x, y in self.pairs:
            members = [k for k, zs in enumerate(anchor_sets) if x in zs]
            if len(members) == 1:
                out[members[0]][(x, y)] = self.pair_scores(anchor_sets[members[0]][x], y, sample_idx)
            elif members:
                stacked = torch.cat([anchor_sets[k][x] for k in members])
                both = self.pair_scores(stacked, y, sample_idx.repeat(len(members), 1))
                for k, part in zip(members, both.split(b)):
                    out[k][(x, y)] = part
        return out

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def update(self, z: Mapping[str, Tensor], idx: Tensor, in_place: bool = True) -> None:
        """Momentum update of the slots of ``idx`` (docs/METHODS.md section 3).

        ``bank[v][idx[i]] <- normalise(m * bank[v][idx[i]] + (1 - m) * z[v][i])`` for every view
        (L2 normalisation per row). Pass *encoder* features only, already gathered from all ranks
        under DDP; MAG outputs must never be stored. If ``idx`` holds a duplicate (e.g. a padded
        distributed sampler), the first occurrence is used, so the result is deterministic.

        Args:
            z: ``{view: [B, d]}`` (any float dtype / grad state; detached and cast here).
            idx: LongTensor ``[B]`` of dataset indices.
            in_place: False writes into a copy that then replaces the ``bank`` buffer, so that
                autograd graphs built on the old memory (the meta step's inner loss, before the
                official code's second bank write) keep the values they scored against.
        """
        if idx.dim() != 1:
            raise ValueError(f"idx must be a 1-d LongTensor [B], got shape {tuple(idx.shape)}")
        idx = idx.long()
        self._check_features(z, idx.new_zeros(idx.shape[0], self.num_negatives + 1))
        first = _first_occurrence(idx)
        m = self.momentum
        if not in_place:
            self.bank = self.bank.clone()
        for v in self.views:
            # Every row takes the features of the first occurrence of its index, so duplicate
            # indices write identical values and the result does not depend on write order.
            feat = z[v].detach().to(self.bank.dtype)[first]
            mem = self.view_bank(v)
            mixed = mem[idx].mul(m).add_(feat, alpha=1.0 - m)
            mem.index_copy_(0, idx, F.normalize(mixed, dim=1))


class _SampledScores(torch.autograd.Function):
    """``S[i, j] = <anchor[i], mem[idx[i, j]]>``: anchors ``[B, d]``, memory ``[N, d]``,
    indices ``[B, M]`` -> ``[B, M]``. Linear in ``anchor``; its adjoint is
    :class:`_SampledScoresAdjoint`, and each one's backward calls the other, so gradients of
    any order (the meta step differentiates a backward) stay on the fast kernels."""

    @staticmethod
    def forward(ctx, anchor: Tensor, mem: Tensor, idx: Tensor, workspace: _Workspace | None) -> Tensor:
        ctx.save_for_backward(mem, idx)
        ctx.workspace = workspace
        # One [B, N] GEMM then a gather: ~10x the dot products needed (K+1 of N columns), but a
        # GEMM at peak beats any gather of B x (K+1) rows of d floats on this CPU (docs/METHODS.md section 3(a)).
        # The [B, N] product is written into a reused buffer rather than a fresh 25 MB tensor
        # per call (whose pages would be faulted in again each time).
        full = workspace.get(anchor.shape[0], mem.shape[0], mem) if workspace is not None else None
        return torch.mm(anchor, mem.t(), out=full).gather(1, idx)

    @staticmethod
    def backward(ctx, grad: Tensor):
        mem, idx = ctx.saved_tensors
        return _SampledScoresAdjoint.apply(grad, mem, idx, ctx.workspace), None, None, None


class _SampledScoresAdjoint(torch.autograd.Function):
    """``A[i] = sum_j G[i, j] * mem[idx[i, j]]``: weights ``[B, M]`` -> ``[B, d]``, the adjoint
    of :class:`_SampledScores` (the gradient of the scores w.r.t. the anchors)."""

    @staticmethod
    def forward(ctx, weights: Tensor, mem: Tensor, idx: Tensor, workspace: _Workspace | None) -> Tensor:
        ctx.save_for_backward(mem, idx)
        ctx.workspace = workspace
        # embedding_bag fuses gather and weighted sum: no [B, N] scatter of the gradient and no
        # [B, N] x [N, d] GEMM.
        return F.embedding_bag(idx, mem, per_sample_weights=weights.to(mem.dtype), mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor):
        mem, idx = ctx.saved_tensors
        return _SampledScores.apply(grad, mem, idx, ctx.workspace), None, None, None


class _Workspace:
    """A reusable scratch buffer for the transient ``[B, N]`` products of ``"full"`` scoring.
    Each product is consumed (gathered) before the next one is written, so one buffer serves
    every call of a step, forward and backward."""

    def __init__(self) -> None:
        self.buf: Tensor | None = None

    def get(self, rows: int, cols: int, like: Tensor) -> Tensor:
        n = rows * cols
        b = self.buf
        if b is None or b.numel() < n or b.dtype != like.dtype or b.device != like.device:
            b = self.buf = torch.empty(n, dtype=like.dtype, device=like.device)
        return b[:n].view(rows, cols)


def sampled_scores(anchor: Tensor, mem: Tensor, idx: Tensor, workspace: _Workspace | None = None) -> Tensor:
    """Scores ``[B, M]`` of anchors ``[B, d]`` against memory rows ``mem[idx]`` (``idx``
    ``[B, M]``), differentiable (to any order) w.r.t. ``anchor`` only; ``mem`` is treated as a
    constant (the bank is a buffer). ``workspace`` (optional) is reused for the ``[B, N]``
    intermediate product."""
    return _SampledScores.apply(anchor, mem.detach(), idx, workspace)


def _first_occurrence(idx: Tensor) -> Tensor:
    """``first[i]`` = the smallest position ``j`` with ``idx[j] == idx[i]`` (LongTensor ``[B]``).

    Static shapes only (stable sort + running max), so no host sync on an accelerator.
    """
    b = idx.shape[0]
    if b == 0:
        return idx.clone()
    sorted_vals, perm = torch.sort(idx, stable=True)
    pos = torch.arange(b, device=idx.device)
    is_start = torch.ones(b, dtype=torch.bool, device=idx.device)
    is_start[1:] = sorted_vals[1:] != sorted_vals[:-1]
    group_start = torch.cummax(torch.where(is_start, pos, torch.zeros_like(pos)), dim=0).values
    first = torch.empty_like(perm)
    first[perm] = perm[group_start]
    return first
