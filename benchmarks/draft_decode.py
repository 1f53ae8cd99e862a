"""Large JPEGs through draft mode: how much faster ``Preprocessor.load_image`` gets on a 12 MP
photo, and how much the features of the shipped model move.

Photos: ``--photos`` photo-like 4000 x 3000 JPEGs (quality 90, PIL's default 4:2:0 chroma
subsampling), each made from one real CIFAR-10 test image of ``examples/cifar10-sample``
(one per class): its central 4:3 region upsampled (bicubic) to 4000 x 3000, plus smooth
multi-octave luminance texture and fine sensor-like grain, so the file has the structure and the
entropy of a camera photo (2-3 MB) rather than a flat gradient.

For each photo: ``load_image(path, draft=False)`` (full decode, the pixels of metaug-features
0.1.0, bit-identical: ``tests/features/test_preprocess.py``) vs ``load_image(path)`` (draft mode), timed
alternately, median of ``--repeats`` runs each; then the uint8 [3, S, S] outputs and the
features of ``--model`` (its default layer) of both are compared. As a yardstick for the
feature difference, the same photo is also saved at quality 89 and decoded in full: what any
re-save of a photo does to its features.

Threshold sweep (the choice of ``JPEG_DRAFT_MIN_RATIO``): the first photo resized (Lanczos) to
shorter sides of 128 to 1024 pixels, saved at q90, decoded at the scale that ratio 2 and the
shipped ratio pick; pixel and feature differences from the full decode.

Usage::

    python benchmarks/draft_decode.py --write-results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "cifar10-sample"
RESULTS_JSON = REPO / "benchmarks" / "draft_decode.json"
COMMAND = "python benchmarks/draft_decode.py --write-results"


def make_photo(seed_image: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = (4000, 3000)) -> Image.Image:
    """A photo-like RGB image of ``size`` (width, height) from a small uint8 [h, w, 3] image.

    The upsampled image gives the scene (smooth regions and edges); texture at octaves of 4 to
    256 pixels (random fields upsampled bicubic, amplitude growing with scale like natural
    images' 1/f spectrum) and per-pixel grain (sigma 4 levels) give the detail a camera
    records and a JPEG has to encode.
    """
    w, h = size
    sh, sw = seed_image.shape[:2]
    crop_h = round(sw * h / w)  # central region with the photo's aspect ratio
    top = (sh - crop_h) // 2
    base = Image.fromarray(seed_image[top:top + crop_h]).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(base, dtype=np.float32)
    texture = np.zeros((h, w), np.float32)
    for cell in (256, 64, 16, 4):
        field = rng.normal(0.0, 1.0, (h // cell + 2, w // cell + 2)).astype(np.float32)
        up = Image.fromarray(field, mode="F").resize((w + 2 * cell, h + 2 * cell), Image.Resampling.BICUBIC)
        texture += 8.0 * (cell / 256) ** 0.5 * np.asarray(up)[cell:cell + h, cell:cell + w]
    arr = arr + texture[..., None] + rng.normal(0.0, 4.0, (h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))


def _median_times(pre, path: Path, repeats: int) -> tuple[float, float]:
    """Median seconds of load_image(draft=False) and load_image(), interleaved so that load
    on a shared machine hits both alike."""
    full, draft = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        pre.load_image(path, draft=False)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        pre.load_image(path)
        draft.append(time.perf_counter() - t)
    return float(np.median(full)), float(np.median(draft))


def measure(model: str, photos: int, repeats: int, work: Path) -> dict:
    """Make the photos in ``work``, time both decodes, compare pixels and features."""
    from metaug_features import load_encoder
    from metaug_features.preprocess import JPEG_DRAFT_MIN_RATIO, draft_scale

    enc = load_encoder(model)
    enc.eval()
    pre = enc.preprocess
    layer = enc.config.default_layer
    classes = sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())[:photos]
    rng = np.random.default_rng(0)
    rows = []
    for cls in classes:
        src = sorted((SAMPLE / cls).glob("*.jpg"))[0]
        path = work / f"{cls}-4000x3000.jpg"
        photo = make_photo(np.asarray(Image.open(src).convert("RGB")), rng)
        photo.save(path, quality=90)
        photo.save(work / "resaved.jpg", quality=89)
        t_full, t_draft = _median_times(pre, path, repeats)
        full = pre.load_image(path, draft=False)
        fast = pre.load_image(path)
        resaved = pre.load_image(work / "resaved.jpg", draft=False)
        with torch.inference_mode():
            f = enc(pre.to_input(torch.stack([full, fast, resaved])), layer).float().numpy().astype(np.float64)
        diff = np.abs(f[0] - f[1])
        cos = float(f[0] @ f[1] / (np.linalg.norm(f[0]) * np.linalg.norm(f[1])))
        rel_l2 = lambda a, b: float(f"{np.linalg.norm(a - b) / np.linalg.norm(b):.3g}")  # noqa: E731
        pix = (full.int() - fast.int()).abs()
        scale = draft_scale(4000, 3000, pre.resize_size, pre.input_size)
        rows.append({
            "image": f"{cls}/{src.name}", "file_mib": round(path.stat().st_size / 2**20, 2),
            "draft_scale": scale, "decoded_size": [4000 // scale, 3000 // scale],
            "full_ms": round(1e3 * t_full, 1), "draft_ms": round(1e3 * t_draft, 1),
            "speedup": round(t_full / t_draft, 2),
            "pixel_mean_abs": round(float(pix.float().mean()), 3), "pixel_max_abs": int(pix.max()),
            "feature_max_abs": float(f"{diff.max():.3g}"), "feature_max_value": float(f"{np.abs(f[0]).max():.3g}"),
            "feature_rel_l2": rel_l2(f[1], f[0]), "feature_cosine": round(cos, 6),
            "resave_q89_rel_l2": rel_l2(f[2], f[0]),
            "resave_q89_max_abs": float(f"{np.abs(f[2] - f[0]).max():.3g}"),
        })
    sweep = threshold_sweep(enc, layer, work / f"{classes[0]}-4000x3000.jpg", work)
    return {"model": model, "layer": layer, "dim": enc.feature_dim(layer), "input_size": pre.input_size,
            "repeats": repeats, "rows": rows, "sweep": sweep, "min_ratio": JPEG_DRAFT_MIN_RATIO}


def threshold_sweep(enc, layer: str, photo: Path, work: Path, shorts=(128, 192, 256, 384, 512, 768, 1024)) -> list[dict]:
    """Pixel and feature differences from the full decode at the scales that min_ratio 2 and
    the shipped ``JPEG_DRAFT_MIN_RATIO`` pick, for the photo resized to each shorter side."""
    from metaug_features.preprocess import JPEG_DRAFT_MIN_RATIO, draft_scale

    pre = enc.preprocess
    big = Image.open(photo).convert("RGB")
    out = []
    for short in shorts:
        size = (round(short * 4 / 3), short)
        path = work / f"sweep-{short}.jpg"
        big.resize(size, Image.Resampling.LANCZOS).save(path, quality=90)
        full = pre.load_image(path, draft=False)
        row: dict = {"size": list(size)}
        for ratio in (2, JPEG_DRAFT_MIN_RATIO):
            k = draft_scale(*size, pre.resize_size, pre.input_size, min_ratio=ratio)
            if k == 1:
                x = full
            else:  # the reduced decode at this scale (load_image itself picks the shipped ratio's)
                small = pre._load_jpeg_reduced(pre._open_file(path), k)
                x = torch.from_numpy(np.asarray(small, dtype=np.uint8).copy()).permute(2, 0, 1)
            with torch.inference_mode():
                f = enc(pre.to_input(torch.stack([full, x])), layer).float().numpy().astype(np.float64)
            d = (full.int() - x.int()).abs().float()
            row[f"ratio{ratio}"] = {
                "scale": k, "pixel_mean_abs": round(float(d.mean()), 3), "pixel_max_abs": int(d.max()),
                "feature_rel_l2": float(f"{np.linalg.norm(f[1] - f[0]) / np.linalg.norm(f[0]):.3g}"),
            }
        out.append(row)
    return out


def summarise(res: dict, load_before: float, load_after: float) -> dict:
    rows = res["rows"]
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, Python {platform.python_version()}, "
                   f"Pillow {Image.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')}), torch {torch.__version__}",
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "command": COMMAND,
        **{k: v for k, v in res.items() if k not in ("rows", "sweep")},
        "median_full_ms": round(float(np.median([r["full_ms"] for r in rows])), 1),
        "median_draft_ms": round(float(np.median([r["draft_ms"] for r in rows])), 1),
        "median_speedup": round(float(np.median([r["speedup"] for r in rows])), 2),
        "worst_feature_max_abs": max(r["feature_max_abs"] for r in rows),
        "worst_feature_cosine": min(r["feature_cosine"] for r in rows),
        "worst_feature_rel_l2": max(r["feature_rel_l2"] for r in rows),
        "worst_pixel_max_abs": max(r["pixel_max_abs"] for r in rows),
        "median_resave_q89_rel_l2": float(np.median([r["resave_q89_rel_l2"] for r in rows])),
        "rows": rows,
        "sweep": res["sweep"],
    }




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hub/cifar10-conv")
    ap.add_argument("--photos", type=int, default=5, help="photos, one per CIFAR-10 class (at most 10)")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--write-results", action="store_true",
                    help=f"write {RESULTS_JSON.relative_to(REPO)} and the section of benchmarks/RESULTS.md")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="draft-decode-") as tmp:
        res = measure(args.model, args.photos, args.repeats, Path(tmp))
    summary = summarise(res, load_before, os.getloadavg()[0])
    print(json.dumps(summary, indent=2))
    if args.write_results:
        RESULTS_JSON.write_text(json.dumps(summary, indent=2) + "\n")
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # metaug_release is the checkout's, not installed
        from metaug_release.draft_decode_table import SECTION, markdown
        from metaug_release.paths import RESULTS
        from metaug_release.sections import write_section

        write_section(RESULTS, markdown(summary), SECTION)
        print(markdown(summary))


if __name__ == "__main__":
    main()
