"""Helpers shared by the training tests: a tiny run's overrides and a bit-exact state comparison."""

from __future__ import annotations

import torch

STATE_KEYS = ("encoder", "mags", "bank", "nce", "optimizer", "mag_optimizer")


def tiny(cifar_images, out_dir, *overrides: str) -> list[str]:
    return [f"data.path={cifar_images}", "data.split=train", "data.cache_dir=", "data.num_workers=0",
            "model.width=0.125", "model.views=l,ab", "bank.num_negatives=32", "optim.batch_size=16",
            "optim.epochs=3", "optim.milestones=1,2", f"run.out_dir={out_dir}", "run.num_threads=1",
            "run.quiet=true", "run.export=false", *overrides]


def assert_same_state(a: dict, b: dict) -> None:
    """Every tensor of every state equal, bit for bit."""
    def walk(x, y, where):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y), where
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        else:
            assert x == y, (where, x, y)
    for key in STATE_KEYS:
        walk(a[key], b[key], key)
    assert a["step"] == b["step"]
