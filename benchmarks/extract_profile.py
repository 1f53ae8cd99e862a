"""Where an extraction's time goes: each step of ``extract_features`` timed from the inside.

Wraps the steps of :mod:`metaug_features.extract` (listing, model load, waiting for decoded
batches, ``to_input``, the forward, chunk writes and reads, the final features file) with
timers, runs one extraction of FOLDER, then the model-only loop over the same images pre-decoded
(``to_input`` + forward, batches of 64, under the same heap settings), and prints the seconds of
each. Encoder: alexnet32, width 1.0, views l,ab,ori, random init. Repeat with ``--rounds``
(extraction, model only, extraction, ...).

Usage::

    python benchmarks/extract_profile.py /tmp/cifar/cifar10/test --rounds 2
    python benchmarks/extract_profile.py FOLDER --workers 0
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import torch

import metaug_features.extract as ex
from metaug_features import EncoderConfig, build_encoder, load_encoder, save_pretrained
from metaug_features.malloc_settings import freed_memory_kept
from metaug_features.model import MetAugEncoder
from metaug_features.preprocess import Preprocessor

SECONDS: dict[str, float] = collections.defaultdict(float)


def timed(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[name] += time.perf_counter() - t
    return wrapper


def timed_iterator(name, make):
    """``make(...)`` returns an iterator; time each ``next`` (the consumer's wait) under ``name``."""
    def wrapper(*args, **kwargs):
        it = make(*args, **kwargs)

        class Timed:
            def __iter__(self):
                return self

            def __next__(self):
                t = time.perf_counter()
                try:
                    return next(it)
                finally:
                    SECONDS[name] += time.perf_counter() - t

            def close(self):
                it.close()
        return Timed()
    return wrapper


def instrument() -> None:
    ex.collect_files = timed("listing", ex.collect_files)
    ex._load_model = timed("model load", ex._load_model)
    ex.decode_files = timed_iterator("waiting for decoded batches", ex.decode_files)
    Preprocessor.to_input = timed("to_input", Preprocessor.to_input)
    MetAugEncoder.forward = timed("forward", MetAugEncoder.forward)
    ex.PartialStore.write_chunk = timed("chunk writes", ex.PartialStore.write_chunk)
    ex.PartialStore.load_chunk = timed("chunk reads", ex.PartialStore.load_chunk)
    ex.write_feature_folder = timed("final features file (incl. chunk reads)", ex.write_feature_folder)


def report(label: str, total: float, n: int) -> None:
    steps = "; ".join(f"{k} {v:.2f}" for k, v in SECONDS.items())
    print(f"{label}: {total:.1f} s, {n / total:.0f} img/s; {steps}; outside the forward "
          f"{total - SECONDS.get('forward', 0.0):.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="a folder of images (e.g. the CIFAR-10 test JPEGs)")
    ap.add_argument("--workers", type=int, default=None, help="decoding workers (default: the library's)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    instrument()
    tmp = Path(tempfile.mkdtemp(prefix="extract_profile_"))
    torch.manual_seed(0)
    model = save_pretrained(build_encoder(EncoderConfig(architecture="alexnet32", width=1.0, views=("l", "ab", "ori"))),
                            tmp / "model")
    u8 = None
    for r in range(args.rounds):
        SECONDS.clear()
        t = time.perf_counter()
        s = ex.extract_features(model, [args.folder], tmp / f"out{r}", workers=args.workers, progress=False)
        report(f"round {r} end to end", time.perf_counter() - t, s.num_rows)
        if u8 is None:
            enc = load_encoder(model).eval()
            u8 = torch.stack([enc.preprocess.load_image(f) for f in sorted(Path(args.folder).rglob("*.jpg"))])
        SECONDS.clear()
        with torch.inference_mode(), freed_memory_kept():
            enc(enc.preprocess.to_input(u8[:64]))  # warm-up
            SECONDS.clear()
            t = time.perf_counter()
            for i in range(0, len(u8), 64):
                enc(enc.preprocess.to_input(u8[i:i + 64]))
            report(f"round {r} model only", time.perf_counter() - t, len(u8))


if __name__ == "__main__":
    main()
