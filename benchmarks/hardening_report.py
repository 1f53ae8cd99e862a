"""The hardening record (#7): runs the tests that try to break extraction, loading and training,
and writes what they tried and what happened into ``benchmarks/RESULTS.md``.

What is counted, all from this one run:

* per test file: tests run, passed, failed or errored ("crashes": any test whose code under
  test raised where it must not), and timed out ("hangs": pytest-timeout ended the test);
* the inputs the tests tried, as the tests themselves count them (``hardening_record`` in
  ``tests/conftest.py``): hypothesis examples, fixed odd files, files of the fuzzed folder, kills;
* the peak resident memory of the largest process of the run (``RUSAGE_CHILDREN``), and the
  figures of the last 100,000-image extraction (``benchmarks/extract_scale.json``).

Usage::

    python benchmarks/hardening_report.py --write-results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # metaug_release is the checkout's, not installed
from metaug_release.sections import write_section

REPO = Path(__file__).resolve().parents[1]
SCALE = REPO / "benchmarks" / "extract_scale.json"
RECORD = REPO / "benchmarks" / "hardening.json"
SECTION = "hardening"

#: Hypothesis examples per fuzzing property in the recorded run (the default suite runs 300).
FUZZ_EXAMPLES = 20_000
#: The hardening test files, with what each one attacks (the rows of the table).
SUITES = {
    "tests/features/test_decode_fuzz.py": "image fuzzing (hypothesis): random bytes, every PIL mode and size, truncations, odd formats",
    "tests/extraction/test_extract_bad_inputs.py": "bad image files through the CLI (empty, truncated, bombs, FIFOs, CMYK, 16-bit, EXIF, permissions)",
    "tests/features/test_decode_pool.py": "decoders that hang (Python or C) or crash: per-file time limit, crash isolation, no orphans",
    "tests/extraction/test_extract_hostile_folders.py": "hostile folders: symlink loops, newline names, files vanishing or changing mid-run",
    "tests/features/test_model_io.py": "hostile model folders: pickles, wrong dtype/shape/extra tensors, bad configs, links out, bad cards",
    "tests/extraction/test_extract_write_errors.py": "write errors (full disk, read-only) keep earlier outputs intact",
    "tests/extraction/test_extract_lock.py": "two extractions into one output: refused by a lock, no corruption",
    "tests/extraction/test_kill_restart.py": "20 SIGKILLs each of an extraction and a training run, restarted to the uninterrupted result",
}


def run_suites(junit: Path, record: Path) -> tuple[float, float, int]:
    """Run the hardening tests; returns (seconds, peak RSS MiB of the largest process, exit code)."""
    env = dict(os.environ, METAUG_HARDENING_RECORD=str(record), METAUG_FUZZ_EXAMPLES=str(FUZZ_EXAMPLES))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--run-slow", f"--junitxml={junit}", *SUITES]
    t0 = time.perf_counter()
    code = subprocess.run(cmd, cwd=REPO, env=env).returncode
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    return seconds, peak_kib / 1024, code


def summarise(junit: Path) -> dict[str, dict[str, int]]:
    """Per test file: run, passed, failed (incl. errors), hangs (timeouts), skipped."""
    rows = {f: dict(run=0, passed=0, failed=0, hangs=0, skipped=0) for f in SUITES}
    for case in ET.parse(junit).getroot().iter("testcase"):
        path = "tests/" + case.get("classname", "").split(".")[-1] + ".py"
        row = rows.get(path)
        if row is None:
            continue
        row["run"] += 1
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if case.find("skipped") is not None:
            row["skipped"] += 1
        elif bad is not None:
            row["failed"] += 1
            row["hangs"] += int("Timeout" in (bad.get("message", "") + (bad.text or "")))
        else:
            row["passed"] += 1
    return rows


def render(report: dict) -> str:
    rows = report["suites"]
    total = {k: sum(r[k] for r in rows.values()) for k in ("run", "passed", "failed", "hangs", "skipped")}
    lines = [
        "## Hardening: hostile inputs, fault injection and scale (`benchmarks/hardening_report.py`) (#7)",
        "",
        f"- Date: {report['date_utc']}; machine: {report['machine']}; command: "
        "`python benchmarks/hardening_report.py --write-results` "
        f"({report['seconds'] / 60:.1f} min). Raw record: `benchmarks/hardening.json`.",
        f"- **Tests: {total['run']} run, {total['passed']} passed, crashes (failed or errored) "
        f"{total['failed']}, hangs (timed out) {total['hangs']}, skipped {total['skipped']}.**",
        f"- Peak resident memory of the largest process in the run: {report['peak_rss_mib']:.0f} MiB.",
        "",
        "| tests | what they attack | run | passed | crashes | hangs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for f, r in rows.items():
        lines.append(f"| `{f}` | {SUITES[f]} | {r['run']} | {r['passed']} | {r['failed']} | {r['hangs']} |")
    lines += ["", "Inputs tried, as counted by the tests themselves:", "", "| input | count |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in sorted(report["inputs"].items())]
    scale = report.get("scale")
    if scale:
        lines += [
            "",
            f"Scale (section `extract_scale` above, {scale['date_utc']}): {scale['images']:,} real JPEGs in "
            f"{scale['seconds']:.0f} s ({scale['img_per_s']:.0f} img/s), peak RSS {scale['peak_main_mib']:.0f} MiB "
            f"(main) + {scale['peak_worker_mib']:.0f} MiB (largest worker); peak of the 2nd / last quarter "
            f"{scale['peak_main_mib_2nd_quarter']:.0f} / {scale['peak_main_mib_last_quarter']:.0f} MiB (flat).",
        ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write-results", action="store_true", help="write benchmarks/hardening.json and RESULTS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        junit, record = Path(tmp) / "junit.xml", Path(tmp) / "record.json"
        seconds, peak, code = run_suites(junit, record)
        suites = summarise(junit)
        inputs = json.loads(record.read_text()) if record.is_file() else {}
    scale = json.loads(SCALE.read_text()) if SCALE.is_file() else None
    report = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores visible, Python {platform.python_version()}",
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak, 1),
        "pytest_exit_code": code,
        "suites": suites,
        "inputs": inputs,
        "scale": None if scale is None else {k: v for k, v in scale.items() if k != "trace"},
    }
    print(json.dumps({k: v for k, v in report.items() if k != "scale"}, indent=1))
    if args.write_results:
        RECORD.write_text(json.dumps(report, indent=1) + "\n")
        write_section(REPO / "benchmarks" / "RESULTS.md", render(report), SECTION)
    return code


if __name__ == "__main__":
    sys.exit(main())
