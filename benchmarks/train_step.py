"""Step time of the training methods (cmc, oucl, metaug with meta_every 1 and 4) on this CPU.

One full training iteration as ``metaug-train`` runs it (batch gather, batched crop + flip, Lab,
forward/backward, SGD, bank update, and for metaug the MAGs and the meta step), for alexnet32
at each width, three views, batch 64, K 4096, N 50,000 (synthetic uint8 images: the step cost
does not depend on the pixels). All methods are measured in the same process, interleaved in
rounds so that load changes on a shared machine hit them alike; the median step time of each
is reported with its ratio to cmc.

    python benchmarks/train_step.py                      # prints a table
    python benchmarks/train_step.py --write              # and replaces its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metaug_training.config import load_config
from metaug_training.data import ImageArray
from metaug_training.distributed import DistContext
from metaug_training.trainer import Trainer

SECTION = "## Training step time (benchmarks/train_step.py)"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

METHODS = {
    "cmc": ["method=cmc"],
    "oucl": ["method=oucl"],
    "metaug (meta_every 1)": ["method=metaug", "metaug.meta_every=1"],
    "metaug (meta_every 4)": ["method=metaug", "metaug.meta_every=4"],
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make_trainers(width: float, n: int, batch: int, k: int, threads: int) -> dict[str, Trainer]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    data = ImageArray(images, np.zeros(n, dtype=np.int64), [f"{i}.png" for i in range(n)], [], [], "synthetic")
    out = {}
    for name, extra in METHODS.items():
        cfg = load_config(None, [f"model.width={width}", "model.views=l,ab,ori", f"optim.batch_size={batch}",
                                 f"bank.num_negatives={k}", "data.path=synthetic", "run.device=cpu",
                                 f"run.num_threads={threads}", "run.out_dir=/tmp/unused", *extra])
        out[name] = Trainer(cfg, data, DistContext())
    return out


def timed_steps(tr: Trainer, first: int, count: int) -> tuple[float, float]:
    """Run steps ``first .. first + count - 1``; wall and process CPU seconds per step."""
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(first, first + count):
        tr.step(s)
    return (time.perf_counter() - t0) / count, (time.process_time() - c0) / count


def bench(width: float, n: int, batch: int, k: int, rounds: int, steps: int, threads: int) -> dict[str, float]:
    """Median seconds per step of every method (steps per round is a multiple of 4, so each
    metaug (meta_every 4) round holds whole meta cycles)."""
    trainers = make_trainers(width, n, batch, k, threads)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    next_step = {name: 0 for name in trainers}
    for name, tr in trainers.items():  # warm-up: one step each (allocations, oneDNN primitives)
        tr.step(0)
        next_step[name] = 4  # timed rounds start at a meta_every-4 boundary
    cpu: dict[str, list[float]] = {name: [] for name in trainers}
    for r in range(rounds):
        for name, tr in trainers.items():
            wall, cpu_s = timed_steps(tr, next_step[name], steps)
            next_step[name] += steps
            times[name].append(wall)
            cpu[name].append(cpu_s)
        print(f"  width {width} round {r + 1}/{rounds}: " + ", ".join(
            f"{k_} {v[-1] * 1000:.0f} ms wall / {cpu[k_][-1] * 1000:.0f} ms cpu" for k_, v in times.items()), flush=True)
    return {name: (statistics.median(times[name]), statistics.median(cpu[name])) for name in trainers}


def table(results: dict[float, dict[str, tuple[float, float]]], batch: int) -> str:
    """Wall time and process CPU time per step. On a machine shared with other jobs the wall
    time swings with their load; CPU time (all threads of this process) measures the work a
    step does, so its ratios are the stable comparison."""
    lines = ["| width | method | CPU ms / step | ratio to cmc (CPU) | wall ms / step | img/s (wall) | ratio to cmc (wall) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for width, res in results.items():
        base_wall, base_cpu = res["cmc"]
        for name, (wall, cpu) in res.items():
            lines.append(f"| {width} | {name} | {cpu * 1000:.0f} | {cpu / base_cpu:.2f} | {wall * 1000:.0f} | "
                         f"{batch / wall:.0f} | {wall / base_wall:.2f} |")
    return "\n".join(lines)


def write_section(text: str, name: str = "train_step", path: Path = RESULTS) -> None:
    """Replace (or append) section ``name`` of ``path`` (RESULTS.md), leaving the other sections
    alone (:func:`metaug_release.sections.write_section`, the one section writer)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # metaug_release is the checkout's, not installed
    from metaug_release.sections import write_section as write

    write(path, text, name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=float, nargs="+", default=[0.5, 1.0])
    p.add_argument("--num-samples", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--negatives", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="steps per round and method (a multiple of 4)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--write", action="store_true", help=f"write the table into {RESULTS.name}")
    args = p.parse_args()
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    results = {}
    t0 = time.time()
    for w in args.widths:
        results[w] = bench(w, args.num_samples, args.batch, args.negatives, args.rounds, args.steps, threads)
    tab = table(results, args.batch)
    print(tab)
    if args.write:
        try:
            load = Path("/proc/loadavg").read_text().split()[:3]
        except OSError:
            load = ["?"]
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent).stdout.strip() or "unknown"
        cmd = "python " + " ".join(["benchmarks/train_step.py", *sys.argv[1:]])
        text = f"""{SECTION}

One full `metaug-train` iteration (batch gather, batched crop + flip + Lab, forward/backward, SGD,
memory-bank scoring "full" and update; for metaug the MAGs and the second-order meta step):
alexnet32, three views (l, ab, ori), batch {args.batch}, K {args.negatives}, N {args.num_samples:,}
(synthetic pixels), fp32, {threads} torch thread(s). Median over {args.rounds} interleaved rounds of
{args.steps} steps per method (one process, so the ratios share the machine's conditions). CPU time
is the process's own (all its threads): on this shared machine the wall time swings with the
other jobs' load, the CPU time does not, so the CPU ratios are the comparison to quote.

- Machine: {cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores available; torch {torch.__version__}; load average at the end {' '.join(load)} (a shared machine: absolute times vary, ratios less).
- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; commit {sha}; wall time {time.time() - t0:.0f} s.
- Command: `{cmd}`

{tab}
"""
        write_section(text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
