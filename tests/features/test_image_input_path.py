"""The one image-input path of the library: one extension set, one label rule, one listing for
folders and archives, one RandomResizedCrop sampler."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from metaug_features.archive_list import archive_has_split, is_archive, read_archive
from metaug_features.crops import fallback_box, sample_crop_params
from metaug_features.file_list import (
    REASON_NOT_IMAGE_EXT,
    collect_files,
    has_image_extension,
    label_indices,
    label_of,
)


def test_label_is_the_parent_folder_name():
    assert label_of("cat/0001.jpg") == "cat"
    assert label_of("animals/cat/0001.jpg") == "cat"  # not the first folder under the root
    assert label_of("0001.jpg") == ""


def test_label_indices_number_sorted_classes_and_give_root_files_minus_one():
    idx, classes = label_indices(["dog", "", "cat", "dog"])
    assert classes == ["cat", "dog"] and idx.tolist() == [1, -1, 0, 1] and idx.dtype == np.int64
    idx, classes = label_indices(["", ""])
    assert classes == [] and idx.tolist() == [-1, -1]


def test_extensions_are_case_insensitive():
    assert has_image_extension("a.JPG") and has_image_extension("b.tiff") and not has_image_extension("c.txt")


def _tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_archive_members_follow_the_folder_rules(tmp_path):
    arc = tmp_path / "data.tar.gz"
    _tar(arc, {
        "top/train/zoo/cat/b.jpg": b"B",
        "top/train/zoo/cat/a.JPG": b"A",
        "top/train/dog/.hidden.jpg": b"H",
        "top/train/.cache/x.jpg": b"X",
        "top/train/notes.txt": b"N",
        "top/test/cat/c.jpg": b"C",
    })
    assert is_archive(arc) and archive_has_split(arc, "train") and not archive_has_split(arc, "val")
    listing, data = read_archive(arc, "train")
    assert [(e.rel, e.label, e.skip_reason) for e in listing.entries] == [
        ("notes.txt", "", REASON_NOT_IMAGE_EXT),
        ("zoo/cat/a.JPG", "cat", None),
        ("zoo/cat/b.jpg", "cat", None),
    ]
    assert data["zoo/cat/a.JPG"] == b"A" and data["notes.txt"] == b""  # non-images are not read
    # No such split: every member below the top folder.
    listing, _ = read_archive(arc, "val")
    assert [e.rel for e in listing.entries if e.skip_reason is None] == ["test/cat/c.jpg", "train/zoo/cat/a.JPG",
                                                                        "train/zoo/cat/b.jpg"]


def test_folder_and_archive_list_the_same_entries(tmp_path):
    files = {"train/zoo/cat/b.jpg": b"B", "train/dog/a.png": b"A", "train/readme.md": b"R", "train/.DS_Store": b""}
    for rel, data in files.items():
        (tmp_path / "top" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "top" / rel).write_bytes(data)
    _tar(tmp_path / "a.tar", {f"top/{k}": v for k, v in files.items()})
    folder = [(e.rel, e.label, e.skip_reason) for e in collect_files([tmp_path / "top" / "train"]).entries]
    archive = [(e.rel, e.label, e.skip_reason) for e in read_archive(tmp_path / "a.tar", "train")[0].entries]
    assert folder == archive and len(folder) == 3


def test_merge_shards_keeps_its_import_path():
    from metaug_features.extract import merge_shards as old
    from metaug_features.merge import merge_shards

    assert old is merge_shards


def test_one_sampler_two_draw_orders():
    """Both orders draw boxes inside the image that obey the scale/ratio rule; the
    per-image order is the paper probe's, reproduced box by box."""
    from metaug_features.crops import sample_crop_box

    for draws in ("batched", "per_image"):
        p = sample_crop_params(300, 32, 40, generator=torch.Generator().manual_seed(0), draws=draws)
        top, left, h, w = p.boxes.unbind(1)
        assert p.boxes.shape == (300, 4) and p.flip.dtype == torch.bool and 0 < p.flip.sum() < 300
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 40).all()
        assert ((h * w) >= 0.2 * 32 * 40 * 0.8).all()
    g = torch.Generator().manual_seed(3)
    p = sample_crop_params(5, 32, 32, generator=torch.Generator().manual_seed(3), draws="per_image")
    g.manual_seed(3)
    torch.rand(5, generator=g)  # the flips come first
    assert [tuple(b) for b in p.boxes.long().tolist()] == [sample_crop_box(32, 32, (0.2, 1.0), (3 / 4, 4 / 3), g)
                                                           for _ in range(5)]
    assert fallback_box(1, 64, (1.0, 1.0)) == (0, 31, 1, 1)
    with pytest.raises(ValueError, match="draws"):
        sample_crop_params(1, 8, 8, draws="sideways")


def test_the_library_never_imports_training_and_training_lists_nothing_itself():
    """One input path: metaug_features does not depend on metaug_training, and training code
    neither names image extensions nor derives labels from paths (it calls the library)."""
    import ast
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for f in (repo / "metaug_features").rglob("*.py"):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("metaug_training") for n in names), f
    extension = re.compile(r"[\"']\.(jpe?g|png|bmp|gif|webp|tiff?|ppm|pgm)[\"']", re.IGNORECASE)
    for f in [*(repo / "metaug_training").rglob("*.py"), *(repo / "metaug_cli").rglob("*.py")]:
        text = f.read_text(encoding="utf-8")
        assert not extension.search(text), f"{f} names an image extension"
        assert ".parent.name" not in text and 'split("/", 1)[0]' not in text, f"{f} derives labels from paths"
