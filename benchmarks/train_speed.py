"""Training speed against this machine's limit (issue #13).

In one process, for ``alexnet32`` at each width and batch size (three views l/ab/ori, K 4096,
N 50,000 synthetic uint8 images -- the step cost does not depend on the pixel values):

- the fp32 matmul peak of the machine (best of several 2048 x 2048 products, measured at the
  start and again after each width; MFU uses the best);
- encoder forward + backward FLOPs per image and FLOPs of whole steps
  (``torch.utils.flop_counter.FlopCounterMode``: GEMMs and convolutions);
- images/s, achieved GFLOP/s and model FLOP utilisation (MFU = encoder fwd+bwd FLOPs per image
  x images/s / peak: bank scoring, losses and the meta step count as waste) for cmc, oucl and
  metaug at several ``meta_every``; methods are interleaved in rounds, so the ratios share the
  machine's conditions;
- where a step's time goes (``training.phase_timer``: data, forward, loss = bank scoring and
  losses, backward, optimizer, bank update, meta step);
- ablations of each speed setting in the same rounds (NCHW instead of channels_last, prefetch
  switched from its default,
  the double-backward meta step, one thread, pre-made input tensors instead of the real data path);
- peak resident memory of a run at each setting (one child process per setting, since a
  process's peak only grows).

``--reference`` runs the straightforward settings (no channels_last, no prefetch, double-backward
meta step, malloc left alone) and ``--code-root DIR`` runs an older checkout (a folder holding
``metaug_training`` and ``metaug_features``; only images/s then, since older code has no phase
timer). Each run writes a JSON; ``--write`` renders the "Training speed" section of RESULTS.md
from the JSON files.

    python benchmarks/train_speed.py --json benchmarks/train_speed/fast.json
    python benchmarks/train_speed.py --reference --json benchmarks/train_speed/reference.json
    python benchmarks/train_speed.py --render benchmarks/train_speed/*.json --write
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _early_code_root() -> None:
    # --code-root must act before the first metaug import.
    if "--code-root" in sys.argv:
        sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--code-root") + 1]).resolve()))


_early_code_root()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, flop_registry  # noqa: E402

from metaug_training.config import RunConfig, load_config  # noqa: E402
from metaug_training.data import ImageArray  # noqa: E402
from metaug_training.distributed import DistContext  # noqa: E402
from metaug_training.trainer import Trainer  # noqa: E402

import metaug_training  # noqa: E402

try:  # absent in checkouts older than issue #13 (an editable install may still resolve the name
    # to this checkout's module, so check that it lives beside the imported package)
    from metaug_training import phase_timer as _pt

    PhaseTimer = _pt.PhaseTimer if Path(_pt.__file__).parent == Path(metaug_training.__file__).parent else None
except ImportError:  # pragma: no cover - only with --code-root
    PhaseTimer = None

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_step import RESULTS, cpu_name, timed_steps, write_section  # noqa: E402

SECTION = "train_speed"
REFERENCE_SETTINGS = ["run.channels_last=false", "run.prefetch=false", "run.meta_grad=double_backward",
                      "run.keep_freed_memory=false"]
PHASES = ("data", "forward", "loss", "backward", "optimizer", "bank_update", "meta")


def code_version(folder: Path) -> str:
    """Short commit of the checkout holding ``folder``, marked when it has uncommitted changes."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=folder).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def matmul_peak(n: int = 2048, reps: int = 5, trials: int = 5) -> float:
    """Best fp32 GFLOP/s of ``reps`` back-to-back n x n products over ``trials`` trials."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def synthetic_data(n: int) -> ImageArray:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return ImageArray(images, np.zeros(n, dtype=np.int64), [f"{i}.png" for i in range(n)], [], [], "synthetic")


def make_trainer(data: ImageArray, width: float, batch: int, k: int, threads: int, overrides: list[str]) -> Trainer:
    cfg = load_config(None, [f"model.width={width}", "model.views=l,ab,ori", f"optim.batch_size={batch}",
                             f"bank.num_negatives={k}", "data.path=synthetic", "run.device=cpu",
                             f"run.num_threads={threads}", "run.out_dir=/tmp/unused", *overrides])
    return Trainer(cfg, data, DistContext())


def encoder_flops_per_image(tr: Trainer, batch: int) -> float:
    """Forward + backward FLOPs of the encoder (all views, projection head) per image."""
    x, _, _ = tr.batch(0)
    with FlopCounterMode(display=False) as fc:
        z = tr.state.model(x[:batch])
        sum(t.sum() for t in z.values()).backward()
    tr.state.opt.zero_grad(set_to_none=True)
    return fc.get_total_flops() / batch


class _StepFlops(TorchDispatchMode):
    """FlopCounterMode's counting rules (its ``flop_registry``) without its module tracker,
    whose backward hooks refuse ``torch.autograd.grad`` on leaves (the meta step uses it)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def step_flops(tr: Trainer, first: int, count: int) -> float:
    """Mean FLOPs per step over ``count`` steps from ``first`` (a whole meta_every cycle)."""
    with _StepFlops() as fc:
        for s in range(first, first + count):
            tr.step(s)
    return fc.total / count


def variants(args: argparse.Namespace, legacy: bool) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """name -> (config overrides, options). Ablations only where the code has the settings."""
    base = REFERENCE_SETTINGS if args.reference else []
    out: dict[str, tuple[list[str], dict[str, Any]]] = {"cmc": (["method=cmc", *base], {})}
    if not legacy and not args.reference and not args.no_ablations:
        out["cmc, NCHW"] = (["method=cmc", "run.channels_last=false"], {})
        if RunConfig().prefetch:  # the opposite of the default
            out["cmc, no prefetch"] = (["method=cmc", "run.prefetch=false"], {})
        else:
            out["cmc, prefetch"] = (["method=cmc", "run.prefetch=true"], {})
        out["cmc, 1 thread"] = (["method=cmc"], {"threads": 1})
        out["cmc, pre-made tensors"] = (["method=cmc"], {"premade": True})
        if args.try_compile:
            out["cmc, torch.compile"] = (["method=cmc", "run.compile=true"], {})
    out["oucl"] = (["method=oucl", *base], {})
    for m in args.meta_every:
        out[f"metaug (meta_every {m})"] = (["method=metaug", f"metaug.meta_every={m}", *base], {"meta_every": m})
    if not legacy and not args.reference and not args.no_ablations:
        out["metaug (meta_every 1), double backward"] = (
            ["method=metaug", "metaug.meta_every=1", "run.meta_grad=double_backward"], {"meta_every": 1})
    return out


def bench_width(args: argparse.Namespace, data: ImageArray, width: float, batch: int, legacy: bool) -> dict[str, Any]:
    threads = args.threads
    specs = variants(args, legacy)
    trainers = {name: make_trainer(data, width, batch, args.negatives, threads, ov) for name, (ov, _) in specs.items()}
    # each variant runs whole meta cycles per round: ceil(steps / meta_every) * meta_every
    n_steps = {name: -(-args.steps // opt.get("meta_every", 1)) * opt.get("meta_every", 1)
               for name, (_, opt) in specs.items()}
    premade: dict[str, Any] = {}
    for name, tr in trainers.items():
        if specs[name][1].get("premade"):
            fixed = tr.batch(0)
            tr.next_batch = lambda step, fixed=fixed: fixed  # type: ignore[method-assign]
            premade[name] = fixed
    res: dict[str, Any] = {"width": width, "batch": batch, "steps_per_round": n_steps, "variants": {}}
    any_tr = next(iter(trainers.values()))
    res["encoder_flops_per_image"] = encoder_flops_per_image(any_tr, batch)
    next_step = {}
    for name, tr in trainers.items():  # warm-up (oneDNN primitives, allocator) and FLOP count
        opt = specs[name][1]
        m = opt.get("meta_every", 1)
        if threads and opt.get("threads"):
            torch.set_num_threads(opt["threads"])
        t_first = time.perf_counter()
        try:
            tr.step(0)
        except Exception as e:  # an optional setting that fails here is reported, not fatal
            if not name.endswith("torch.compile"):
                raise
            res["variants"][name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            continue
        res["variants"].setdefault(name, {})["first_step_s"] = time.perf_counter() - t_first
        res["variants"].setdefault(name, {})["step_flops"] = step_flops(tr, m, m)
        torch.set_num_threads(threads)
        next_step[name] = 2 * m
    trainers = {n: tr for n, tr in trainers.items() if "error" not in res["variants"].get(n, {})}
    times: dict[str, list[float]] = {n: [] for n in trainers}
    cpu: dict[str, list[float]] = {n: [] for n in trainers}
    faults: dict[str, list[float]] = {n: [] for n in trainers}
    phases: dict[str, dict[str, float]] = {n: {} for n in trainers}
    for r in range(args.rounds):
        for name, tr in trainers.items():
            opt = specs[name][1]
            torch.set_num_threads(opt.get("threads", threads))
            timer = PhaseTimer() if PhaseTimer is not None else None
            if timer is not None:
                tr.state.timer = timer
            steps = n_steps[name]
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            wall, cpu_s = timed_steps(tr, next_step[name], steps)
            next_step[name] += steps
            times[name].append(wall)
            cpu[name].append(cpu_s)
            faults[name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps)
            if timer is not None:
                for k, v in timer.totals.items():
                    phases[name][k] = phases[name].get(k, 0.0) + v / steps / args.rounds
            torch.set_num_threads(threads)
        print(f"  width {width} batch {batch} round {r + 1}/{args.rounds}: "
              + ", ".join(f"{n} {v[-1] * 1000:.0f} ms" for n, v in times.items()), flush=True)
    for name, tr in trainers.items():
        if hasattr(tr, "close"):
            tr.close()
        v = res["variants"][name]
        v["wall_s"] = statistics.median(times[name])
        v["wall_s_all"] = times[name]
        v["cpu_s"] = statistics.median(cpu[name])
        v["minor_faults_per_step"] = statistics.median(faults[name])
        v["phases_s"] = phases[name]
        v["threads"] = specs[name][1].get("threads", threads)
    return res


def rss_child(args: argparse.Namespace) -> None:
    """Run a few steps of one setting and print its peak RSS (MB) as JSON."""
    width, batch = args.rss_child_width, args.rss_child_batch
    data = synthetic_data(args.num_samples)
    overrides = json.loads(args.rss_child)
    tr = make_trainer(data, width, batch, args.negatives, args.threads, overrides)
    if "run.keep_freed_memory=false" not in overrides and hasattr(tr.cfg.run, "keep_freed_memory"):
        from metaug_features.malloc_settings import keep_freed_memory

        keep_freed_memory()
    for s in range(3):
        tr.step(s)
    if hasattr(tr, "close"):
        tr.close()
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: after fork + exec, ru_maxrss
    still counts the parent's pages at the fork, VmHWM belongs to the new address space."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_rss(args: argparse.Namespace, legacy: bool) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    specs = {n: s for n, s in variants(args, legacy).items() if "," not in n}  # main settings only
    for width in args.widths:
        for batch in args.batches:
            for name, (ov, _) in specs.items():
                cmd = [sys.executable, __file__, "--rss-child", json.dumps(ov), "--rss-child-width", str(width),
                       "--rss-child-batch", str(batch), "--num-samples", str(args.num_samples),
                       "--negatives", str(args.negatives), "--threads", str(args.threads)]
                if args.code_root:
                    cmd += ["--code-root", args.code_root]
                p = subprocess.run(cmd, capture_output=True, text=True, check=True)
                mb = json.loads(p.stdout.strip().splitlines()[-1])["peak_rss_mb"]
                out.setdefault(f"{width}/{batch}", {})[name] = mb
                print(f"  peak RSS width {width} batch {batch} {name}: {mb:.0f} MB", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=float, nargs="+", default=[0.5, 1.0])
    p.add_argument("--batches", type=int, nargs="+", default=[128])
    p.add_argument("--meta-every", type=int, nargs="+", default=[1, 4])
    p.add_argument("--num-samples", type=int, default=50_000)
    p.add_argument("--negatives", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="steps per round and variant (rounded to whole meta cycles)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--reference", action="store_true", help="the straightforward settings (the 'before' of #13)")
    p.add_argument("--code-root", default="", help="import metaug_training / metaug_features from this folder")
    p.add_argument("--label", default="", help="name of this run in the rendered section")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--try-compile", action="store_true", help="also time run.compile=true (compiles for ~1 min)")
    p.add_argument("--no-rss", action="store_true")
    p.add_argument("--json", type=Path, help="write the raw figures here")
    p.add_argument("--render", type=Path, nargs="*", help="render RESULTS.md's section from these JSON files")
    p.add_argument("--write", action="store_true", help=f"write the rendered section into {RESULTS.name}")
    p.add_argument("--rss-child", default="", help=argparse.SUPPRESS)
    p.add_argument("--rss-child-width", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--rss-child-batch", type=int, default=128, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args)
        return
    if args.render is not None:
        from train_speed_report import render

        text = render([json.loads(f.read_text()) for f in args.render])
        print(text)
        if args.write:
            write_section(text, SECTION)
            print(f"wrote {RESULTS}")
        return
    legacy = PhaseTimer is None
    if not args.reference and not legacy:
        from metaug_features.malloc_settings import keep_freed_memory

        keep_freed_memory()  # as metaug-train does (run.keep_freed_memory); cannot be undone in-process
    t0 = time.time()
    data = synthetic_data(args.num_samples)
    out: dict[str, Any] = {
        "label": args.label or ("code at " + args.code_root if args.code_root else
                                "reference settings" if args.reference else "fast defaults"),
        "reference": args.reference, "legacy": legacy, "code_root": args.code_root,
        "machine": cpu_name(), "cores": len(os.sched_getaffinity(0)), "threads": args.threads,
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": code_version(Path(metaug_training.__file__).resolve().parent),
        "command": "python " + " ".join(["benchmarks/train_speed.py", *sys.argv[1:]]),
        "num_samples": args.num_samples, "negatives": args.negatives, "rounds": args.rounds,
        "peaks_gflops": [matmul_peak()], "results": [],
    }
    for width in args.widths:
        for batch in args.batches:
            out["results"].append(bench_width(args, data, width, batch, legacy))
            out["peaks_gflops"].append(matmul_peak())
    del data
    if not args.no_rss:
        out["peak_rss_mb"] = measure_rss(args, legacy)
    out["wall_s"] = time.time() - t0
    try:
        out["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    text = json.dumps(out, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        from metaug_features.atomic import atomic_write_text

        atomic_write_text(args.json, text + "\n")
        print(f"wrote {args.json}")
    else:
        print(text)


if __name__ == "__main__":
    main()
