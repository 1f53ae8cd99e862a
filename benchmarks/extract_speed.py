"""Extraction speed and memory: files -> features on disk vs model-only forward.

Encoder: ``alexnet32``, width 1.0, views (l, ab, ori), random init, saved with
``save_pretrained`` into a temporary model folder (the speed does not depend on the weights).
Images: the 10,000 CIFAR-10 test JPEGs (``/tmp/cifar/cifar10/test`` if present, otherwise
extracted from ``../shared/data/cifar10-jpeg.tar.gz`` into a temporary folder).

For each image count (default 2,500 and 10,000) a fresh child process runs:

1. **end to end**: ``extract_features(model_folder, [folder], out)`` with the CLI defaults
   (batch 64, chunk 1024, min(4, cores) decoding workers), timed from the call to the finished
   feature folder; then its peak resident memory (main process and, separately, the largest
   decoding worker);
2. **model only** (10,000-image child only): the same images decoded beforehand to uint8
   tensors, then ``to_input`` + ``encoder(x)`` in batches of 64 under inference_mode, timed,
   with the glibc heap settings extraction applies (``freed_memory_kept``), so that both sides
   run on the same allocator and the ratio measures the pipeline, not the allocator's state.
   Minor page faults per batch are reported for both sides.

The largest count runs ``--rounds`` rounds (default 3) of (end to end, model only) back to back
in the same child: E0 M0 E1 M1 E2 M2. End-to-end run r is compared with the mean of the
model-only runs on either side of it (M0 alone for E0), so that both sides of each ratio see the
same machine state even when its speed drifts within a round; the table gives the median of
each side and the median of the per-round ratios, and the rounds themselves.
(On the shared 2-core machine the model-only speed alone moved between 241 and 316 img/s from
one single-round run to the next on 2026-12-07, so one round cannot show a ratio.)
Ratio = end-to-end images/s / model-only images/s (target >= 0.9, issue #55). Peak RSS should not grow
with the number of images: features are held one chunk at a time and streamed to disk.

Usage::

    python benchmarks/extract_speed.py                  # prints the results
    python benchmarks/extract_speed.py --write-results  # also updates its section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIFAR_TEST = Path("/tmp/cifar/cifar10/test")
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "extract_speed"


def cifar_test_folder(tmp: Path) -> Path:
    if CIFAR_TEST.is_dir():
        return CIFAR_TEST
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        members = [m for m in tar if m.name.startswith("cifar10/test/") and m.isfile()]
        tar.extractall(tmp, members=members, filter="data")
    return tmp / "cifar10" / "test"


def subset_folder(src: Path, n: int, dest: Path) -> Path:
    """A folder with the first ``n`` files of ``src`` (sorted, class sub-folders kept), as symlinks."""
    files = sorted(p.relative_to(src) for p in src.rglob("*.jpg"))[:n]
    if len(files) < n:
        raise SystemExit(f"only {len(files)} images under {src}, need {n}")
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src / rel, dest / rel)
    return dest


def _status_kib(key: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _minor_faults() -> int:
    """Minor page faults of this process so far (memory faulted in, e.g. freshly mapped blocks)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; Linux >= 4.0."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(model_dir: str, folder: str, out: str, model_only: bool, rounds: int = 1) -> dict:
    """One measurement in this (fresh) process; returns the numbers as a dict. With
    ``model_only``, ``rounds`` rounds of (end to end, model only), medians reported."""
    import torch

    from metaug_features import load_encoder
    from metaug_features.extract import default_workers, extract_features
    from metaug_features.malloc_settings import freed_memory_kept

    rss_before = _status_kib("VmRSS") / 1024
    reset_peak = _reset_peak_rss()  # so the peak below is the extraction's, not the imports'
    f0, t = _minor_faults(), time.perf_counter()
    s = extract_features(model_dir, [folder], out, progress=False)
    e2e = time.perf_counter() - t
    faults = _minor_faults() - f0
    batches = -(-s.num_rows // 64)
    res = {
        "images": s.num_rows, "skipped": s.num_skipped, "dim": s.dim, "workers": default_workers(),
        "torch_threads": torch.get_num_threads(), "e2e_s": e2e, "e2e_ips": s.num_rows / e2e,
        "rss_before_mib": rss_before,
        "peak_rss_main_mib": (_status_kib("VmHWM") if reset_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024,
        "peak_rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "e2e_faults_per_batch": faults / batches,
    }
    if model_only:
        enc = load_encoder(model_dir).eval()
        files = sorted(Path(folder).rglob("*.jpg"))
        u8 = torch.stack([enc.preprocess.load_image(f) for f in files])  # pre-decoded [N, 3, 32, 32]
        e2e_rounds, model_runs, e2e_faults, model_faults = [e2e], [], [faults], []
        for r in range(rounds):
            if r > 0:  # the next round's end-to-end run, into a fresh folder
                f0, t = _minor_faults(), time.perf_counter()
                extract_features(model_dir, [folder], f"{out}-round{r}", progress=False)
                e2e_rounds.append(time.perf_counter() - t)
                e2e_faults.append(_minor_faults() - f0)
            # under the heap settings extraction runs with, so both sides get the same allocator
            with torch.inference_mode(), freed_memory_kept():
                enc(enc.preprocess.to_input(u8[:64]))  # warm-up
                f0, t = _minor_faults(), time.perf_counter()
                for i in range(0, len(u8), 64):
                    enc(enc.preprocess.to_input(u8[i:i + 64]))
                model_runs.append(time.perf_counter() - t)
                model_faults.append(_minor_faults() - f0)
        # Order E0 M0 E1 M1 ...: end-to-end run r is compared with the mean of the model-only
        # runs on either side of it (M(r-1) and M(r); only M0 for r = 0), so a machine that
        # drifts slower or faster during a round moves both sides alike.
        model_rounds = [model_runs[0]] + [(a + b) / 2 for a, b in itertools.pairwise(model_runs)]
        ratios = [m / e for e, m in zip(e2e_rounds, model_rounds)]  # (N / e) / (N / m)
        e2e_s, model_s = statistics.median(e2e_rounds), statistics.median(model_rounds)
        res.update(e2e_s=e2e_s, e2e_ips=len(u8) / e2e_s, model_s=model_s, model_ips=len(u8) / model_s,
                   ratio=statistics.median(ratios), model_runs_ips=[len(u8) / m for m in model_runs], rounds=[
                       {"e2e_ips": len(u8) / e, "model_ips": len(u8) / m, "ratio": m / e,
                        "e2e_faults_per_batch": fe / batches, "model_faults_per_batch": fm / batches}
                       for e, m, fe, fm in zip(e2e_rounds, model_rounds, e2e_faults, model_faults)])
    return res


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}, torch {torch.__version__}"


def write_section(text: str) -> None:
    """Write ``text`` as RESULTS.md's extract_speed section (the one section writer)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # metaug_release is the checkout's, not installed
    from metaug_release.sections import write_section as write

    write(RESULTS, text, SECTION)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="2500,10000", help="image counts, comma-separated (the largest also runs model-only)")
    ap.add_argument("--write-results", action="store_true", help="update the extract_speed section of benchmarks/RESULTS.md")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (end to end, model only) at the largest count")
    ap.add_argument("--child", nargs=5, metavar=("MODEL", "FOLDER", "OUT", "MODEL_ONLY", "ROUNDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child[:3], args.child[3] == "1", int(args.child[4]))))
        return

    import torch

    from metaug_features import EncoderConfig, build_encoder, save_pretrained

    counts = sorted(int(c) for c in args.counts.split(","))
    load_before = os.getloadavg()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="extract_speed_") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model_dir = save_pretrained(build_encoder(EncoderConfig(architecture="alexnet32", width=1.0, views=("l", "ab", "ori"))), tmp / "model")
        src = cifar_test_folder(tmp)
        for n in counts:
            folder = subset_folder(src, n, tmp / f"images{n}")
            cmd = [sys.executable, __file__, "--child", str(model_dir), str(folder), str(tmp / f"out{n}"), "1" if n == counts[-1] else "0",
                   str(args.rounds)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[n] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(n, runs[n], flush=True)
    load_after = os.getloadavg()

    big = runs[counts[-1]]
    lines = [
        "## Feature extraction speed (`benchmarks/extract_speed.py`)",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {machine()}; "
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after (CPU shared with other jobs).",
        f"- Command: `python benchmarks/extract_speed.py --counts {args.counts} --rounds {args.rounds} --write-results`",
        f"- Encoder: alexnet32, width 1.0, views l,ab,ori, random init via save_pretrained; layer `conv` (D = {big['dim']}); "
        f"batch 64, chunk 1024, {big['workers']} decoding workers, {big['torch_threads']} torch threads; CIFAR-10 test JPEGs.",
        "",
        "| images | end to end (files -> features on disk) | model only (pre-decoded uint8 -> to_input -> forward) | ratio | RSS before | peak RSS during extraction (main) | peak RSS (largest worker) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in counts:
        r = runs[n]
        mo = f"{r['model_ips']:.0f} img/s ({r['model_s']:.1f} s)" if "model_ips" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        lines.append(
            f"| {n:,} | {r['e2e_ips']:.0f} img/s ({r['e2e_s']:.1f} s) | {mo} | {ratio} | "
            f"{r['rss_before_mib']:.0f} MiB | {r['peak_rss_main_mib']:.0f} MiB | {r['peak_rss_worker_mib']:.0f} MiB |"
        )
    if big.get("rounds"):
        lines += ["", f"Rounds at {counts[-1]:,} images (end to end / the mean of the model-only runs before and after it, "
                      "in the same process; the row above gives the medians and the median ratio): " + "; ".join(
                          f"{r['e2e_ips']:.0f} / {r['model_ips']:.0f} img/s = {r['ratio']:.2f}" for r in big["rounds"])
                  + ". Model-only runs in order: " + ", ".join(f"{v:.0f}" for v in big["model_runs_ips"]) + " img/s.",
                  "", "Minor page faults of the main process per batch of 64 (end to end / model only): " + "; ".join(
                          f"{r['e2e_faults_per_batch']:.0f} / {r['model_faults_per_batch']:.0f}" for r in big["rounds"])
                  + " (memory faulted in again each batch is time the forward spends in the kernel; "
                    "`metaug_features/malloc_settings.py`)."]
    if len(counts) > 1:
        a, b = runs[counts[0]], runs[counts[-1]]
        lines += ["", f"Peak RSS of the main process during extraction (high-water mark reset after the imports): {a['peak_rss_main_mib']:.0f} MiB at {counts[0]:,} images vs "
                      f"{b['peak_rss_main_mib']:.0f} MiB at {counts[-1]:,} images "
                      f"({b['peak_rss_main_mib'] - a['peak_rss_main_mib']:+.0f} MiB for {counts[-1] // counts[0]}x the images; "
                      f"the {counts[-1]:,} x {b['dim']} float32 features alone are {counts[-1] * b['dim'] * 4 / 2**20:.0f} MiB)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_results:
        write_section(text)


if __name__ == "__main__":
    main()
