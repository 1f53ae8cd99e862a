"""This rank's input of every global step, and the worker thread that prepares the next one.

A step's batch is a pure function of ``(run.seed, step)``: the sample order of epoch e is a
permutation drawn from (seed, e), and the crop boxes, flips and negatives of step t come from
generators seeded with (seed, stream, t) (``data.step_generator``). Random numbers are drawn for
the whole global batch and each rank takes its contiguous slice, so every world size sees the
same numbers and a resumed run continues the same stream (tests/training/test_train_resume.py,
tests/training/test_train_ddp.py). Nothing here depends on how many steps ran in this process,
and nothing reads the memory bank's contents (only its sampler), which is why a batch prepared
ahead of time in a worker thread is the batch.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .augment import BatchAugment, apply_crops
from .config import TrainConfig
from .data import ImageArray, epoch_permutation, global_batch_indices, step_generator
from .distributed import DistContext
from .methods import TrainState, to_network_input
from .view_generators import GeneratorBatch

#: One step's input on this rank: network input ``[b, C, S, S]``, dataset indices ``[b]``,
#: sample indices ``[b, K+1]`` and what the view generators read (None without generators).
StepBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, GeneratorBatch | None]


class StepBatches:
    """The batches of a run on this rank: ``local_batch = optim.batch_size / world_size`` rows
    of global step ``step``, for ``0 <= step < end_step`` (``spe`` steps per epoch).

    The whole uint8 dataset ``[N, H, W, 3]`` is kept on the device when that is a GPU
    (CIFAR-10: 150 MB), so a step costs one ``index_select``.
    """

    def __init__(self, cfg: TrainConfig, data: ImageArray, state: TrainState, ctx: DistContext,
                 spe: int, end_step: int) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.state = state
        self.num_samples = len(data)
        self.spe = spe
        self.end_step = end_step
        self.augment = BatchAugment(state.encoder.config.input_size, cfg.data.crop_scale, cfg.data.crop_ratio,
                                    cfg.data.flip)
        images = torch.from_numpy(data.images)
        self.images = images.to(ctx.device) if ctx.device.type == "cuda" else images
        self.local_batch = cfg.optim.batch_size // ctx.world_size
        # The epoch permutation is cached: drawing it costs O(N) and it changes once per epoch.
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None
        # run.prefetch: one worker thread prepares batch(step + 1) while step runs; only the
        # worker calls batch_for_step once prefetching is on.
        self._prefetch_pool: ThreadPoolExecutor | None = None
        self._prefetched: tuple[int, Future] | None = None

    @property
    def rows(self) -> tuple[int, int]:
        """``[lo, hi)``: this rank's rows of the global batch."""
        return self.ctx.rank * self.local_batch, (self.ctx.rank + 1) * self.local_batch

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's slice of global step ``step``: network input ``[b, C, S, S]``, dataset
        indices ``[b]`` and sample indices ``[b, K+1]``, on the device."""
        return self.batch_for_step(step)[:3]

    def batch_for_step(self, step: int) -> StepBatch:
        """``batch(step)`` plus what the view generators read (None without generators)."""
        cfg, ctx = self.cfg, self.ctx
        epoch, s = divmod(step, self.spe)
        if epoch != self._perm_epoch:
            self._perm = epoch_permutation(self.num_samples, cfg.run.seed, epoch)
            self._perm_epoch = epoch
        g = cfg.optim.batch_size
        g_idx = global_batch_indices(self.num_samples, g, cfg.run.seed, epoch, s, perm=self._perm)
        h, w = self.images.shape[1], self.images.shape[2]
        # Random numbers for the whole global batch, so every world size draws the same ones.
        params = self.augment.sample(g, h, w, step_generator(cfg.run.seed, "augment", step))
        sample_idx = self.state.bank.sample(g_idx, step_generator(cfg.run.seed, "negatives", step))
        lo, hi = self.rows
        idx = g_idx[lo:hi]
        dev = ctx.device
        rgb = self.crops(idx, params[lo:hi])
        gen_batch = None
        if self.state.generators:
            gen_batch = GeneratorBatch(rgb, idx.to(dev), torch.arange(lo, hi), g, step, params[lo:hi])
        x = to_network_input(cfg, self.state.encoder, rgb)
        return x, idx.to(dev), sample_idx[lo:hi].to(dev, non_blocking=True), gen_batch

    def crops(self, idx: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """RGB crops ``[b, 3, S, S]`` in [0, 1] of dataset rows ``idx`` ``[b]`` cropped and
        flipped by ``params`` (rows of ``BatchAugment.sample``), on the device."""
        pixels = self.images.index_select(0, idx.to(self.images.device)).to(self.ctx.device, non_blocking=True)
        return apply_crops(pixels.permute(0, 3, 1, 2), params, self.augment.out_size)

    def network_input(self, idx: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Network input ``[b, C, S, S]`` of dataset rows ``idx`` ``[b]`` cropped and flipped by
        ``params`` (rows of ``BatchAugment.sample``), on the device."""
        return to_network_input(self.cfg, self.state.encoder, self.crops(idx, params))

    # ------------------------------------------------------------------ prefetch
    @property
    def prefetching(self) -> bool:
        """Whether the worker thread is running (it starts at the first ``next_batch``)."""
        return self._prefetch_pool is not None

    def next_batch(self, step: int) -> StepBatch:
        """``batch_for_step(step)``, taken from the worker thread when ``run.prefetch`` is on
        (the worker then starts on ``step + 1``)."""
        if not self.cfg.run.prefetch:
            return self.batch_for_step(step)
        if self._prefetch_pool is None:
            self._prefetch_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metaug-prefetch")
        pending = self._prefetched
        if pending is not None and pending[0] != step:
            pending[1].result()  # a stale guess (a jump in steps): drop it
            pending = None
        future = pending[1] if pending is not None else self._prefetch_pool.submit(self.batch_for_step, step)
        self._prefetched = ((step + 1, self._prefetch_pool.submit(self.batch_for_step, step + 1))
                            if step + 1 < self.end_step else None)
        return future.result()

    def close(self) -> None:
        """Stop the prefetch worker (idempotent)."""
        if self._prefetch_pool is not None:
            self._prefetch_pool.shutdown(wait=True, cancel_futures=True)
            self._prefetch_pool = None
            self._prefetched = None
