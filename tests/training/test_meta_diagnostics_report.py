"""``metaug_training.meta_diagnostics_report`` and ``metaug-meta-diagnostics``: reading the meta
records of a log.jsonl (skipping a crashed run's partial line), the summary against a naive
recomputation, the verdict's three main cases, the plot, and the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from metaug_cli.meta_diagnostics import main as cli
from metaug_training.meta_diagnostics_report import (
    COLLAPSE_COS, INERT_SHARE, PNG_NAME, RATIO_TOL,
    UNRELATED_COS, MetaDiagnosticsError, MetaLogWarning, make_report,
    plot_meta_diagnostics, read_meta_events, summarise, verdict,
)
from _cli_helpers import assert_user_error


def _meta(step: int, **over: Any) -> dict[str, Any]:
    """A meta record of step ``step`` with values that vary with the step."""
    t = step / 100
    rec = {"time": 1765000000.0 + step, "event": "meta", "step": step, "epoch": step / 50, "inner_lr": 1e-3,
           "grad_norm_direct": 1e-3 * (1 + t), "grad_norm_second": 2e-6 * (1 + t), "second_order_share": 0.002 + t / 1000,
           "cos_z_mag/l": 0.9 + t / 100, "cos_z_mag/ab": 0.85 + t / 50, "pos_orig": 0.6 + t / 10,
           "pos_aug": 0.62 + t / 20, "loss_orig": 9.5 - t, "loss_aug_mean": 9.6 - t, "reg": 0.03 * (1 + t),
           "mag_loss": 9.5 - t / 2}
    rec["aug_orig_loss_ratio"] = rec["loss_aug_mean"] / rec["loss_orig"]
    rec.update(over)
    return rec


def _write_log(path: Path, records: list[dict[str, Any]], tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


def _run(tmp_path: Path, n: int = 20) -> tuple[Path, list[dict[str, Any]]]:
    """A run folder whose log mixes step records, meta records, a calibration and a stop record,
    and ends with a truncated line; returns (folder, the meta records in order)."""
    metas = [_meta(10 * (i + 1)) for i in range(n)]
    records: list[dict[str, Any]] = [{"time": 1.0, "event": "a2-calibration", "sigma": 0.3}]
    for m in metas:
        records += [{"time": m["time"] - 0.5, "step": m["step"], "epoch": m["epoch"], "loss": 9.5}, m]
    records.append({"time": 2e9, "event": "stop", "status": "done", "step": metas[-1]["step"], "epoch": 4.0})
    _write_log(tmp_path / "run" / "log.jsonl", records, tail='{"time": 1765, "event": "meta", "step": 99')
    return tmp_path / "run", metas


# ---------------------------------------------------------------------- reading
def test_read_keeps_exactly_the_meta_events(tmp_path):
    run, metas = _run(tmp_path)
    with pytest.warns(MetaLogWarning, match="skipped 1 unreadable line"):
        events = read_meta_events(run / "log.jsonl")
    assert events == metas


def test_read_after_a_resume_keeps_the_continued_account(tmp_path):
    """A resumed run re-runs the steps since its checkpoint; a kill glued two records together."""
    first = [_meta(s) for s in (10, 20, 30, 40)]
    again = [_meta(s, pos_aug=0.1) for s in (30, 40, 50)]
    log = _write_log(tmp_path / "log.jsonl", first, tail='{"step": 41, "lo' + json.dumps(again[0]) + "\n")
    with log.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in again[1:]))
    with pytest.warns(MetaLogWarning, match="skipped 1"):
        events = read_meta_events(log)
    # the glued line held the resumed step 30: the first account's 30 stays, its 40 gives way
    assert [e["step"] for e in events] == [10, 20, 30, 40, 50]
    assert [e["pos_aug"] == 0.1 for e in events] == [False, False, False, True, True]


@pytest.mark.parametrize("records", [[], [{"step": 1, "epoch": 0.1, "loss": 9.0}, {"event": "stop", "step": 1}]])
def test_a_log_without_meta_events_is_a_clear_error(tmp_path, records):
    log = _write_log(tmp_path / "log.jsonl", records)
    with pytest.raises(MetaDiagnosticsError, match="no meta-step diagnostics.*only method=metaug runs log them"):
        read_meta_events(log)


# ---------------------------------------------------------------------- summary
@pytest.mark.parametrize("last,expected", [(None, 2), (1, 1), (7, 7), (1000, 20)])
def test_summary_equals_a_naive_mean(tmp_path, last, expected):
    metas = [_meta(10 * (i + 1)) for i in range(20)]
    metas[-1]["reg"] = None  # optional: absent or null in some records
    del metas[-2]["second_order_share"]
    s = summarise(metas, last=last)
    window = metas[-expected:]
    assert s["last"] == expected and s["meta_steps"] == 20
    assert s["steps"] == [window[0]["step"], window[-1]["step"]] and s["views"] == ["l", "ab"]
    for key in ("inner_lr", "grad_norm_direct", "second_order_share", "cos_z_mag/l", "cos_z_mag/ab", "pos_orig",
                "pos_aug", "loss_orig", "loss_aug_mean", "aug_orig_loss_ratio", "reg", "mag_loss"):
        values = [e[key] for e in window if e.get(key) is not None]
        want = sum(values) / len(values) if values else None
        got = s["means"].get(key)
        assert (got is None and want is None) or got == pytest.approx(want, rel=1e-12), key
    assert s["means"]["cos_z_mag_mean"] == pytest.approx((s["means"]["cos_z_mag/l"] + s["means"]["cos_z_mag/ab"]) / 2)


def test_summary_rejects_no_steps():
    with pytest.raises(MetaDiagnosticsError, match="at least 1"):
        summarise([_meta(1)], last=0)


# ---------------------------------------------------------------------- verdict
def _summary(**means: float) -> dict[str, Any]:
    return summarise([_meta(1, **means)], last=1)


def test_verdict_inert_and_collapsed():
    """Issue #54's run: 0.2% second order, MAG(z) close to z, augmented loss 9.58 vs 9.52."""
    text = verdict(_summary(second_order_share=0.002, **{"cos_z_mag/l": 0.97, "cos_z_mag/ab": 0.96},
                            pos_orig=0.61, pos_aug=0.6, aug_orig_loss_ratio=9.58 / 9.52))
    assert "meta (second-order) path is inert" in text and "trained almost only by the direct augmented terms" in text
    assert "near-copies of the features" in text and "collapse" in text and "harder than" not in text


def test_verdict_active_and_harder():
    text = verdict(_summary(second_order_share=0.2, **{"cos_z_mag/l": 0.5, "cos_z_mag/ab": 0.4},
                            pos_orig=0.6, pos_aug=0.3, aug_orig_loss_ratio=1.2))
    assert "path is active" in text and "augmented views are harder than the originals" in text
    assert "inert" not in text and "near-copies" not in text


def test_verdict_unrelated_outputs_are_not_called_harder():
    """Campaign 1's MetAug weights: MAG(z) nearly orthogonal to z, so the augmented positives score
    far lower, but only because the outputs are not views of the image at all."""
    text = verdict(_summary(second_order_share=0.003, **{"cos_z_mag/l": 0.034, "cos_z_mag/ab": 0.016},
                            pos_orig=0.737, pos_aug=0.017, aug_orig_loss_ratio=1.597))
    assert "unrelated to the features" in text and "harder than the originals" not in text
    border = {"cos_z_mag/l": UNRELATED_COS + 0.01, "cos_z_mag/ab": UNRELATED_COS + 0.01}
    assert "harder than" in verdict(_summary(aug_orig_loss_ratio=1.5, pos_orig=0.7, pos_aug=0.1, **border))


def test_verdict_thresholds_are_the_constants():
    just = dict(pos_orig=0.6, pos_aug=0.5)
    assert "inert" in verdict(_summary(second_order_share=INERT_SHARE * 0.99, **just))
    assert "active" in verdict(_summary(second_order_share=INERT_SHARE, **just))
    cos = {"cos_z_mag/l": COLLAPSE_COS + 0.01, "cos_z_mag/ab": COLLAPSE_COS + 0.01}
    assert "near-copies" in verdict(_summary(aug_orig_loss_ratio=1 + RATIO_TOL * 0.9, **cos, **just))
    assert "harder than" in verdict(_summary(aug_orig_loss_ratio=1 + RATIO_TOL * 1.5, **cos, **just))
    easier = verdict(_summary(aug_orig_loss_ratio=0.9, pos_orig=0.5, pos_aug=0.6))
    assert "easier than the originals" in easier
    assert "not logged" in verdict(_summary(second_order_share=None))


# ---------------------------------------------------------------------- plot
def _check_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 10_000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 400
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_plot_is_a_png(tmp_path):
    events = [_meta(10 * (i + 1)) for i in range(30)]
    _check_png(plot_meta_diagnostics(events, tmp_path / "sub" / "d.png", title="t"))


def test_plot_without_the_optional_quantities(tmp_path):
    events = [_meta(i + 1, second_order_share=None, grad_norm_second=None, reg=None) for i in range(5)]
    for e in events:
        del e["cos_z_mag/ab"]
        e["cos_z_mag/ori"] = 0.9
    _check_png(plot_meta_diagnostics(events, tmp_path / "d.png"))


# ---------------------------------------------------------------------- the command
def test_cli_end_to_end(tmp_path):
    run, metas = _run(tmp_path)
    res = CliRunner().invoke(cli, [str(run), "--json", str(tmp_path / "out" / "s.json")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    report = json.loads((tmp_path / "out" / "s.json").read_text())
    assert report["verdict"] in res.output and "meta (second-order) path is inert" in report["verdict"]
    assert report["summary"]["last"] == 2 and report["log"] == str(run / "log.jsonl")
    assert "skipped 1 unreadable line" in res.output and "mean over the last 2 of 20 meta steps" in res.output
    assert f"wrote {run / PNG_NAME}\n" in res.output and f"wrote {tmp_path / 'out' / 's.json'}\n" in res.output
    _check_png(run / PNG_NAME)

    res = CliRunner().invoke(cli, [str(run / "log.jsonl"), "-o", str(tmp_path / "p.png"), "--last", "5", "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert res.output.strip() == verdict(summarise(metas, last=5))
    _check_png(tmp_path / "p.png")


def test_cli_errors(tmp_path):
    log = _write_log(tmp_path / "oucl" / "log.jsonl", [{"step": 10, "epoch": 0.1, "loss": 9.0}])
    assert_user_error(CliRunner().invoke(cli, [str(log.parent)]), "no meta-step diagnostics",
                       "only method=metaug runs log them")
    assert not (log.parent / PNG_NAME).exists()
    assert_user_error(CliRunner().invoke(cli, [str(tmp_path / "missing")]), "no training log at")
    assert_user_error(CliRunner().invoke(cli, [str(log), "--last", "0"]), "--last")


def test_make_report_returns_what_it_wrote(tmp_path):
    run, metas = _run(tmp_path)
    r = make_report(run, last=3)
    assert r.png == run / PNG_NAME and r.json_path is None and len(r.notes) == 1
    assert math.isclose(r.summary["means"]["pos_aug"], sum(m["pos_aug"] for m in metas[-3:]) / 3)
