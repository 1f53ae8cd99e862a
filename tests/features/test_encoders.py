"""Encoder geometry and the feature API: dimensions per layer, view routing and order."""

import pytest
import torch

from metaug_features import ConfigError, build_encoder
from metaug_features.encoders.registry import ENCODERS


def _params(module):
    return sum(p.numel() for p in module.parameters())


def test_alexnet224_paper_dimensions():
    enc = build_encoder(architecture="alexnet224").eval()
    x = torch.randn(2, 3, 224, 224)
    assert enc(x, "conv").shape == (2, 13_824)  # 3 x 128 x 6 x 6
    assert enc(x, "fc").shape == (2, 6_144)  # 3 x 2048
    assert enc.feature_dim("conv_pool") == 384 and enc.feature_dim("fc6") == 6_144
    # docs/METHODS.md section 2: 14.8M parameters per half
    assert 14.8e6 < _params(enc.halves["ori"]) < 14.9e6


@pytest.mark.parametrize(
    "width, dims",
    [
        # documented in README ("Feature layers"): conv = 3 x c5 x 3 x 3, fc = 3 x fc width
        (1.0, {"conv": 3456, "conv_pool": 384, "fc6": 6144, "fc": 6144}),
        (0.5, {"conv": 1728, "conv_pool": 192, "fc6": 3072, "fc": 3072}),
    ],
)
def test_alexnet32_dimensions(width, dims):
    enc = build_encoder(architecture="alexnet32", width=width).eval()
    x = torch.randn(2, 3, 32, 32)
    for layer, d in dims.items():
        assert enc(x, layer).shape == (2, d)
        assert enc.feature_dim(layer) == d


def test_resnet50_dimensions_and_stems():
    enc = build_encoder(architecture="resnet50", views=("l", "ab"), stem="cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    assert enc(x).shape == (2, 4096) and enc(x, "layer3_pool").shape == (2, 2048)
    assert enc.halves["l"].stem[0].kernel_size == (3, 3)
    big = build_encoder(architecture="resnet50", views=("ab",))
    assert big.halves["ab"].stem[0].kernel_size == (7, 7) and big.halves["ab"].stem[0].in_channels == 2


def test_views_are_concatenated_in_fixed_order_and_see_only_their_channels():
    enc = build_encoder(architecture="alexnet32", width=0.25).eval()
    x = torch.randn(3, 3, 32, 32)
    per_view = enc.forward_views(x, "fc")
    assert list(per_view) == ["l", "ab", "ori"]
    assert torch.equal(enc(x, "fc"), torch.cat([per_view["l"], per_view["ab"], per_view["ori"]], 1))
    y = x.clone()
    y[:, 1:] += 1.0  # change a and b only: the L half must not notice
    after = enc.forward_views(y, "fc")
    assert torch.equal(after["l"], per_view["l"])
    assert not torch.allclose(after["ab"], per_view["ab"])


def test_rgb_ori_view_reads_rgb_channels():
    enc = build_encoder(architecture="alexnet32", width=0.25, ori_space="rgb").eval()
    x = torch.randn(2, 6, 32, 32)
    ori_from_rgb = enc.halves["ori"](x[:, 3:6], "conv")
    assert torch.equal(enc.forward_views(x, "conv")["ori"], ori_from_rgb)
    with pytest.raises(ValueError, match=r"\[B, 6, 32, 32\]"):
        enc(torch.randn(2, 3, 32, 32))


def test_head_is_not_a_feature_layer_but_embeds():
    enc = build_encoder(architecture="alexnet32", width=0.25)
    assert "head" not in enc.layers
    with pytest.raises(ValueError, match="unknown feature layer 'head'"):
        enc(torch.randn(2, 3, 32, 32), "head")
    z = enc.embed(torch.randn(4, 3, 32, 32))
    assert set(z) == {"l", "ab", "ori"}
    for v in z.values():
        assert v.shape == (4, 128)
        assert torch.allclose(v.norm(dim=1), torch.ones(4), atol=1e-5)


def test_truncated_copy_keeps_weights_and_drops_later_layers():
    enc = build_encoder(architecture="alexnet32", width=0.25).eval()
    small = enc.truncated("conv")
    assert small.layers == ("conv_pool", "conv") and small.halves["l"].fc6 is None
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(small(x), enc(x, "conv"))
    with pytest.raises(ValueError, match="keeps weights up to 'conv'"):
        small(x, "fc")
    with pytest.raises(ValueError, match="projection head"):
        small.embed(x)


def test_extract_matches_manual_pipeline_and_restores_mode(cifar_images):
    enc = build_encoder(architecture="alexnet32", width=0.25)
    files = sorted((cifar_images / "test").rglob("*.jpg"))[:10]
    feats = enc.extract(files, layer="fc", batch_size=4)
    assert enc.training  # mode restored
    enc.eval()
    with torch.no_grad():
        manual = enc(enc.preprocess(files), "fc")
    assert feats.shape == (10, enc.feature_dim("fc"))
    assert torch.allclose(feats, manual, atol=1e-5)


@pytest.mark.parametrize("name, stem", [(name, stem) for name, row in ENCODERS.items() for stem in row.sizes])
def test_every_table_row_keeps_its_promises(name, stem):
    """Each row's layers, dims, default sizes and default layer are what its network does."""
    row = ENCODERS[name]
    width = 0.25 if row.width_multiplier else 1.0
    enc = build_encoder(architecture=name, stem=stem, width=width, views=("ab",)).eval()
    cfg = enc.config
    assert (cfg.input_size, cfg.resize_size) == row.sizes[stem] and cfg.default_layer == row.default_layer
    assert row.layers[-1] == "head" and enc.layers == row.layers[:-1]
    dims = row.layer_dims(cfg)
    assert set(dims) == set(row.layers)
    x = torch.randn(2, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        for layer in row.layers:
            assert enc.halves["ab"](x[:, 1:3], layer).shape == (2, dims[layer]), layer


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"'architecture' must be one of \['alexnet224', 'alexnet32', 'resnet50'\], got 'alexnet64'"):
        build_encoder(architecture="alexnet64")
