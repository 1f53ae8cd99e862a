"""Export: checkpoint -> model folder -> load_encoder gives the training encoder's features;
the metaug-train / metaug-export commands end to end on real images."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from metaug_cli.export import main as export_main
from metaug_cli.train import main as train_main
from metaug_features import load_encoder
from metaug_training.checkpoint import load_checkpoint, git_commit
from metaug_training.config import TrainConfig
from metaug_training.distributed import DistContext
from metaug_training.trainer import Trainer, load_data


def tiny(cifar_images, out_dir, *overrides: str) -> list[str]:
    return [f"data.path={cifar_images}", "data.split=train", "data.cache_dir=", "data.num_workers=0",
            "model.width=0.125", "bank.num_negatives=32", "optim.batch_size=16",
            "optim.epochs=2", f"run.out_dir={out_dir}", "run.num_threads=1", *overrides]


def test_train_cli_then_export_cli_then_load_encoder(cifar_images, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(train_main, ["--config", "cifar10-metaug", "--quiet",
                                     *tiny(cifar_images, out, "run.max_steps=5", "metaug.meta_every=2")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    ckpt_path = out / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["step"] == 5 and (out / "export" / "config.json").is_file()

    folder = tmp_path / "exported"
    res = runner.invoke(export_main, [str(ckpt_path), "-o", str(folder)])
    assert res.exit_code == 0, res.output
    enc = load_encoder(folder)
    prov = json.loads((folder / "config.json").read_text())["provenance"]
    assert prov["method"] == "metaug" and prov["dataset"] == cifar_images.name and prov["steps"] == 5
    assert prov["epochs"] == round(5 / 12, 3) and prov["git_sha"] == git_commit() and prov["meta_every"] == 2
    assert enc.config.views == ("l", "ab", "ori") and enc.config.width == 0.125

    # the training-time encoder (rebuilt from the checkpoint's state) in eval mode
    cfg = TrainConfig.from_dict(ckpt["config"])
    from metaug_features.model import MetAugEncoder

    train_enc = MetAugEncoder(cfg.encoder_config())
    train_enc.load_state_dict(ckpt["encoder"])
    train_enc.eval()
    paths = sorted((cifar_images / "test" / "cat").glob("*.jpg"))[:8]
    for layer in enc.layers:
        assert torch.equal(enc.extract(paths, layer=layer), train_enc.extract(paths, layer=layer)), layer
    # the folder written by the run itself holds the same weights
    auto = load_encoder(out / "export")
    assert torch.equal(auto.extract(paths), enc.extract(paths))


def test_export_equals_live_trainer_encoder(cifar_images, tmp_path):
    """Features of the exported folder == features of the Trainer's own encoder object (the
    one that was trained, BN running statistics included) in eval mode."""
    from metaug_training.config import load_config

    cfg = load_config(None, tiny(cifar_images, tmp_path, "method=cmc", "model.views=l,ab", "run.quiet=true"))
    torch.set_num_threads(1)
    ctx = DistContext()
    tr = Trainer(cfg, load_data(cfg, ctx), ctx)
    for step in range(3):
        tr.step(step)
    folder = tr.export(3)
    enc = load_encoder(folder)
    # Training keeps NHWC conv weights (run.channels_last); an NHWC conv rounds differently,
    # so compare with the same values in the plain layout the folder stores.
    live = tr.state.encoder.eval().to(memory_format=torch.contiguous_format)
    x = live.preprocess.to_input(torch.from_numpy(tr.data.images[:10]).permute(0, 3, 1, 2))
    with torch.no_grad():
        for layer in enc.layers:
            assert torch.equal(enc(x, layer), live(x, layer)), layer


def test_cli_errors_are_clear(cifar_images, tmp_path):
    runner = CliRunner()
    res = runner.invoke(train_main, ["--config", "cifar10-cmc", "optim.lrr=0.1"])
    assert res.exit_code != 0 and "'optim.lrr'" in res.output
    res = runner.invoke(train_main, ["--config", "cifar10-cmc", "optim.batch_size=big"])
    assert res.exit_code != 0 and "'optim.batch_size'" in res.output
    res = runner.invoke(train_main, ["--config", "cifar10-cmc", f"data.path={tmp_path / 'nothing'}"])
    assert res.exit_code != 0 and "data.path" in res.output
    res = runner.invoke(export_main, [str(tmp_path / "missing.pt"), "-o", str(tmp_path / "out")])
    assert res.exit_code != 0 and "no checkpoint" in res.output
    bad = tmp_path / "bad.pt"
    torch.save({"hello": 1}, bad)
    res = runner.invoke(export_main, [str(bad), "-o", str(tmp_path / "out")])
    assert res.exit_code != 0 and "not a metaug training checkpoint" in res.output
