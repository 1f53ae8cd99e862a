"""The random-init floor: k-NN, fast linear probe and k-means on CIFAR-10 features of an
untrained encoder (seed 0). Every trained model must beat these numbers; a trained model below
its own floor is broken or still in the dip of the first epochs.

A thin front end of ``benchmarks/evaluate_encoder.py --random-init WIDTH`` (same steps, same
JSON layout). Usage (15-25 minutes at width 1.0 on the shared 2-core machine)::

    python benchmarks/random_init_floor.py --data /tmp/cifar/cifar10 --out /tmp/metaug-floor \\
        --json benchmarks/random_init_floor.json [--width 1.0]

Other options (``--per-class-train``, ``--threads``, ``--reuse``, ...) are passed through.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate_encoder  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    width = "1.0"
    if "--width" in argv:
        i = argv.index("--width")
        width = argv[i + 1]
        del argv[i : i + 2]
    if "--out" not in argv:
        argv += ["--out", "/tmp/metaug-floor"]
    return evaluate_encoder.main(["--random-init", width, *argv])


if __name__ == "__main__":
    main()
