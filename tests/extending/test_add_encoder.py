"""docs/EXTENDING.md, "Add an encoder family or geometry": the recipe's block, run as written,
gives an architecture the library builds, saves, loads and names in its errors."""

from __future__ import annotations

import pytest
import torch
from _doc_blocks import add_recipe_rows

from metaug_features import (
    ConfigError,
    EncoderConfig,
    build_encoder,
    load_encoder,
    save_pretrained,
)
from metaug_features.encoders.registry import ENCODERS

HEADING = "Add an encoder family or geometry"


@pytest.fixture
def tinyconv(monkeypatch):
    """The block's row added to the table for this test only; returns (name, row)."""
    rows = add_recipe_rows(HEADING, ENCODERS, monkeypatch, ["tinyconv16"])["NEW_ROWS"]
    return "tinyconv16", rows["tinyconv16"]


def test_the_row_sets_the_config_defaults(tinyconv):
    name, row = tinyconv
    cfg = EncoderConfig(architecture=name)
    assert (cfg.input_size, cfg.resize_size, cfg.default_layer) == (16, 16, "pool2")
    assert cfg.feature_layers == ("pool1", "pool2") and cfg.kept_layers == row.layers
    with pytest.raises(ConfigError, match=r"'stem' must be one of \['imagenet'\] for tinyconv16"):
        EncoderConfig(architecture=name, stem="cifar")


@pytest.mark.parametrize("width, views", [(1.0, ("l", "ab", "ori")), (0.5, ("ab",))])
def test_features_have_the_rows_dimensions(tinyconv, width, views):
    name, row = tinyconv
    enc = build_encoder(architecture=name, width=width, views=views).eval()
    dims = row.layer_dims(enc.config)
    x = torch.randn(3, 3, 16, 16)
    for layer in enc.layers:
        assert enc(x, layer).shape == (3, len(views) * dims[layer])
        assert enc.feature_dim(layer) == len(views) * dims[layer]
    for z in enc.embed(x).values():
        assert z.shape == (3, dims["head"])
    # Eval preprocessing follows the row: any image comes out at the 16-px input.
    image = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    assert enc.extract(image).shape == (1, enc.feature_dim())


def test_save_and_load_round_trip_is_bit_exact(tinyconv, tmp_path):
    name, _ = tinyconv
    torch.manual_seed(0)
    enc = build_encoder(architecture=name, width=0.5).eval()
    loaded = load_encoder(save_pretrained(enc, tmp_path / "tiny"))
    assert loaded.config == enc.config
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        for layer in enc.layers:
            assert torch.equal(loaded(x, layer), enc(x, layer))
    # A truncated release holds no weights past its layer and loads as well.
    small = load_encoder(save_pretrained(enc.truncated("pool1"), tmp_path / "small"))
    assert small.layers == ("pool1",) and small.halves["l"].block2 is None
    assert torch.equal(small(x), enc(x, "pool1"))


def test_an_unknown_name_lists_the_new_one(tinyconv):
    with pytest.raises(ConfigError, match=r"'architecture' must be one of \[.*'tinyconv16'\], got 'tinyconv32'"):
        build_encoder(architecture="tinyconv32")


def test_without_the_row_the_name_is_unknown():
    """The block is needed: the table does not hold the toy, so the recipe's row is what adds it."""
    with pytest.raises(ConfigError, match="got 'tinyconv16'"):
        EncoderConfig(architecture="tinyconv16")
