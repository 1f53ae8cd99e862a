"""Extraction at scale: 100,000 real CIFAR-10 JPEGs through ``metaug-extract``, with its memory
and rate sampled every 0.25 s from outside the process.

The folder holds the 60,000 CIFAR-10 images (train + test) and, to reach the count, hard links
to them under further ``copyN/`` folders (so every file is a real JPEG, decoded again). The
run is the plain command line (default batch, chunk and workers) with the shipped model:

    metaug-extract --model hub/cifar10-conv FOLDER --output OUT

Sampled: the resident memory (VmRSS from /proc) of the main process and of its decoding
workers, and the number of finished resume chunks in ``OUT/.partial`` (each one chunk_size
files), which gives the rate per chunk. Flat memory = the peak of the last quarter of the run
is no higher than that of its second quarter plus a small margin.

Usage::

    python benchmarks/extract_scale.py --images 100000 --write-results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIFAR = Path("/tmp/cifar/cifar10")
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "extract_scale"


def build_folder(dest: Path, n: int) -> Path:
    """``dest`` with ``n`` JPEG paths: the CIFAR-10 files, then hard links to them."""
    if not CIFAR.is_dir():
        with tarfile.open(ARCHIVE, "r:gz") as tar:
            tar.extractall(CIFAR.parent.parent, filter="data")
    src = sorted(CIFAR.rglob("*.jpg"))
    made = sum(1 for _ in dest.rglob("*.jpg")) if dest.is_dir() else 0
    if made == n:
        return dest
    if made > n:  # left by a larger run: start over (hard links, so this is cheap)
        shutil.rmtree(dest)
    k = 0
    while k < n:
        for p in src:
            if k >= n:
                break
            target = dest / f"copy{k // len(src)}" / p.relative_to(CIFAR)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(p, target)
            k += 1
    return dest


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def run(folder: Path, out: Path, model: str) -> dict:
    cmd = [sys.executable, "-m", "metaug_cli.extract", "--model", model, str(folder), "--output", str(out), "--quiet"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        kids = _children(proc.pid)
        chunks = len(list((out / ".partial").glob("chunk-*"))) if (out / ".partial").is_dir() else None
        samples.append({"t": round(time.monotonic() - t0, 2), "main_kib": _rss_kib(proc.pid),
                        "workers_kib": max((_rss_kib(c) for c in kids), default=0), "chunks": chunks})
        time.sleep(0.25)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"extraction failed ({proc.returncode}): {stderr[-2000:]}")
    return {"seconds": round(time.monotonic() - t0, 1), "samples": samples, "stdout": stdout.strip()[-500:]}


def summarise(n: int, res: dict, out: Path) -> dict:
    meta = json.loads((out / "extract.json").read_text())
    s = [x for x in res["samples"] if x["main_kib"]]
    q = max(1, len(s) // 4)
    peak = lambda xs, key: max((x[key] for x in xs), default=0) / 1024  # noqa: E731
    # chunk completion times -> per-chunk rate
    times, last = [], None
    for x in s:
        c = x["chunks"]
        if c is not None and c != last:
            times.append((x["t"], c))
            last = c
    chunk = int(meta.get("chunk_size", 1024))
    rates = [chunk * (c2 - c1) / (t2 - t1) for (t1, c1), (t2, c2) in zip(times, times[1:]) if t2 > t1 and c2 > c1]
    half = len(rates) // 2
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, Python {platform.python_version()}",
        "images": n, "rows": meta.get("num_rows"), "skipped": meta.get("num_skipped"), "dim": meta.get("dim"),
        "seconds": res["seconds"], "img_per_s": round(n / res["seconds"], 1),
        "peak_main_mib": round(peak(s, "main_kib"), 1), "peak_worker_mib": round(peak(s, "workers_kib"), 1),
        "peak_main_mib_2nd_quarter": round(peak(s[q:2 * q], "main_kib"), 1),
        "peak_main_mib_last_quarter": round(peak(s[-q:], "main_kib"), 1),
        "chunk_rate_first_half": round(sum(rates[:half]) / max(half, 1), 1) if rates else None,
        "chunk_rate_second_half": round(sum(rates[half:]) / max(len(rates) - half, 1), 1) if rates else None,
        "chunk_rate_min": round(min(rates), 1) if rates else None, "chunk_rate_max": round(max(rates), 1) if rates else None,
        "samples": len(s),
    }


def markdown(r: dict, model: str) -> str:
    return "\n".join([
        "## Extraction at scale: 100,000 images (`benchmarks/extract_scale.py`) (#7)", "",
        f"- Date: {r['date_utc']}; machine: {r['machine']}; command: `python benchmarks/extract_scale.py --images "
        f"{r['images']} --write-results` (the run itself: `metaug-extract --model {model} FOLDER --output OUT`, CLI defaults).",
        f"- Images: {r['images']:,} real CIFAR-10 JPEGs (the 60,000 of train + test, then hard links to them); rows "
        f"{r['rows']:,}, skipped {r['skipped']}, D = {r['dim']}.",
        "",
        "| images | time | images/s | chunk rate, first half / second half (min-max) | peak RSS main | peak RSS main, 2nd quarter / last quarter | peak RSS largest worker |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['images']:,} | {r['seconds'] / 60:.1f} min | {r['img_per_s']:.0f} | {r['chunk_rate_first_half']} / "
        f"{r['chunk_rate_second_half']} img/s ({r['chunk_rate_min']}-{r['chunk_rate_max']}) | {r['peak_main_mib']} MiB | "
        f"{r['peak_main_mib_2nd_quarter']} / {r['peak_main_mib_last_quarter']} MiB | {r['peak_worker_mib']} MiB |",
        "",
        "Memory sampled every 0.25 s from /proc (VmRSS); the rate per chunk from the finished resume chunks in `.partial`.",
    ])


def write_section(text: str) -> None:
    """Write ``text`` as RESULTS.md's extract_scale section (the one section writer)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # metaug_release is the checkout's, not installed
    from metaug_release.sections import write_section as write

    write(RESULTS, text, SECTION)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/metaug-scale"))
    ap.add_argument("--model", default="hub/cifar10-conv")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    folder = build_folder(args.work / "images", args.images)
    out = args.work / "out"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    res = run(folder, out, args.model)
    summary = summarise(args.images, res, out)
    print(json.dumps(summary, indent=2))
    if args.write_results:
        (REPO / "benchmarks" / "extract_scale.json").write_text(json.dumps({**summary, "trace": res["samples"]}) + "\n")
        write_section(markdown(summary, args.model))
        print(markdown(summary, args.model))


if __name__ == "__main__":
    main()
