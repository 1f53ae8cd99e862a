"""Model folders: bit-exact round trips for every architecture, strict and safe loading."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from metaug_features import (
    ConfigError,
    EncoderConfig,
    WeightsError,
    build_encoder,
    load_encoder,
    save_pretrained,
)
from metaug_features.model_io import load_model_dir


def _randomise_bn(enc):
    # Fresh BN layers have mean 0 / var 1, which would hide a lost running statistic.
    g = torch.Generator().manual_seed(1)
    for m in enc.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)
    return enc


@pytest.mark.parametrize(
    "cfg",
    [
        EncoderConfig(architecture="alexnet32", width=0.5),
        EncoderConfig(architecture="alexnet224", views=("l", "ab")),
        EncoderConfig(architecture="resnet50", views=("l",), stem="cifar"),
        EncoderConfig(architecture="alexnet32", width=0.25, ori_space="rgb", truncate_after="conv"),
    ],
    ids=["alexnet32", "alexnet224", "resnet50", "alexnet32-rgb-truncated"],
)
def test_round_trip_gives_bit_identical_features(cfg, cifar_images, tmp_path):
    torch.manual_seed(0)
    enc = _randomise_bn(build_encoder(cfg)).eval()
    save_pretrained(enc, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_encoder(tmp_path / "m")
    assert loaded.config == enc.config and not loaded.training
    files = sorted((cifar_images / "test").rglob("*.jpg"))[:6]
    for layer in enc.layers:
        assert torch.equal(enc.extract(files, layer), loaded.extract(files, layer))
    for (k, a), (k2, b) in zip(enc.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_float16_storage_halves_size_with_small_error(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder(architecture="alexnet32", width=0.5).eval()
    save_pretrained(enc, tmp_path / "f32")
    save_pretrained(enc, tmp_path / "f16", weights_dtype="float16")
    s32 = (tmp_path / "f32" / "model.safetensors").stat().st_size
    s16 = (tmp_path / "f16" / "model.safetensors").stat().st_size
    assert s16 < 0.55 * s32
    half = load_encoder(tmp_path / "f16")
    assert half.config.weights_dtype == "float16" and next(half.parameters()).dtype == torch.float32
    x = torch.randn(8, 3, 32, 32)
    err = (half(x, "fc") - enc(x, "fc")).abs().max() / enc(x, "fc").abs().max()
    assert 0 < err < 1e-2


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder(architecture="alexnet32", width=0.125, views=("l", "ab"))
    return save_pretrained(enc, tmp_path / "m")


def _edit_weights(folder, fn):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)


def test_pickle_only_folder_is_refused_without_loading(folder):
    (folder / "model.safetensors").unlink()
    marker = folder / "executed"
    # A pickle that would create a file if it were ever unpickled.
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(WeightsError, match="never loads pickles"):
        load_encoder(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("halves.l.conv1.0.weight"), "missing"),
        (lambda t: t.update(extra=torch.zeros(3)), "unexpected"),
        (lambda t: t.update({"halves.l.conv1.0.weight": torch.zeros(1, 1, 5, 5)}), "shape"),
        (lambda t: t.update({"halves.l.conv1.0.weight": t["halves.l.conv1.0.weight"].double()}), "float64"),
        (lambda t: t.update({"halves.l.conv1.0.weight": t["halves.l.conv1.0.weight"] * float("nan")}), "NaN"),
    ],
    ids=["missing", "extra", "shape", "dtype", "nan"],
)
def test_mismatched_weights_name_the_tensor(folder, edit, message):
    _edit_weights(folder, edit)
    with pytest.raises(WeightsError, match=message):
        load_encoder(folder)


def test_garbage_weights_file(folder):
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        load_encoder(folder)


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c.pop("architecture"), "architecture"),
        (lambda c: c.update(architecture="vit"), "architecture"),
        (lambda c: c.update(width="0.5"), "width"),
        (lambda c: c.update(input_size=10**7), "input_size"),
        (lambda c: c.update(colour="lab"), "colour"),
    ],
)
def test_bad_config_names_the_key(folder, edit, key):
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=key):
        load_encoder(folder)


def test_missing_and_malformed_config(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_encoder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match="no config.json"):
        load_encoder(folder)


def test_sharded_weights_with_index_load_identically(folder):
    enc = load_model_dir(folder)
    tensors = load_file(folder / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for fname, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, folder / fname)
    (folder / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    sharded = load_model_dir(folder)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, sharded.state_dict()[k])
    index["weight_map"][names[0]] = "../outside.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="inside the folder"):
        load_model_dir(folder)


def test_card_is_written_and_parses(folder):
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "metaug-features"


def test_files_linking_out_of_the_folder_are_refused(folder, tmp_path):
    """A downloaded folder must not make the loader read files elsewhere on the machine."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).rename(elsewhere / name)
        (folder / name).symlink_to(elsewhere / name)
    with pytest.raises(ConfigError, match="outside the model folder"):
        load_encoder(folder)
    (folder / "config.json").unlink()
    (elsewhere / "config.json").rename(folder / "config.json")
    with pytest.raises(WeightsError, match="outside the model folder"):
        load_encoder(folder)
    # a link that stays inside the folder is fine
    (folder / "model.safetensors").unlink()
    (elsewhere / "model.safetensors").rename(folder / "weights-v1.safetensors")
    (folder / "model.safetensors").symlink_to("weights-v1.safetensors")
    load_encoder(folder)


def test_hub_cache_layout_and_a_linked_folder_load(folder, tmp_path):
    """The Hugging Face cache links snapshots/<rev>/<file> to ../../blobs/<sha>: allowed; so is
    a model folder that is itself a link."""
    repo = tmp_path / "models--org--name"
    blobs, snap = repo / "blobs", repo / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, p in enumerate(sorted(folder.iterdir())):
        target = blobs / f"sha{i}"
        p.rename(target)
        (snap / p.name).symlink_to(os.path.relpath(target, snap))
    enc = load_encoder(snap)
    link = tmp_path / "linked-model"
    link.symlink_to(snap, target_is_directory=True)
    assert torch.equal(load_encoder(link).state_dict()["halves.l.conv1.0.weight"], enc.state_dict()["halves.l.conv1.0.weight"])


@pytest.mark.parametrize(
    "front_matter",
    [
        "library_name: [unclosed\n",  # malformed YAML
        "evil: !!python/object/apply:os.system ['touch {marker}']\n",  # YAML that would run code
        "- a list, not a mapping\n",
    ],
    ids=["malformed", "python-tag", "not-a-mapping"],
)
def test_hostile_card_is_never_executed_and_push_refuses_it(folder, front_matter):
    """Loading never reads the card (it is documentation), so a broken one cannot stop a model
    from loading; the one tool that reads it, metaug-push, refuses it with a clear message. YAML
    is only ever parsed safely: a python/object tag runs nothing."""
    from click.testing import CliRunner

    from metaug_cli.push import main as push_main

    marker = folder / "executed"
    (folder / "README.md").write_text("---\n" + front_matter.format(marker=marker) + "---\n# card\n")
    x = torch.randn(2, 3, 32, 32)
    reference = build_encoder(architecture="alexnet32", width=0.125, views=("l", "ab"))
    reference.load_state_dict(load_file(folder / "model.safetensors"))
    assert torch.equal(load_encoder(folder)(x, "fc"), reference.eval()(x, "fc"))
    res = CliRunner().invoke(push_main, [str(folder), "--repo-id", "o/n", "--dry-run"])
    assert res.exit_code != 0 and "not publishable" in res.output
    assert "README.md metadata" in res.output
    assert not marker.exists()


def test_a_config_implying_gigabytes_is_refused_before_allocating_them(folder):
    """config.json of a 2.6 GiB encoder (alexnet224 at width 4, valid on its own) beside a tiny
    weights file: the headers are checked against the tensors the config implies (built on the
    meta device) before the encoder is allocated, so the refusal costs no memory. Run in a
    fresh process, whose peak RSS is the measure."""
    import subprocess
    import sys
    import textwrap

    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(architecture="alexnet224", width=4.0, input_size=224, resize_size=256)
    (folder / "config.json").write_text(json.dumps(cfg))
    script = textwrap.dedent(f"""
        import resource
        from metaug_features import load_encoder
        from metaug_features.errors import WeightsError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_encoder({str(folder)!r})
        except WeightsError as e:
            print("refused:", e)
        print("grew_mib", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).stdout
    assert "refused:" in out and "config.json implies (192, 1, 11, 11)" in out, out
    grew = float(out.split("grew_mib")[1])
    assert grew < 200, f"loading grew the process by {grew:.0f} MiB before refusing"
