"""docs/EXTENDING.md, "Add a view generator": the recipe's block, run as written and added as a
row of ``VIEW_GENERATORS``, adds its term to every method's step (the method's loss of the
mirrored crops, weighted into the total) and resumes exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from _doc_blocks import add_recipe_rows
from _train_helpers import assert_same_state, tiny

from metaug_training.checkpoint import load_checkpoint
from metaug_training.config import load_config
from metaug_training.distributed import DistContext
from metaug_training.methods import objective_config, to_network_input, train_step
from metaug_training.methods.step import contrastive_loss
from metaug_training.trainer import Trainer, load_data, train
from metaug_training.view_generators import VIEW_GENERATORS

HEADING = "Add a view generator"


@pytest.fixture
def flip(monkeypatch):
    """The block's row added to the table for this test only; returns the generator class."""
    return add_recipe_rows(HEADING, VIEW_GENERATORS, monkeypatch, ["flip"])["FlipViews"]


@pytest.mark.parametrize("method", ["oucl", "cmc"])
def test_first_step_adds_the_methods_loss_of_the_mirrored_crops(flip, cifar_images, tmp_path, method):
    """Recomputed by hand from a copy of the state before the step: the generator's term is the
    method's contrastive loss of the mirrored crops' embeddings, and the step's gradient is that
    of the method's loss + 0.5 x the term."""
    cfg = load_config(None, tiny(cifar_images, tmp_path, f"method={method}"))
    ctx = DistContext(device=torch.device("cpu"))
    tr = Trainer(cfg, load_data(cfg, ctx), ctx)
    (gen,) = tr.state.generators
    assert isinstance(gen, flip) and gen.weight == 0.5
    before = copy.deepcopy(tr.state)
    x, idx, si, gb = tr.next_batch(0)
    logs = train_step(cfg, tr.state, x, idx, si, 0, tr.ctx, gb)

    obj = objective_config(cfg)
    enc = before.encoder
    z = enc.embed(x)
    z_flip = enc.embed(to_network_input(cfg, enc, gb.rgb.flip(-1)))
    want_term = contrastive_loss(cfg, before, z_flip, si, obj)
    want_loss = contrastive_loss(cfg, before, z, si, obj)
    torch.testing.assert_close(logs["loss_flip"], want_term.detach())
    torch.testing.assert_close(logs["loss"], want_loss.detach())
    # the encoder moved by the gradient of loss + 0.5 x term (plain SGD with momentum, first step)
    (want_loss + 0.5 * want_term).backward()
    lr = tr.state.opt.param_groups[0]["lr"]
    wd = cfg.optim.weight_decay
    for p_after, p0 in zip(tr.state.encoder.parameters(), enc.parameters()):
        if p0.grad is not None:
            torch.testing.assert_close(p_after.detach(), p0.detach() - lr * (p0.grad + wd * p0.detach()),
                                       rtol=1e-4, atol=1e-6)


def test_training_with_it_logs_its_term_and_resumes_exactly(flip, cifar_images, tmp_path):
    def run(out, steps, resume=False):
        return train(load_config(None, tiny(cifar_images, out, "method=oucl", f"run.max_steps={steps}",
                                            "run.log_every=2")), resume=resume)

    full = run(tmp_path / "full", 4)
    run(tmp_path / "part", 2)
    resumed = run(tmp_path / "part", 4, resume=True)
    assert "loss_flip" in full.last_logs and full.last_logs["loss_flip"] > 0
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert_same_state(a, b)
    assert a["generators"] == [{}]  # the flip has no state to keep
