"""The MAG meta step (docs/METHODS.md section 6, step 2): second-order gradients for the MAGs.

Given the (already updated) encoder parameters theta' and a minibatch x:

1. ``z = f(theta'; x)``, ``z^ = MAG(z)``, ``L_in = L_tot(z, z^)`` (the encoder-step loss);
2. ``g = dL_in/dtheta`` with ``create_graph=True`` -- g depends on the MAG parameters phi
   through the augmented terms (``delta * L(z^)``) and R (when it is in the encoder loss);
3. fast weights ``theta* = theta' - eta_in * g``;
4. ``z* = f(theta*; x)``, ``L_out = L_tot(z*, MAG(z*)) (+ alpha * R)`` (the MAG loss);
5. ``dL_out/dphi`` through both paths: directly through ``MAG(z*)`` and, second order,
   through ``theta*(phi) = theta' - eta_in * g(phi)``.

Both encoder forwards use :func:`torch.func.functional_call` in train mode (BN on batch
statistics) with *copies* of every buffer, so BN ``running_mean``, ``running_var`` and
``num_batches_tracked`` of the encoder -- and of the MAGs -- are left exactly as they were. No
``.grad`` field is written, no optimiser is stepped, the memory bank is only read by the loss
closures (except the official code's extra writes, ``metaug.bank_writes="code"``, which
:func:`metaug_meta_step` makes through its ``write_bank`` callback): the caller sets the returned gradients on the MAG parameters (:func:`set_gradients`),
all-reduces them under DDP, and steps the MAG optimiser. Under DDP, pass the unwrapped module
(``ddp.module``); g is then the per-rank inner gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.func import functional_call

from .memory_bank import MemoryBank
from .objective import NegativeDraw, ObjectiveConfig, metaug_objective

Features = dict[str, Tensor]
PairLoss = Callable[[Features, Features], Tensor]


class _MethodCall(nn.Module):
    """Wraps ``module`` so that ``forward`` calls ``module.<method>``; functional_call only
    ever calls ``forward``. Parameter names get the prefix ``"m."``."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.m = module
        self.method = method

    def forward(self, *args: Any) -> Any:
        return getattr(self.m, self.method)(*args)


class _ApplyMags(nn.Module):
    """``{view: z} -> {view: MAG_view(z)}`` as one module (for functional_call)."""

    def __init__(self, mags: nn.ModuleDict) -> None:
        super().__init__()
        self.mags = mags

    def forward(self, z: Mapping[str, Tensor]) -> Features:
        missing = [v for v in z if v not in self.mags]
        if missing:
            raise ValueError(f"no MAG for view(s) {missing}")
        return {v: self.mags[v](t) for v, t in z.items()}


@contextmanager
def _train_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules in train mode (BN batch statistics) and restore every submodule's flag."""
    saved = [(m, m.training) for mod in modules for m in mod.modules()]
    try:
        for mod in modules:
            mod.train()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def _buffer_copies(module: nn.Module) -> dict[str, Tensor]:
    # BN in train mode writes running stats in place into whatever buffers it is given;
    # handing it clones keeps the real buffers untouched.
    return {n: b.clone() for n, b in module.named_buffers()}


def _call(module: nn.Module, params: Mapping[str, Tensor], x: Any) -> Any:
    frozen = {n: p for n, p in module.named_parameters() if n not in params}
    return functional_call(module, (dict(params), frozen, _buffer_copies(module)), (x,))


def mag_meta_gradients(
    encoder: nn.Module,
    mags: nn.ModuleDict,
    x: Any,
    loss_fn: PairLoss,
    inner_lr: float,
    outer_loss_fn: PairLoss | None = None,
    first_order: bool = False,
    method: str = "embed",
    *,
    grad_mode: str,
    stats: dict[str, Tensor] | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """MAG gradients of the meta step (docs/METHODS.md section 6, step 2; see module docstring for the maths).

    Args:
        encoder: module with ``encoder.<method>(x) -> {view: [B, d]}`` (MetAugEncoder.embed).
            Its trainable parameters are theta'; frozen ones (``requires_grad=False``) stay
            fixed in theta*.
        mags: ``nn.ModuleDict`` view -> MAG (phi).
        x: the minibatch, passed as is to ``encoder.<method>``.
        loss_fn: ``(z, z_hat) -> scalar``, the encoder-step L_tot used for g.
        inner_lr: eta_in (``metaug.inner_lr``; the paper uses the encoder lr).
        outer_loss_fn: ``(z*, z_hat*) -> scalar`` MAG loss; defaults to ``loss_fn``. With
            ``reg_where="mag"`` it differs from ``loss_fn`` by ``alpha * R``
            (:func:`metaug_meta_step` builds both).
        first_order: if True, g is treated as a constant (no ``create_graph``): the
            first-order approximation, for ablations and tests only.
        method: name of the encoder method that returns the embeddings.
        grad_mode: how the second-order term is computed (``run.meta_grad``; same value up to
            float rounding): ``"double_backward"`` builds g with ``create_graph=True`` and
            differentiates the whole inner backward; ``"jvp"`` (faster) uses the factorisation below.
        stats: if a dict is given, the gradient's split is written into it (detached scalars):
            ``grad_norm_direct`` = ||direct part||, and on the "jvp" route (where both parts are
            computed anyway) ``grad_norm_second`` = ||second-order part|| and
            ``second_order_share`` = second / (direct + second), norms over all MAG parameters.

    The "jvp" route. With ``u(phi) = dL_in/dz`` (the loss head's gradient at z = f(theta'; x))
    and J = dz/dtheta', g = J^T u, so theta* = theta' - eta J^T u(phi) and

        dL_out/dphi = (direct, through MAG(z*)) - eta * d/dphi <u(phi), J v>,   v = dL_out/dtheta*.

    J v is one forward-mode product through the encoder (``torch.autograd.forward_ad``), and
    d/dphi <u, w> is a double backward through the loss head only (MAGs, bank scores, OUCL):
    no second-order graph of the encoder's backward is ever built.

    Returns:
        ``(grads, mag_loss)``: ``grads`` maps every trainable MAG parameter name (as in
        ``mags.named_parameters()``) to its gradient (zeros when unused), ``mag_loss`` is the
        detached outer loss.
    """
    if inner_lr < 0:
        raise ValueError(f"inner_lr must be >= 0, got {inner_lr}")
    if grad_mode not in ("jvp", "double_backward"):
        raise ValueError(f"grad_mode must be 'jvp' or 'double_backward', got {grad_mode!r}")
    outer_loss_fn = loss_fn if outer_loss_fn is None else outer_loss_fn
    enc = _MethodCall(encoder, method)
    apply_mags = _ApplyMags(mags)
    theta = {n: p for n, p in enc.named_parameters() if p.requires_grad}
    phi = {n: p for n, p in apply_mags.named_parameters() if p.requires_grad}
    if not phi:
        raise ValueError("the MAGs have no trainable parameters")

    if grad_mode == "jvp" and not first_order:
        with _train_mode(encoder, mags), torch.enable_grad():
            return _meta_gradients_jvp(enc, apply_mags, theta, phi, x, loss_fn, outer_loss_fn, inner_lr, stats)

    with _train_mode(encoder, mags), torch.enable_grad():
        z = _call(enc, theta, x)
        l_in = loss_fn(z, _call(apply_mags, phi, z))
        g = torch.autograd.grad(l_in, list(theta.values()), create_graph=not first_order,
                                allow_unused=True)
        # theta' itself is a constant w.r.t. phi: detach it so the graph only keeps g's path.
        fast = {n: (p.detach() if gi is None else p.detach() - inner_lr * gi)
                for (n, p), gi in zip(theta.items(), g)}
        z_star = _call(enc, fast, x)
        l_out = outer_loss_fn(z_star, _call(apply_mags, phi, z_star))
        d_phi = torch.autograd.grad(l_out, list(phi.values()), allow_unused=True)

    grads = {n[len("mags."):]: (torch.zeros_like(p) if gi is None else gi)
             for (n, p), gi in zip(phi.items(), d_phi)}
    if stats is not None and first_order:
        # First order: the whole gradient is the direct part.
        stats["grad_norm_direct"] = _global_norm(grads.values())
    return grads, l_out.detach()


def _global_norm(tensors: Any) -> Tensor:
    """The L2 norm of several tensors taken as one vector (detached)."""
    parts = [t.detach().reshape(-1) for t in tensors if t is not None]
    return torch.linalg.vector_norm(torch.cat(parts)) if parts else torch.zeros(())


def _meta_gradients_jvp(enc: nn.Module, apply_mags: nn.Module, theta: dict[str, Tensor],
                        phi: dict[str, Tensor], x: Any, loss_fn: PairLoss, outer_loss_fn: PairLoss,
                        inner_lr: float, stats: dict[str, Tensor] | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """The "jvp" route of :func:`mag_meta_gradients` (see its docstring for the maths)."""
    names, params = list(theta), list(theta.values())
    # z = f(theta'; x) and the head's gradient u(phi) = dL_in/dz, with a graph to phi.
    z = _call(enc, theta, x)
    z_leaf = {v: t.detach().requires_grad_(True) for v, t in z.items()}
    l_in = loss_fn(z_leaf, _call(apply_mags, phi, z_leaf))
    u = torch.autograd.grad(l_in, list(z_leaf.values()), create_graph=True)
    # g = J^T u: a plain (first-order) backward through the encoder.
    g = torch.autograd.grad(list(z.values()), params, grad_outputs=[t.detach() for t in u], allow_unused=True)
    del z
    fast = {n: (p.detach() if gi is None else p.detach() - inner_lr * gi).requires_grad_(True)
            for n, p, gi in zip(names, params, g)}
    z_star = _call(enc, fast, x)
    l_out = outer_loss_fn(z_star, _call(apply_mags, phi, z_star))
    outs = torch.autograd.grad(l_out, list(phi.values()) + list(fast.values()), allow_unused=True)
    d_direct, v = outs[:len(phi)], outs[len(phi):]
    del z_star
    # w = J v, forward mode at theta' (fresh buffer copies: BN statistics untouched).
    primals = {n: p.detach() for n, p in theta.items()}
    tangents = {n: (torch.zeros_like(p) if vi is None else vi) for (n, p), vi in zip(primals.items(), v)}
    # torch.autograd.forward_ad (dual tensors) rather than torch.func.jvp: BN writes its
    # running statistics in place, which func transforms refuse on captured buffers.
    with fwAD.dual_level():
        duals = {n: fwAD.make_dual(p, t) for (n, p), t in zip(primals.items(), tangents.values())}
        out = _call(enc, duals, x)
        w = [fwAD.unpack_dual(out[k]).tangent for k in z_leaf]
    w = [torch.zeros_like(u_i) if w_i is None else w_i for u_i, w_i in zip(u, w)]
    # second-order term: -eta * d/dphi <u(phi), w>, through the loss head only.
    d_second = torch.autograd.grad(u, list(phi.values()), grad_outputs=list(w), allow_unused=True)
    grads = {}
    for (n, p), a, b in zip(phi.items(), d_direct, d_second):
        gi = torch.zeros_like(p) if a is None else a
        if b is not None:
            gi = gi - inner_lr * b
        grads[n[len("mags."):]] = gi
    if stats is not None:
        direct = _global_norm(d_direct)
        second = inner_lr * _global_norm(d_second)
        stats["grad_norm_direct"] = direct
        stats["grad_norm_second"] = second
        stats["second_order_share"] = second / (direct + second).clamp_min(torch.finfo(second.dtype).tiny)
    return grads, l_out.detach()


def metaug_meta_step(
    encoder: nn.Module,
    mags: nn.ModuleDict,
    x: Any,
    bank: MemoryBank,
    sample_idx: Tensor,
    objective: ObjectiveConfig,
    *,
    inner_lr: float,
    grad_mode: str,
    first_order: bool = False,
    draw: NegativeDraw | None = None,
    write_bank: Callable[[Features], None] | None = None,
    diagnostics: bool = False,
) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
    """docs/METHODS.md section 6, step 2 with the MetAug objective: :func:`mag_meta_gradients` with
    ``loss_fn = L_tot(phase="encoder")`` and ``outer_loss_fn = L_tot(phase="mag")`` (the latter
    includes ``alpha * R`` unless ``objective.metaug.reg_where == "off"``), both scored against
    ``bank`` at ``sample_idx`` (pass the step-1 indices or fresh ones). ``inner_lr`` is eta_in
    (``metaug.inner_lr``, or the encoder's scheduled lr under ``metaug.inner_lr_follows_encoder``),
    ``grad_mode`` is ``run.meta_grad``.

    The official code's variants (docs/METHODS.md section 11; rows in sections 4.3 and 6):

    - ``draw`` (``metaug.negatives="per_call"``): every scoring call other than each loss's
      original term gets a fresh draw (:func:`~metaug_training.objective.metaug_objective`).
    - ``write_bank`` (``metaug.bank_writes="code"``): called with the detached embeddings of the
      updated encoder ``z = f(theta'; x)`` right after the inner loss has scored them, and with
      the fast-weight embeddings ``z* = f(theta*; x)`` after the MAG loss has scored them: the
      official code's second and third bank writes. The callee must write out of place
      (``MemoryBank.update(..., in_place=False)``): the inner loss's graph still holds the bank.
      The gradients are then those of the code's order (the MAG loss sees the bank after the
      second write).

    Returns ``(grads, mag_loss, logs)`` with ``logs`` the detached terms of the MAG loss and,
    with ``diagnostics``, the meta diagnostics: the MAG loss's ``"diag/..."`` values
    (:func:`~metaug_training.objective.meta_diagnostics`) and the gradient split
    (``grad_norm_direct``, ``grad_norm_second``, ``second_order_share``; see
    :func:`mag_meta_gradients`).
    """
    logs: dict[str, Tensor] = {}

    def negatives() -> Tensor:
        # Under per_call every loss of the meta step draws anew, its original term included.
        return sample_idx if draw is None else draw()

    def inner(z: Features, z_hat: Features) -> Tensor:
        loss = metaug_objective(z, z_hat, bank, negatives(), objective, phase="encoder", draw=draw)[0]
        if write_bank is not None:
            write_bank({v: t.detach() for v, t in z.items()})
        return loss

    def outer(z: Features, z_hat: Features) -> Tensor:
        total, terms = metaug_objective(z, z_hat, bank, negatives(), objective, phase="mag", draw=draw,
                                        diagnostics=diagnostics)
        logs.update(terms)
        if write_bank is not None:
            write_bank({v: t.detach() for v, t in z.items()})
        return total

    stats: dict[str, Tensor] | None = {} if diagnostics else None
    grads, loss = mag_meta_gradients(encoder, mags, x, inner, inner_lr, outer, first_order, grad_mode=grad_mode,
                                     stats=stats)
    if stats:
        logs.update(stats)
    return grads, loss, logs


def set_gradients(module: nn.Module, grads: Mapping[str, Tensor], accumulate: bool = False) -> None:
    """Write ``grads`` (name -> tensor, names of ``module.named_parameters()``) into ``.grad``.

    ``accumulate=True`` adds to existing ``.grad`` instead of replacing it.
    """
    params = dict(module.named_parameters())
    unknown = [n for n in grads if n not in params]
    if unknown:
        raise ValueError(f"gradients for unknown parameters: {unknown[:5]}")
    for n, gr in grads.items():
        p = params[n]
        gr = gr.detach().to(p.dtype)
        if accumulate and p.grad is not None:
            p.grad.add_(gr)
        else:
            p.grad = gr.clone()
