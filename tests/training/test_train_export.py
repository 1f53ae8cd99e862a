"""Export: checkpoint -> model folder -> load_encoder gives the training encoder's features;
the metaug-train / metaug-export commands end to end on real images; export_checkpoint renders
the release card from a card-metrics JSON itself (metaug-export --card-metrics) and refuses a bad
one before it reads the checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from metaug_cli.export import main as export_main
from metaug_cli.train import main as train_main
from metaug_features import load_encoder
from metaug_features.errors import ConfigError
from metaug_training.checkpoint import git_commit, load_checkpoint
from metaug_training.config import TrainConfig
from metaug_training.distributed import DistContext
from metaug_training.export import export_checkpoint
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


# ---------------------------------------------------------------- the release card, in one call
CARD_METRIC = {"task": "image-classification", "dataset": "CIFAR-10 (JPEG q75)", "metric": "accuracy",
               "name": "weighted k-NN k=200 T=0.07 (conv)", "value": 55.13}


def _checkpoint(tmp_path):
    from metaug_features.model import MetAugEncoder
    from metaug_training.checkpoint import save_checkpoint
    from metaug_training.config import load_config

    cfg = load_config(None, ["model.width=0.125", "model.views=l,ab", f"run.out_dir={tmp_path / 'run'}", "method=cmc"])
    torch.manual_seed(4)
    enc = MetAugEncoder(cfg.encoder_config()).eval()
    return save_checkpoint(tmp_path / "last.pt", {"config": cfg.to_dict(), "encoder": enc.state_dict(), "step": 6,
                                                  "steps_per_epoch": 3, "git_commit": "abc"}), enc


def test_export_checkpoint_renders_the_card_from_card_metrics(tmp_path):
    """card_metrics= is what metaug-export --card-metrics passes: the folder's card holds the
    measured metric and the provenance, and the weights are the checkpoint's."""
    from huggingface_hub import ModelCard

    ckpt, enc = _checkpoint(tmp_path)
    (tmp_path / "m.json").write_text(json.dumps({"metrics": [CARD_METRIC], "hardware": "2 CPU cores"}))
    folder = export_checkpoint(ckpt, tmp_path / "out", card_metrics=tmp_path / "m.json")
    card = ModelCard.load(folder / "README.md")
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [(CARD_METRIC["name"], 55.13)]
    assert "2 CPU cores" in card.text and "git_sha: abc" in card.text
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(load_encoder(folder)(x, "conv"), enc(x, "conv"))


def test_export_checkpoint_refuses_a_bad_card_before_reading_the_checkpoint(tmp_path):
    ckpt, _ = _checkpoint(tmp_path)
    (tmp_path / "m.json").write_text(json.dumps({"metrics": [CARD_METRIC]}))
    with pytest.raises(ConfigError, match="card= .* or card_metrics= .*not both"):
        export_checkpoint(ckpt, tmp_path / "both", card="# my card", card_metrics=tmp_path / "m.json")
    (tmp_path / "bad.json").write_text(json.dumps({"metrics": [], "hardware": "x"}))
    # The checkpoint does not exist: the card's error comes first, so nothing is read or written.
    with pytest.raises(ConfigError, match="at least one measured metric"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "bad", card_metrics=tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read card metrics"):
        export_checkpoint(ckpt, tmp_path / "none", card_metrics=tmp_path / "absent.json")
    assert not any((tmp_path / d).exists() for d in ("both", "bad", "none"))
