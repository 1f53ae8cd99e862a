"""Training data: decoding folders and the CIFAR-10 archive into the cached uint8 array, the
index-yielding dataset, deterministic order, and the batched RandomResizedCrop + flip."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from torchvision.transforms import RandomResizedCrop

from metaug_features.errors import ConfigError
from metaug_training import data as data_mod
from metaug_training.augment import BatchAugment, CropParams, apply_crops, sample_crop_params
from metaug_training.data import (
    IndexedImages,
    epoch_permutation,
    load_image_array,
    step_generator,
)


def _pixels(path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"), dtype=np.uint8)


def test_class_folder_decodes_every_image_in_sorted_order(cifar_images, tmp_path):
    d = load_image_array(str(cifar_images), split="train", size=32, cache_dir=None)
    root = cifar_images / "train"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert d.paths == files and len(d) == 200
    assert d.classes == sorted(p.name for p in root.iterdir())
    assert d.images.shape == (200, 32, 32, 3) and d.images.dtype == np.uint8
    for i in (0, 57, 199):
        np.testing.assert_array_equal(d.images[i], _pixels(root / d.paths[i]))
        assert d.classes[d.labels[i]] == d.paths[i].split("/")[0]
    ds = IndexedImages(d)
    img, i = ds[57]
    assert i == 57 and img.shape == (3, 32, 32)
    assert torch.equal(img.permute(1, 2, 0), torch.from_numpy(_pixels(root / d.paths[57])))
    batch = ds.batch(torch.tensor([3, 1, 3]))
    assert batch.shape == (3, 3, 32, 32) and torch.equal(batch[0], batch[2]) and torch.equal(batch[1], ds[1][0])


def test_archive_equals_extracted_files(cifar_archive, cifar_images):
    d = load_image_array(str(cifar_archive), split="test", size=32, cache_dir=None, limit=25)
    # the first 25 sorted test files are airplane/0000..0024; the fixture holds 0000..0019
    assert d.paths[:20] == [f"airplane/{i:04d}.jpg" for i in range(20)]
    for i in range(20):
        np.testing.assert_array_equal(d.images[i], _pixels(cifar_images / "test" / d.paths[i]))
    assert set(d.labels.tolist()) == {0} and d.classes == ["airplane"]


def test_flat_folder_bad_files_and_resizing(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    (tmp_path / "notes.txt").write_text("not decoded, but listed")
    d = load_image_array(str(tmp_path), split="train", size=0, cache_dir=None, max_size=24)
    assert d.paths == ["grey.png", "wide.png"] and d.classes == [] and d.labels.tolist() == [-1, -1]
    # The library's skip list: nothing disappears silently, same reasons as an extraction's skipped.csv.
    assert d.skipped == [("empty.jpg", "empty file"), ("junk.jpg", "not a readable image"),
                         ("notes.txt", "not an image file extension")]
    # size 0: the first image's shorter side (16), capped at max_size
    assert d.images.shape == (2, 16, 16, 3)
    # the wide image: its centred 40x40 square resampled to 16x16
    wide = Image.open(tmp_path / "wide.png").convert("RGB")
    want = np.asarray(wide.resize((16, 16), Image.Resampling.BILINEAR, box=(20, 0, 60, 40)))
    np.testing.assert_array_equal(d.images[1], want)
    grey = np.asarray(Image.open(tmp_path / "grey.png").convert("RGB"))
    np.testing.assert_array_equal(d.images[0], grey)


def test_missing_or_empty_source_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.path"):
        load_image_array(str(tmp_path / "nope"), cache_dir=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        load_image_array(str(tmp_path / "empty"), cache_dir=None)


def test_cache_is_reused_and_invalidated(cifar_images, tmp_path, monkeypatch):
    src = tmp_path / "imgs"
    shutil.copytree(cifar_images / "train" / "cat", src / "cat")
    shutil.copytree(cifar_images / "train" / "dog", src / "dog")
    cache = tmp_path / "cache"
    first = load_image_array(str(src), size=32, cache_dir=str(cache), num_workers=2)
    assert len(list(cache.rglob("images.npy"))) == 1
    calls = []
    real = data_mod.decode_items
    monkeypatch.setattr(data_mod, "decode_items", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = load_image_array(str(src), size=32, cache_dir=str(cache))
    assert calls == [] and np.array_equal(again.images, first.images) and again.paths == first.paths
    assert again.fingerprint == first.fingerprint
    # workers decode exactly what the main process decodes
    assert np.array_equal(load_image_array(str(src), size=32, cache_dir=None, num_workers=0).images, first.images)
    calls.clear()
    # an edited file changes the listing: decoded again, with the new pixels
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(src / "cat" / "0000.jpg", format="JPEG")
    changed = load_image_array(str(src), size=32, cache_dir=str(cache))
    assert calls == [1] and changed.images[0].max() <= 2


def test_order_and_step_generators_are_deterministic():
    a, b = epoch_permutation(100, 3, 7), epoch_permutation(100, 3, 7)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, epoch_permutation(100, 3, 8)) and not torch.equal(a, epoch_permutation(100, 4, 7))
    r1 = torch.rand(5, generator=step_generator(0, "augment", 11))
    assert torch.equal(r1, torch.rand(5, generator=step_generator(0, "augment", 11)))
    assert not torch.equal(r1, torch.rand(5, generator=step_generator(0, "negatives", 11)))
    assert not torch.equal(r1, torch.rand(5, generator=step_generator(0, "augment", 12)))


# ---------------------------------------------------------------------- augmentation


def _images(b=6, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)


def test_full_box_is_identity_and_flip_mirrors():
    x = _images()
    full = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).repeat(6, 1)
    out = apply_crops(x, CropParams(full, torch.zeros(6, dtype=torch.bool)), 32)
    torch.testing.assert_close(out, x.float() / 255, atol=1e-5, rtol=0)
    flipped = apply_crops(x, CropParams(full, torch.ones(6, dtype=torch.bool)), 32)
    torch.testing.assert_close(flipped, x.float().flip(-1) / 255, atol=1e-5, rtol=0)


def test_crops_match_torchvision_resized_crop():
    """Each output pixel equals torchvision's bilinear resized_crop (antialias off) wherever
    its source coordinate lies inside the crop (torchvision clamps at the crop's own edge)."""
    x = _images(b=32, h=32, w=40, seed=1)
    params = sample_crop_params(32, 32, 40, generator=torch.Generator().manual_seed(5))
    out_size = 24
    out = apply_crops(x, params, out_size)
    checked = 0
    for i in range(32):
        top, left, h, w = (int(v) for v in params.boxes[i])
        ref = TF.resized_crop(x[i].float() / 255, top, left, h, w, [out_size, out_size],
                              interpolation=InterpolationMode.BILINEAR, antialias=False)
        if params.flip[i]:
            ref = ref.flip(-1)
        k = torch.arange(out_size, dtype=torch.float64)
        ys = (k + 0.5) * h / out_size - 0.5
        xs = (k + 0.5) * w / out_size - 0.5
        my = (ys >= 0) & (ys <= h - 1)
        mx = (xs >= 0) & (xs <= w - 1)
        if params.flip[i]:
            mx = mx.flip(0)
        mask = my[:, None] & mx[None, :]
        torch.testing.assert_close(out[i][:, mask], ref[:, mask], atol=2e-5, rtol=0)
        checked += int(mask.sum())
    assert checked > 32 * out_size * out_size * 0.7


def test_crop_parameters_follow_random_resized_crop():
    n, h, w = 4000, 32, 32
    p = sample_crop_params(n, h, w, scale=(0.2, 1.0), generator=torch.Generator().manual_seed(0))
    top, left, bh, bw = p.boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    assert (bh >= 1).all() and (bw >= 1).all() and torch.equal(p.boxes, p.boxes.round())
    area = bh * bw / (h * w)
    assert area.min() >= 0.15 and area.max() <= 1.0
    aspect = bw / bh
    assert aspect.min() >= 0.6 and aspect.max() <= 1.6
    assert 0.45 < p.flip.float().mean() < 0.55
    # same distribution as torchvision's own sampler (means of area and aspect)
    torch.manual_seed(0)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, h, w), [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)],
                       dtype=torch.float32)
    ref_area = ref[:, 2] * ref[:, 3] / (h * w)
    assert abs(area.mean() - ref_area.mean()) < 0.02
    assert abs((bw / bh).mean() - (ref[:, 3] / ref[:, 2]).mean()) < 0.02
    # same generator state -> same boxes; no flips when disabled
    again = sample_crop_params(n, h, w, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.boxes, p.boxes)
    assert not sample_crop_params(50, h, w, flip=False, generator=torch.Generator().manual_seed(0)).flip.any()


def test_fallback_when_no_attempt_fits():
    # An extreme aspect (1 x 64) makes every attempt fail: centre crop with clamped aspect.
    p = sample_crop_params(8, 1, 64, scale=(0.9, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(p.boxes, torch.tensor([[0.0, 31.0, 1.0, 1.0]]).repeat(8, 1))


def test_batch_augment_output_and_slicing():
    aug = BatchAugment(32)
    x = _images(b=8)
    params = aug.sample(8, 32, 32, torch.Generator().manual_seed(1))
    full = aug(x, params=params)
    assert full.shape == (8, 3, 32, 32) and full.dtype == torch.float32
    assert full.min() >= 0 and full.max() <= 1
    # augmenting a slice with the sliced parameters gives the same rows (how ranks share a batch)
    torch.testing.assert_close(aug(x[4:], params=params[4:]), full[4:], atol=0, rtol=0)
    up = BatchAugment(224)(x, torch.Generator().manual_seed(1))
    assert up.shape == (8, 3, 224, 224)


# ---------------------------------------------------------------------- one input path with extraction


def _nested_tree(cifar_images, root):
    """``animals/{cat,dog}``, ``vehicles/truck`` (one level deeper than the class) and two
    images directly in the root."""
    src = cifar_images / "train"
    for rel, cls in (("animals/cat", "cat"), ("animals/dog", "dog"), ("vehicles/truck", "truck")):
        (root / rel).mkdir(parents=True)
        for f in sorted((src / cls).glob("*.jpg"))[:3]:
            shutil.copy(f, root / rel / f.name)
    for f in sorted((src / "bird").glob("*.jpg"))[:2]:
        shutil.copy(f, root / f"loose-{f.name}")
    return root


def test_nested_tree_gets_the_same_labels_in_training_and_extraction(cifar_images, model_dir, tmp_path):
    from metaug_features.extract import extract_features
    from metaug_features.feature_files import read_feature_set

    root = _nested_tree(cifar_images, tmp_path / "tree")
    d = load_image_array(str(root), split="", size=32, cache_dir=None, num_workers=0)
    extract_features(model_dir, [root], tmp_path / "out", workers=0, progress=False)
    fs = read_feature_set(tmp_path / "out")
    # Same files in the same order: the memory-bank slot of an image is its manifest row.
    assert d.paths == list(fs.paths) and len(d) == 11
    # The parent folder names, as ImageFolder (not the first folder under the root: "animals").
    assert d.classes == ["cat", "dog", "truck"]
    training = ["" if i < 0 else d.classes[i] for i in d.labels.tolist()]
    assert training == list(fs.labels)
    assert training.count("") == 2 and training.count("cat") == 3


def test_training_decodes_in_the_decode_pool_with_its_time_limit_and_crash_isolation(cifar_images, tmp_path,
                                                                                       monkeypatch):
    import os
    import time

    src = tmp_path / "imgs"
    shutil.copytree(cifar_images / "train" / "cat", src / "cat")
    shutil.copy(src / "cat" / "0000.jpg", src / "cat" / "hang.jpg")
    shutil.copy(src / "cat" / "0000.jpg", src / "cat" / "crash.jpg")
    real_call = data_mod.SquareLoader.__call__

    def hostile(self, path):  # runs in the forked decoding workers
        if path.endswith("hang.jpg"):
            time.sleep(60)
        if path.endswith("crash.jpg"):
            os._exit(3)  # the worker dies mid-file, as after a decoder segfault
        return real_call(self, path)

    monkeypatch.setattr(data_mod.SquareLoader, "__call__", hostile)
    monkeypatch.setattr(data_mod, "DEFAULT_DECODE_TIME_LIMIT_S", 1.0)
    t0 = time.monotonic()
    d = load_image_array(str(src), size=32, cache_dir=None, num_workers=2)
    assert time.monotonic() - t0 < 30
    assert d.skipped == [("cat/crash.jpg", "decoder crashed (exit code 3)"),
                         ("cat/hang.jpg", "decode time limit exceeded (1 s)")]
    assert len(d) == 20 and "cat/hang.jpg" not in d.paths
    monkeypatch.setattr(data_mod.SquareLoader, "__call__", real_call)
    clean = load_image_array(str(src / "cat"), size=32, cache_dir=None, num_workers=0)
    np.testing.assert_array_equal(d.images, clean.images[[i for i, p in enumerate(clean.paths)
                                                          if p not in ("crash.jpg", "hang.jpg")]])
