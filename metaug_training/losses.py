"""Contrastive losses over memory-bank scores (docs/METHODS.md section 4).

Every function takes a sequence of score tensors ``[B, K+1]`` (one per ordered view pair, as
returned by :meth:`metaug_training.memory_bank.MemoryBank.scores`) whose column 0 is the
positive and columns ``1..K`` the negatives. Scores are plain dot products of unit vectors,
so they lie in ``[-1, 1]``. All functions are vectorised (no loop over samples) and keep the
dtype of their input.

- :func:`infonce_loss`  CMC softmax baseline.
- :func:`nce_loss` / :class:`NCELoss`  CMC memory-bank NCE with a normalising constant
  estimated once.
- :func:`oucl_loss`  MetAug's optimisation-driven unified contrastive loss (paper eq. 8-10).
- :func:`margin_regularizer`  MetAug's margin-injected regulariser R (paper eq. 4-5), by default
  on the ``(s+1)/2``-mapped scores like OUCL and the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

# The option values are defined with the config sections that hold them (the losses take every
# option explicitly; their defaults live in the config only).
from .config.loss_sections import REG_MODES, REG_SCORES, WEIGHTINGS


def _stack(scores: Sequence[Tensor]) -> Tensor:
    """List of T ``[B, K+1]`` tensors -> ``[B, T, K+1]``, with shape checks."""
    if isinstance(scores, Tensor):
        scores = [scores]
    scores = list(scores)
    if not scores:
        raise ValueError("need at least one score tensor")
    shape = scores[0].shape
    for s in scores:
        if s.dim() != 2 or s.shape != shape or s.shape[1] < 2:
            raise ValueError("score tensors must all be [B, K+1] with K >= 1 and the same shape; "
                             f"got {[tuple(t.shape) for t in scores]}")
    return torch.stack(scores, dim=1)


# --------------------------------------------------------------------------- CMC baselines
def infonce_loss(scores: Sequence[Tensor], temperature: float) -> Tensor:
    """Softmax InfoNCE of CMC (docs/METHODS.md section 4, "CMC baseline").

    For each tensor ``s`` (``[B, K+1]``):
    ``l(s) = mean_i [ -s[i,0]/T + log sum_j exp(s[i,j]/T) ]`` (cross-entropy with the positive,
    column 0, as target). Returns ``sum over tensors of l(s)`` (CMC sums the two directions).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    st = _stack(scores) / temperature  # [B, T, K+1]
    per = torch.logsumexp(st, dim=2) - st[:, :, 0]  # [B, T]
    return per.mean(dim=0).sum()


def estimate_nce_normalizers(scores: Sequence[Tensor], num_samples: int, temperature: float) -> Tensor:
    """CMC's once-only estimate of the NCE partition constants, one per score tensor.

    ``Z_t = N * mean_{i,j} exp(s_t[i,j] / T)`` over all ``K+1`` columns of the first batch
    (a Monte-Carlo estimate of ``sum_n exp(<z, m_n>/T)`` over the N bank rows). Returns a
    detached ``[T]`` tensor.
    """
    st = _stack(scores).detach()
    return torch.exp(st / temperature).mean(dim=(0, 2)) * float(num_samples)


def nce_loss(scores: Sequence[Tensor], normalizers: Tensor, num_samples: int,
             temperature: float, eps: float = 1e-7) -> Tensor:
    """Memory-bank NCE of CMC / instance discrimination (Wu et al. 2018), summed over tensors.

    With ``P_t[i,j] = exp(s_t[i,j] / T) / Z_t`` (``Z_t = normalizers[t]``, held constant), noise
    distribution uniform ``Pn = 1 / N`` and K noise samples per anchor:

    ``l_t = -(1/B) * sum_i [ log(P_t[i,0] / (P_t[i,0] + K*Pn + eps))
                             + sum_{j=1..K} log(K*Pn / (P_t[i,j] + K*Pn + eps)) ]``

    and the loss is ``sum_t l_t``.

    Args:
        scores: T tensors ``[B, K+1]``, positive in column 0.
        normalizers: ``[T]`` constants Z (see :func:`estimate_nce_normalizers`, :class:`NCELoss`).
        num_samples: N, the dataset size (noise probability 1/N).
    """
    st = _stack(scores)
    b, t, kp1 = st.shape
    k = kp1 - 1
    z = normalizers.to(st.dtype).reshape(1, t, 1)
    if normalizers.numel() != t:
        raise ValueError(f"need one normaliser per score tensor ({t}), got {normalizers.numel()}")
    p = torch.exp(st / temperature) / z  # [B, T, K+1]
    kpn = k / float(num_samples)
    log_d1 = torch.log(p[:, :, 0] / (p[:, :, 0] + kpn + eps))  # [B, T]
    log_d0 = torch.log(kpn / (p[:, :, 1:] + kpn + eps))  # [B, T, K]
    return -(log_d1.sum(dim=0) + log_d0.sum(dim=(0, 2))).sum() / b


class NCELoss(nn.Module):
    """Stateful CMC NCE: estimates the constants ``Z`` on the first call, then keeps them.

    Buffer ``normalizers`` (``[num_tensors]``, NaN until the first call) lives in the
    ``state_dict`` so a resumed run keeps the same constants. Under DDP each rank estimates
    its own Z from its first batch unless the caller broadcasts / all-reduces ``normalizers``
    after the first call (this module never calls ``torch.distributed``).

    Args:
        num_samples: N, dataset size.
        num_tensors: number of score tensors per call (2 for L/ab, 6 for L/ab/ori).
        temperature: T (``loss.temperature``, docs/METHODS.md section 4.1).
    """

    normalizers: Tensor

    def __init__(self, num_samples: int, num_tensors: int, temperature: float, eps: float = 1e-7) -> None:
        super().__init__()
        self.num_samples = int(num_samples)
        self.temperature = float(temperature)
        self.eps = float(eps)
        self.register_buffer("normalizers", torch.full((num_tensors,), float("nan")))
        # Cached so that, once set, the check costs no host sync per step (on an accelerator);
        # reset whenever a state dict is loaded.
        self._known_initialized = False
        self.register_load_state_dict_post_hook(_reset_nce_flag)

    @property
    def initialized(self) -> bool:
        """True once the constants are set (estimated here or loaded from a state dict)."""
        if not self._known_initialized:
            self._known_initialized = bool(torch.isfinite(self.normalizers).all())
        return self._known_initialized

    def forward(self, scores: Sequence[Tensor]) -> Tensor:
        if not self.initialized:
            est = estimate_nce_normalizers(scores, self.num_samples, self.temperature)
            if est.numel() != self.normalizers.numel():
                raise ValueError(f"expected {self.normalizers.numel()} score tensors, got {est.numel()}")
            self.normalizers.copy_(est)
        return nce_loss(scores, self.normalizers, self.num_samples, self.temperature, self.eps)


def _reset_nce_flag(module: NCELoss, incompatible_keys: object) -> None:
    module._known_initialized = False


# --------------------------------------------------------------------------- OUCL
def oucl_loss(
    scores: Sequence[Tensor],
    *,
    beta: float,
    margin: float | None,
    weighting: str,
    gamma: float,
    phi_dec: float,
) -> Tensor:
    """Optimisation-driven unified contrastive loss (docs/METHODS.md section 4; paper eq. 8-10).

    Every score ``s`` is first mapped to ``(s + 1) / 2`` (into ``[0, 1]``). Per anchor ``i`` (a
    row, shared by all T tensors) its positives are ``p_ik = s_k[i, 0]`` (T of them, one per
    tensor) and its negatives ``n_ij`` are the ``T*K`` entries ``s_k[i, 1:]``. Then

    ``l_i = softplus( logsumexp_j( beta * a_n_ij * (n_ij - D_n) )
                    + logsumexp_k( -beta * a_p_ik * (p_ik - D_p) ) )``
    ``L   = (16 / beta) * mean_i l_i``

    Options (each computes exactly this; the defaults are ``LossConfig``'s, the ``loss`` section):

    - ``margin=None`` (default): ``D_p = D_n = 0`` -- paper eq. 8 with lambda = 0, times 16.
      ``margin=m``: ``D_p = 1 - m``, ``D_n = m`` -- paper eq. 8 with lambda = 1 - 2m.
    - ``weighting="none"`` (default): ``a_p = a_n = 1``.
      ``weighting="adaptive"`` (paper eq. 9-10, section 4.4): per score, *detached* (no
      gradient flows through the weights),
      ``a_p_ik = max(0, 1 + gamma - p_ik) / phi_dec`` and ``a_n_ij = max(0, n_ij + gamma) / phi_dec``
      computed on the mapped scores (paper's best gamma 0.4, phi_dec 6). Harder positives
      (small p) and harder negatives (large n) get larger weights.

    Args:
        scores: T tensors ``[B, K+1]`` (raw dot products), positive in column 0.
        beta: inverse temperature (default 16); the result is scaled by ``16 / beta``.
        margin, weighting, gamma, phi_dec: see above.

    Returns:
        Scalar loss (dtype of the scores).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if phi_dec <= 0:
        raise ValueError(f"phi_dec must be > 0, got {phi_dec}")
    st = (_stack(scores) + 1.0) / 2.0  # [B, T, K+1] in [0, 1]
    b = st.shape[0]
    pos = st[:, :, 0]  # [B, T]
    neg = st[:, :, 1:].reshape(b, -1)  # [B, T*K]
    d_p, d_n = (0.0, 0.0) if margin is None else (1.0 - margin, margin)
    if weighting == "adaptive":
        a_p = torch.clamp(1.0 + gamma - pos.detach(), min=0.0) / phi_dec
        a_n = torch.clamp(neg.detach() + gamma, min=0.0) / phi_dec
        neg_logits = beta * a_n * (neg - d_n)
        pos_logits = -beta * a_p * (pos - d_p)
    else:
        neg_logits = beta * (neg - d_n)
        pos_logits = -beta * (pos - d_p)
    x = torch.logsumexp(neg_logits, dim=1) + torch.logsumexp(pos_logits, dim=1)
    # softplus(x) = log(1 + e^x), computed exactly for all x (F.softplus returns x itself above
    # its threshold 20, an error of up to e^-20).
    per_anchor = torch.logaddexp(x, torch.zeros_like(x))
    return (16.0 / beta) * per_anchor.mean()


# --------------------------------------------------------------------------- regulariser R
def _reg_view(st: Tensor, scores: str) -> Tensor:
    """The scores R works on: ``(s + 1) / 2`` for ``"mapped"``, ``s`` itself for ``"raw"``.

    ``st`` is any stack of raw scores (e.g. ``[B, T, K+1]``); the result has its shape and dtype.
    """
    if scores not in REG_SCORES:
        raise ValueError(f"scores must be one of {REG_SCORES}, got {scores!r}")
    # The same map as OUCL (and as the official code, which computes R on the mapped scores).
    return (st + 1.0) / 2.0 if scores == "mapped" else st


def margin_thresholds(orig_scores: Sequence[Tensor], mode: str, scores: str) -> tuple[Tensor, Tensor]:
    """Per-anchor thresholds ``(sigma_plus, sigma_minus)``, each ``[B]`` (paper eq. 4).

    Let ``q = (s + 1) / 2`` for ``scores="mapped"`` (default, as OUCL and the official code) or
    ``q = s`` for ``scores="raw"``. From the original-only scores of anchor (row) ``i`` over all
    T tensors: ``min+ = min_k q_k[i, 0]`` (smallest positive) and
    ``max- = max_{k, j>=1} q_k[i, j]`` (largest negative). Then

    - ``"large"``:  ``sigma+ = min(min+, max-)``, ``sigma- = max(min+, max-)``
    - ``"small"``:  ``sigma+ = max(min+, max-)``, ``sigma- = min(min+, max-)``
    - ``"medium"``: ``sigma+ = sigma- = (min+ + max-) / 2``

    The map is increasing and affine, so the mapped thresholds are ``(raw thresholds + 1) / 2``.

    Args:
        orig_scores: T tensors ``[B, K+1]`` (raw dot products), positive in column 0.
        mode: ``"large"`` | ``"medium"`` | ``"small"``.
        scores: ``"mapped"`` | ``"raw"``.
    """
    if mode not in REG_MODES:
        raise ValueError(f"mode must be one of {REG_MODES}, got {mode!r}")
    st = _reg_view(_stack(orig_scores), scores)  # [B, T, K+1]
    b = st.shape[0]
    min_pos = st[:, :, 0].amin(dim=1)  # [B]
    max_neg = st[:, :, 1:].reshape(b, -1).amax(dim=1)  # [B]
    lo, hi = torch.minimum(min_pos, max_neg), torch.maximum(min_pos, max_neg)
    if mode == "large":
        return lo, hi
    if mode == "small":
        return hi, lo
    mid = 0.5 * (min_pos + max_neg)
    return mid, mid


def margin_regularizer(
    orig_scores: Sequence[Tensor],
    aug_scores: Sequence[Tensor],
    mode: str,
    *,
    c: float,
    detach_thresholds: bool,
    scores: str,
) -> Tensor:
    """Margin-injected regulariser R (docs/METHODS.md section 4; paper eq. 4-5).

    With per-anchor thresholds ``sigma+_i``, ``sigma-_i`` from :func:`margin_thresholds` (eq. 4)
    on ``orig_scores`` (encoder-only features), and ``p^``/``n^`` the positives (column 0) and
    negatives (columns 1..K) of ``aug_scores`` (scores whose anchor is a MAG output), eq. 5:

    ``R = c * mean_{i,k}( max(0, p^_ik - sigma+_i) ) + mean_{i,k,j}( max(0, sigma-_i - n^_ikj) )``

    i.e. augmented positives are pushed below ``sigma+`` (made harder) and augmented negatives
    above ``sigma-`` (made harder). ``c`` (``metaug.reg_c``; 1e-4 hidden in the official code) scales the
    positive term only, as docs/METHODS.md section 4 writes the formula; the overall weight is ``alpha`` in the
    objective.

    Which scores eq. 4-5 read (``scores``):

    - ``"mapped"`` (default; the official code, and the map OUCL uses): every score, original
      and augmented, is first mapped ``s -> (s + 1) / 2``; thresholds and hinges are computed on
      the mapped values. Since the map is affine with slope 1/2,
      ``max(0, (p^+1)/2 - (sigma+ +1)/2) = max(0, p^ - sigma+) / 2`` (likewise for negatives), so
      this is exactly half of ``"raw"``.
    - ``"raw"``: eq. 4-5 on the raw dot products in ``[-1, 1]`` (this module's behaviour before
      the switch existed; twice the official value).

    Args:
        orig_scores: T tensors ``[B, K+1]`` from original features (raw dot products).
        aug_scores: T' tensors ``[B, K+1]`` that involve an augmented feature (same B and K).
        mode: ``"large"`` | ``"medium"`` | ``"small"`` (eq. 4).
        c: weight of the positive hinge.
        detach_thresholds: if True, no gradient flows into the thresholds (default False: the
            thresholds are min/max of the original scores and pass (sub)gradients).
        scores: ``"mapped"`` | ``"raw"`` (see above).

    Returns:
        Scalar R (dtype of the scores).
    """
    sig_p, sig_n = margin_thresholds(orig_scores, mode, scores)  # [B], [B]
    if detach_thresholds:
        sig_p, sig_n = sig_p.detach(), sig_n.detach()
    aug = _reg_view(_stack(aug_scores), scores)  # [B, T', K+1]
    if aug.shape[0] != sig_p.shape[0]:
        raise ValueError("orig_scores and aug_scores must have the same batch size")
    pos_term = torch.clamp(aug[:, :, 0] - sig_p[:, None], min=0.0).mean()
    neg_term = torch.clamp(sig_n[:, None, None] - aug[:, :, 1:], min=0.0).mean()
    return c * pos_term + neg_term
