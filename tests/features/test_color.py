"""The torch Lab conversion against scikit-image's rgb2lab (the reference), to 1e-4."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

from metaug_features.color import normalize_channels, rgb_to_lab
from metaug_features.config import LAB_MEAN, LAB_STD


def _reference(batch: torch.Tensor) -> np.ndarray:
    return np.stack([rgb2lab(im.permute(1, 2, 0).double().numpy()) for im in batch]).transpose(0, 3, 1, 2)


def test_random_pixels_match_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 16, 16, generator=g)
    # include the corners of the cube and values near the sRGB and CIE f(t) thresholds
    x[0, :, 0, :8] = torch.tensor([0.0, 1.0, 0.04045, 0.0404, 0.0405, 0.008, 0.5, 1e-4])
    x[1, 0], x[1, 1], x[1, 2] = 1.0, 0.0, 0.0
    err = np.abs(rgb_to_lab(x).double().numpy() - _reference(x)).max()
    assert err < 1e-4


def test_real_images_match_reference(cifar_images):
    files = sorted((cifar_images / "test").rglob("*.jpg"))[:40]
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]).float() / 255
    err = np.abs(rgb_to_lab(x).double().numpy() - _reference(x)).max()
    assert err < 1e-4


def test_unbatched_and_range():
    x = torch.rand(3, 5, 5)
    lab = rgb_to_lab(x)
    assert lab.shape == (3, 5, 5)
    assert torch.allclose(rgb_to_lab(x.unsqueeze(0))[0], lab)
    white = rgb_to_lab(torch.ones(1, 3, 1, 1)).flatten()
    assert torch.allclose(white, torch.tensor([100.0, 0.0, 0.0]), atol=1e-2)


def test_normalisation_maps_lab_to_unit_range():
    lab = torch.tensor([[0.0, 6.025, -6.6895], [100.0, 98.233, 94.478]]).T.reshape(1, 3, 2, 1)
    n = normalize_channels(lab, LAB_MEAN, LAB_STD)
    assert torch.allclose(n[0, :, 0, 0], torch.tensor([-1.0, 0.0, 0.0]))
    assert n.abs().max() <= 1.001


def test_rejects_wrong_input():
    with pytest.raises(ValueError):
        rgb_to_lab(torch.rand(1, 4, 2, 2))
    with pytest.raises(TypeError):
        rgb_to_lab(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
