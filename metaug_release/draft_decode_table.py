"""RESULTS.md's "Large JPEGs through draft mode" section (``draft_decode``), rendered from the
record ``benchmarks/draft_decode.json`` that ``python benchmarks/draft_decode.py --write-results``
measures and writes (the measurement stays in benchmarks/; the rendering is record tooling)."""

from __future__ import annotations

from typing import Any

SECTION = "draft_decode"


def markdown(s: dict[str, Any]) -> str:
    """The body of RESULTS.md's ``draft_decode`` section from the summary ``benchmarks/draft_decode.json`` holds."""
    rows = s["rows"]
    lines = [
        "## Large JPEGs through draft mode (`benchmarks/draft_decode.py`)", "",
        f"- Date: {s['date_utc']}; machine: {s['machine']}; load average (1 min) {s['load_average'][0]} before, "
        f"{s['load_average'][1]} after.",
        f"- Command: `{s['command']}`",
        f"- Photos: {len(rows)} photo-like 4000 x 3000 JPEGs (q90, 4:2:0; {min(r['file_mib'] for r in rows)}-"
        f"{max(r['file_mib'] for r in rows)} MiB), each a real CIFAR-10 test image of `examples/cifar10-sample` "
        "upsampled with multi-octave texture and grain. `Preprocessor.load_image(path, draft=False)` (full decode: "
        "the 0.1.0 pixels) vs `load_image(path)` (decoded at 1/"
        f"{rows[0]['draft_scale']}, {rows[0]['decoded_size'][0]} x {rows[0]['decoded_size'][1]}), median of "
        f"{s['repeats']} alternating runs each; features of `{s['model']}` (layer `{s['layer']}`, D = {s['dim']}).",
        "",
        "| image | full decode | draft | speed-up | pixels: mean / max abs diff (0-255) | feature max abs diff (max abs value) | relative L2 | cosine | yardstick: re-saved at q89, relative L2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['full_ms']} ms | {r['draft_ms']} ms | {r['speedup']}x | {r['pixel_mean_abs']} / "
            f"{r['pixel_max_abs']} | {r['feature_max_abs']} ({r['feature_max_value']}) | {r['feature_rel_l2']} | "
            f"{r['feature_cosine']} | {r['resave_q89_rel_l2']} |"
        )
    lines += [
        f"| **median / worst** | {s['median_full_ms']} ms | {s['median_draft_ms']} ms | **{s['median_speedup']}x** | "
        f"- / {s['worst_pixel_max_abs']} | {s['worst_feature_max_abs']} | {s['worst_feature_rel_l2']} | "
        f"{s['worst_feature_cosine']} | {s['median_resave_q89_rel_l2']:.3g} (median) |",
        "",
        "Relative L2 = |f_draft - f_full| / |f_full|. The feature change of draft decoding is of the size of "
        "re-saving the photo at JPEG quality 89 instead of 90 (last column): this model's `conv` features move that "
        "much for any change of a level in a few pixels. "
        "Draft mode reduces by libjpeg's DCT scaling, at most as far as keeps the centre box >= "
        f"{s['min_ratio']}x the input size per side (`JPEG_DRAFT_MIN_RATIO`); entropy decoding of the whole file "
        "remains, which is most of what is left (no scale avoids it). Features of such JPEGs change slightly, so "
        "extraction's `extraction_version` went from 1 to 2: a resume or merge never mixes chunks of the two.",
        "",
        f"Threshold sweep: the first photo resized (Lanczos, q90) to each size; decoded at the scale that a minimum "
        f"ratio of 2 and the shipped {s['min_ratio']} pick (1/1 = full decode); pixel mean / max abs difference and "
        "feature relative L2 from the full decode.",
        "",
        f"| size | ratio 2: scale | pixels | features | ratio {s['min_ratio']}: scale | pixels | features |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["sweep"]:
        a, b = r["ratio2"], r[f"ratio{s['min_ratio']}"]
        lines.append(
            f"| {r['size'][0]} x {r['size'][1]} | 1/{a['scale']} | {a['pixel_mean_abs']} / {a['pixel_max_abs']} | "
            f"{a['feature_rel_l2']} | 1/{b['scale']} | {b['pixel_mean_abs']} / {b['pixel_max_abs']} | {b['feature_rel_l2']} |"
        )
    return "\n".join(lines)
