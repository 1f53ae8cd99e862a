"""The forward loop with and without glibc's heap kept (``metaug_features/malloc_settings.py``).

Each configuration runs in fresh processes, interleaved (default, kept, default, kept, ...), so
that a machine whose speed drifts treats both alike. A process builds the alexnet32 encoder
(width 1.0, views l,ab,ori, random init), then times ``--passes`` passes of ``to_input`` +
forward over 1,280 random uint8 images in batches of 64 under inference_mode, and counts the
minor page faults per batch.

Usage::

    python benchmarks/heap_settings.py                 # 3 processes of each kind, 3 passes each
    python benchmarks/heap_settings.py --processes 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

IMAGES, BATCH = 1280, 64


def child(kept: bool, passes: int) -> dict:
    import torch

    from metaug_features import EncoderConfig, build_encoder
    from metaug_features.malloc_settings import keep_freed_memory

    if kept:
        keep_freed_memory()
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(architecture="alexnet32", width=1.0, views=("l", "ab", "ori"))).eval()
    u8 = torch.randint(0, 256, (IMAGES, 3, 32, 32), dtype=torch.uint8)
    ips, faults = [], []
    with torch.inference_mode():
        for _ in range(passes):
            f0, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            for i in range(0, IMAGES, BATCH):
                enc(enc.preprocess.to_input(u8[i:i + BATCH]))
            ips.append(IMAGES / (time.perf_counter() - t))
            faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / (IMAGES // BATCH))
    return {"ips": ips, "faults_per_batch": faults}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=3, help="fresh processes per configuration")
    ap.add_argument("--passes", type=int, default=3, help="timed passes per process")
    ap.add_argument("--child", choices=["default", "kept"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "kept", args.passes)))
        return
    runs: dict[str, list[dict]] = {"default": [], "kept": []}
    for _ in range(args.processes):
        for kind, done in runs.items():
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--passes", str(args.passes)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            done.append(r)
            print(f"{kind:8s} img/s {', '.join(f'{v:.0f}' for v in r['ips'])}; "
                  f"faults/batch {', '.join(f'{v:.0f}' for v in r['faults_per_batch'])}", flush=True)
    for kind, rs in runs.items():
        ips = [v for r in rs for v in r["ips"]]
        print(f"{kind}: {min(ips):.0f}-{max(ips):.0f} img/s, mean {statistics.mean(ips):.0f}")


if __name__ == "__main__":
    main()
