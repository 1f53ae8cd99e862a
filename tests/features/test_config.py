"""EncoderConfig: defaults, strict parsing, clear errors naming the key."""

import json

import pytest

from metaug_features import ConfigError, EncoderConfig


def test_defaults_fill_architecture_sizes():
    assert EncoderConfig(architecture="alexnet32").input_size == 32
    assert EncoderConfig(architecture="alexnet32").resize_size == 32
    c = EncoderConfig(architecture="alexnet224")
    assert (c.input_size, c.resize_size, c.default_layer) == (224, 256, "conv")
    r = EncoderConfig(architecture="resnet50", stem="cifar")
    assert (r.input_size, r.default_layer) == (32, "pool")


def test_json_round_trip_is_identity():
    c = EncoderConfig(architecture="alexnet32", width=0.5, views=("l", "ab"), ori_space="rgb",
                      truncate_after="fc", provenance={"method": "metaug", "epochs": 3})
    d = json.loads(c.to_json())
    assert d["model_type"] == "metaug-encoder" and d["format_version"] == 1
    assert EncoderConfig.from_json(c.to_json()) == c


@pytest.mark.parametrize(
    "change, key",
    [
        ({"architecture": "vgg16"}, "architecture"),
        ({"width": "wide"}, "width"),
        ({"width": 0}, "width"),
        ({"width": True}, "width"),
        ({"views": ["ab", "l"]}, "views"),
        ({"views": ["rgb"]}, "views"),
        ({"views": []}, "views"),
        ({"input_size": 1_000_000}, "input_size"),
        ({"input_size": 224.0}, "input_size"),
        ({"embedding_dim": 10**9}, "embedding_dim"),
        ({"default_layer": "fc8"}, "default_layer"),
        ({"ori_space": "hsv"}, "ori_space"),
        ({"weights_dtype": "int8"}, "weights_dtype"),
        ({"lab_std": [1, 0, 1]}, "lab_std"),
        ({"truncate_after": "head"}, "truncate_after"),
        ({"provenance": [1, 2]}, "provenance"),
        ({"bogus_key": 1}, "bogus_key"),
    ],
)
def test_bad_values_name_the_key(change, key):
    d = EncoderConfig(architecture="alexnet32").to_dict()
    d.update(change)
    with pytest.raises(ConfigError, match=key):
        EncoderConfig.from_dict(d)


def test_strict_parsing_requires_every_key():
    d = EncoderConfig().to_dict()
    del d["width"]
    with pytest.raises(ConfigError, match="missing key 'width'"):
        EncoderConfig.from_dict(d)
    del d["format_version"]
    with pytest.raises(ConfigError, match="format_version"):
        EncoderConfig.from_dict(d)


def test_newer_format_version_is_refused_with_advice():
    d = EncoderConfig().to_dict()
    d["format_version"] = 99
    with pytest.raises(ConfigError, match="upgrade"):
        EncoderConfig.from_dict(d)


def test_not_json():
    with pytest.raises(ConfigError, match="not valid JSON"):
        EncoderConfig.from_json("{architecture: alexnet32")


def test_truncation_controls_available_layers():
    c = EncoderConfig(architecture="alexnet32", truncate_after="conv")
    assert c.feature_layers == ("conv_pool", "conv") and not c.has_head
    assert EncoderConfig(architecture="alexnet32").feature_layers == ("conv_pool", "conv", "fc6", "fc")
    with pytest.raises(ConfigError, match="default_layer"):
        EncoderConfig(architecture="alexnet32", truncate_after="conv", default_layer="fc")
