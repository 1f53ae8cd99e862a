"""Read a MetAug run's meta-step diagnostics from its ``log.jsonl``, summarise them, judge them in
plain words and plot them over training (``metaug-meta-diagnostics``; docs/METHODS.md sections 4-6,
issue #54).

During a ``method=metaug`` run the trainer writes, at every meta step, one record
``{"event": "meta", "step", "epoch", ...}`` with these quantities (floats; the ones marked optional
may be absent or null):

- ``inner_lr``: eta_in, the inner learning rate of the fast weights theta* = theta' - eta_in * g.
- ``grad_norm_direct``: the norm of the MAG gradient's direct part (through MAG(z*)).
- ``grad_norm_second`` (optional): the norm of its second-order part (through theta*(phi)).
- ``second_order_share`` (optional): ||second|| / (||direct|| + ||second||), in [0, 1]. The
  second-order path is the point of the method: near 0, the MAGs learn only from the direct
  augmented terms.
- ``cos_z_mag/<view>`` (one per view of the run: l, ab, ori): the mean cosine between the view's
  embedding z and MAG(z). 1 means the MAG is the identity (the collapse of the paper's §3.2 and
  Figure 2a).
- ``pos_orig`` / ``pos_aug``: the mean positive score (cosine) of the original anchors and of the
  MAG-augmented anchors. Augmented positives below the original ones = harder augmentations.
- ``loss_orig``, ``loss_aug_mean``: the OUCL loss of the original views and the mean loss of the
  augmented terms; ``aug_orig_loss_ratio`` = loss_aug_mean / loss_orig (about 1: the augmented
  views are no harder than the originals).
- ``reg`` (optional): the margin regulariser R, unweighted (without alpha; section 4.4).
- ``mag_loss``: the loss the meta step differentiates (L_tot(z*, MAG(z*)) + alpha * R).

Runs of ``method=oucl`` or ``method=cmc`` have no MAGs and write no such records.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from metaug_features.atomic import atomic_write_bytes, atomic_write_text
from metaug_features.errors import MetAugError

__all__ = [
    "COLLAPSE_COS", "INERT_SHARE", "LOG_NAME", "PNG_NAME", "RATIO_TOL", "UNRELATED_COS", "MetaDiagnosticsError", "MetaLogWarning",
    "MetaReport", "format_summary", "make_report", "plot_meta_diagnostics", "read_meta_events", "resolve_log",
    "summarise", "verdict",
]

LOG_NAME = "log.jsonl"
PNG_NAME = "meta-diagnostics.png"
#: the fraction of the meta steps :func:`summarise` averages when ``last`` is not given (at least one step)
DEFAULT_LAST_FRACTION = 0.1

#: second_order_share below this = the meta (second-order) path is inert. Below 1% the second-order
#: part can turn the MAG update by at most about 0.01 rad (its norm over the direct part's), far less
#: than the minibatch noise of the direct part itself: dropping the meta step would change nothing
#: measurable. Issue #54 measured about 0.2% with the official code's inner learning rate 1e-3.
INERT_SHARE = 0.01
#: mean cos(z, MAG(z)) over the views above this = MAG outputs near-copies of the features: an angle
#: under about 18 degrees, closer than two augmented views of one image usually are after training.
COLLAPSE_COS = 0.95
#: mean |cos(z, MAG(z))| over the views below this = the MAG outputs are unrelated to the features
#: they should augment (an angle over about 78 degrees): an untrained or barely trained MAG maps its
#: input to a near-random direction. Its outputs are then "harder" only in a trivial sense (they are
#: not views of the same image), which campaign 1's final MetAug weights show (mean cosine 0.016,
#: benchmarks/meta_diagnostics/campaign1-final.json).
UNRELATED_COS = 0.2
#: aug_orig_loss_ratio within this of 1 = the augmented terms are as easy as the original one. A 1%
#: loss difference is within the step-to-step noise of the loss; #54 saw 9.58 / 9.52 = 1.006 in a
#: collapsed run. "Harder" and "easier" also need the ratio beyond this margin.
RATIO_TOL = 0.01

_META = "meta"
_NUMERIC_FIELDS = ("step", "epoch")


class MetaDiagnosticsError(MetAugError):
    """The log cannot be read, or holds no meta-step diagnostics (not a ``method=metaug`` run)."""


class MetaLogWarning(UserWarning):
    """Some lines of the log could not be read (a crashed run's partial last line) and were skipped."""


# ---------------------------------------------------------------------- reading
def resolve_log(source: str | os.PathLike) -> Path:
    """The log a RUN_DIR_OR_LOG argument names, absolute: ``source/log.jsonl`` for a folder, else ``source``."""
    path = Path(os.path.abspath(os.fspath(source)))
    if path.is_dir():
        path = path / LOG_NAME
    if not path.is_file():
        raise MetaDiagnosticsError(f"no training log at {path}: give a run folder (with {LOG_NAME}) or a {LOG_NAME} file")
    return path


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(the meta records of ``path``, the number of lines skipped): see :func:`read_meta_events`."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise MetaDiagnosticsError(f"cannot read the training log {path}: {e}") from None
    events: list[dict[str, Any]] = []
    skipped = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(rec, dict):
            skipped += 1
        elif rec.get("event") != _META:
            continue
        elif not all(_is_number(rec.get(k)) for k in _NUMERIC_FIELDS):
            skipped += 1
        else:
            while events and events[-1]["step"] >= rec["step"]:
                events.pop()  # a resumed run re-ran these steps
            events.append(rec)
    if not events:
        raise MetaDiagnosticsError(f"{path} has no meta-step diagnostics (no \"event\": \"meta\" record): only "
                                   "method=metaug runs log them (OUCL and CMC runs have no meta step)")
    return events, skipped


def _skipped_message(path: Path, skipped: int) -> str:
    return f"{path}: skipped {skipped} unreadable line(s) (a crashed run's partial record)"


def read_meta_events(log_path: str | os.PathLike) -> list[dict[str, Any]]:
    """The meta-step records (``"event": "meta"``) of ``log_path``, in training order.

    Other records (step records, ``stop``, calibrations) are ignored. Lines that are not a JSON
    object (a crashed run's partial last line, or one that a resumed run appended to) and meta
    records without a numeric ``step`` and ``epoch`` are skipped; a :class:`MetaLogWarning` says
    how many. After a resume the trainer re-runs the steps since its last checkpoint: a record
    whose step is not above the previous one drops the earlier records from that step on, so the
    result has increasing steps and holds the account of the run that continued.

    Raises :class:`MetaDiagnosticsError` when the file cannot be read or has no meta record."""
    path = Path(log_path)
    events, skipped = _read(path)
    if skipped:
        warnings.warn(_skipped_message(path, skipped), MetaLogWarning, stacklevel=2)
    return events


# ---------------------------------------------------------------------- summary
def views_of(events: Sequence[dict[str, Any]]) -> list[str]:
    """The views whose ``cos_z_mag/<view>`` the events hold, in order of first appearance."""
    seen: dict[str, None] = {}
    for e in events:
        for k in e:
            if k.startswith("cos_z_mag/"):
                seen.setdefault(k.split("/", 1)[1], None)
    return list(seen)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(events: Sequence[dict[str, Any]], last: int | None = None) -> dict[str, Any]:
    """Means of every numeric diagnostic over the last ``last`` meta steps (default: the last
    10% of them, at least one; more than there are = all).

    Returns ``{"meta_steps", "last", "steps": [first, last], "epochs": [first, last], "views",
    "means"}``; ``means`` maps each quantity to its mean over the events that hold a number for
    it (None when none does), plus ``cos_z_mag_mean``: the mean over the views of their means."""
    if not events:
        raise MetaDiagnosticsError("no meta-step events to summarise")
    if last is None:
        last = max(1, math.ceil(DEFAULT_LAST_FRACTION * len(events)))
    if last < 1:
        raise MetaDiagnosticsError(f"last (--last) must be at least 1, got {last}")
    window = list(events)[-last:]
    keys: dict[str, None] = {}
    for e in window:
        keys.update({k: None for k, v in e.items() if _is_number(v) and k not in ("time", "step", "epoch")})
    means = {k: _mean([float(e[k]) for e in window if _is_number(e.get(k))]) for k in keys}
    views = views_of(window)
    cos = [means[f"cos_z_mag/{v}"] for v in views if means.get(f"cos_z_mag/{v}") is not None]
    means["cos_z_mag_mean"] = _mean(cos)
    return {"meta_steps": len(events), "last": len(window), "steps": [window[0]["step"], window[-1]["step"]],
            "epochs": [window[0]["epoch"], window[-1]["epoch"]], "views": views, "means": means}


# ---------------------------------------------------------------------- verdict
def _share_sentence(share: float | None) -> str:
    if share is None:
        return "the second-order share of the MAG gradient was not logged: the meta path cannot be judged"
    if share < INERT_SHARE:
        return (f"the meta (second-order) path is inert ({100 * share:.2g}% of the MAG gradient norm, below "
                f"{100 * INERT_SHARE:g}%): the MAGs are trained almost only by the direct augmented terms")
    return f"the meta (second-order) path is active ({100 * share:.3g}% of the MAG gradient norm)"


def _augmentation_sentence(m: dict[str, Any]) -> str:
    cos, ratio, po, pa = (m.get(k) for k in ("cos_z_mag_mean", "aug_orig_loss_ratio", "pos_orig", "pos_aug"))
    if ratio is None or po is None or pa is None:
        return "the augmentations cannot be judged: the loss ratio or the positive scores were not logged"
    numbers = f"aug/orig loss ratio {ratio:.4g}, positive score {pa:.3g} augmented vs {po:.3g} original"
    near_one = abs(ratio - 1.0) <= RATIO_TOL
    if cos is not None and abs(cos) < UNRELATED_COS:
        return (f"the MAG outputs are unrelated to the features they augment (mean cos(z, MAG(z)) {cos:.3g}, "
                f"|cos| < {UNRELATED_COS:g}): near-random directions rather than views of the same image, so the "
                f"augmented terms are hard only trivially ({numbers})")
    if cos is not None and cos > COLLAPSE_COS and near_one:
        return (f"the MAG outputs are near-copies of the features (mean cos(z, MAG(z)) {cos:.3g} > {COLLAPSE_COS:g}): "
                f"the augmentations are not harder (collapse, paper §3.2; {numbers})")
    if pa < po and ratio > 1.0 + RATIO_TOL:
        return f"the augmented views are harder than the originals ({numbers})"
    if pa > po and ratio < 1.0 - RATIO_TOL:
        return f"the augmented views are easier than the originals: the MAGs work against their purpose ({numbers})"
    if near_one:
        return f"the augmented views are about as hard as the originals (loss ratio within {100 * RATIO_TOL:g}% of 1; {numbers})"
    return f"mixed signals on the augmentations: the loss ratio and the positive scores disagree ({numbers})"


def verdict(summary: dict[str, Any]) -> str:
    """A plain-words judgement of ``summary`` (from :func:`summarise`): one sentence, a clause on the
    meta path and one on what the MAGs output.

    - ``second_order_share`` < :data:`INERT_SHARE` (1%): "the meta (second-order) path is inert".
    - mean |cos(z, MAG(z))| < :data:`UNRELATED_COS` (0.2): "the MAG outputs are unrelated to the
      features" (near-random directions, hard only trivially).
    - mean cos(z, MAG(z)) > :data:`COLLAPSE_COS` (0.95) and ``aug_orig_loss_ratio`` within
      :data:`RATIO_TOL` (1%) of 1: "the MAG outputs are near-copies of the features" (collapse).
    - else ``pos_aug`` < ``pos_orig`` and the ratio > 1 + RATIO_TOL: "the augmented views are harder".
    - else ``pos_aug`` > ``pos_orig`` and the ratio < 1 - RATIO_TOL: "the augmented views are easier".
    - else a ratio within RATIO_TOL of 1: "about as hard as the originals"; otherwise "mixed signals".

    Why these values: see the constants' comments."""
    m = summary["means"]
    text = f"{_share_sentence(m.get('second_order_share'))}; {_augmentation_sentence(m)}."
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------------- table
def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a two-column text table (quantity, mean over the last meta steps)."""
    s, e = summary["steps"], summary["epochs"]
    head = (f"mean over the last {summary['last']} of {summary['meta_steps']} meta steps "
            f"(steps {s[0]}-{s[1]}, epochs {e[0]:.2f}-{e[1]:.2f})")
    m = summary["means"]
    order = ["second_order_share", "grad_norm_direct", "grad_norm_second", "inner_lr",
             *[f"cos_z_mag/{v}" for v in summary["views"]], "cos_z_mag_mean", "pos_orig", "pos_aug",
             "loss_orig", "loss_aug_mean", "aug_orig_loss_ratio", "reg", "mag_loss"]
    keys = [k for k in order if k in m] + sorted(k for k in m if k not in order)
    width = max(len(k) for k in keys)
    return "\n".join([head] + [f"  {k:<{width}}  {_fmt(m[k])}" for k in keys])


# ---------------------------------------------------------------------- plot
def _series(events: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the events that hold a number for ``key``."""
    pts = [(float(e["epoch"]), float(e[key])) for e in events if _is_number(e.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _not_logged(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}: not logged", ha="center", va="center", transform=ax.transAxes, color="grey")


def _lines(ax: Any, events: Sequence[dict[str, Any]], what: str, specs: Sequence[tuple[str, str, str]]) -> None:
    """Plot each (key, label, colour) of ``specs`` that has data; say "``what``: not logged" if none has."""
    drawn = False
    for key, label, colour in specs:
        x, y = _series(events, key)
        if x:
            ax.plot(x, y, color=colour, lw=1, label=label)
            drawn = True
    if not drawn:
        _not_logged(ax, what)


def plot_meta_diagnostics(events: Sequence[dict[str, Any]], out_png: str | os.PathLike,
                          title: str | None = None) -> Path:
    """Draw the meta diagnostics against the epoch into the PNG ``out_png`` (written atomically):
    (a) the second-order share of the MAG gradient norm (log axis when it has positive values),
    (b) cos(z, MAG(z)) per view, (c) the original against the augmented positive score, (d) the
    augmented/original loss ratio with R on a second axis. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not events:
        raise MetaDiagnosticsError("no meta-step events to plot")
    fig = Figure(figsize=(11, 7.5))
    FigureCanvasAgg(fig)
    (a, b), (c, d) = fig.subplots(2, 2, sharex=True)

    x, y = _series(events, "second_order_share")
    if x:
        a.plot(x, y, color="C0", lw=1)
        if any(v > 0 for v in y):
            a.set_yscale("log")
        a.axhline(INERT_SHARE, color="grey", ls="--", lw=1, label=f"inert below {INERT_SHARE:g}")
        a.legend(fontsize=8)
    else:
        _not_logged(a, "second-order share")
    a.set_title("(a) second-order share of the MAG gradient norm", fontsize=10)

    _lines(b, events, "cos(z, MAG(z))", [(f"cos_z_mag/{v}", v, f"C{i}") for i, v in enumerate(views_of(events))])
    b.axhline(1.0, color="black", lw=0.8, label="identity (collapse)")
    b.axhline(COLLAPSE_COS, color="grey", ls="--", lw=1, label=f"near-copy above {COLLAPSE_COS:g}")
    b.legend(fontsize=8)
    b.set_title("(b) cos(z, MAG(z)) per view", fontsize=10)

    _lines(c, events, "positive scores", [("pos_orig", "original", "C0"), ("pos_aug", "MAG-augmented", "C3")])
    if c.lines:
        c.legend(fontsize=8)
    c.set_title("(c) mean positive score (lower = harder)", fontsize=10)

    _lines(d, events, "loss ratio", [("aug_orig_loss_ratio", "aug / orig loss", "C2")])
    d.axhline(1.0, color="black", lw=0.8)
    d.set_ylabel("loss ratio", color="C2")
    xr, yr = _series(events, "reg")
    if xr:
        twin = d.twinx()
        twin.plot(xr, yr, color="C4", lw=1, alpha=0.7)
        twin.set_ylabel("R (unweighted)", color="C4")
    d.set_title("(d) augmented / original loss" + (" and R" if xr else ""), fontsize=10)

    for ax in (a, b, c, d):
        ax.grid(alpha=0.3)
    for ax in (c, d):
        ax.set_xlabel("epoch")
    fig.suptitle(title or f"MetAug meta diagnostics over {len(events)} meta steps")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    out = Path(out_png)
    try:
        atomic_write_bytes(out, buf.getvalue())
    except OSError as e:
        raise MetaDiagnosticsError(f"cannot write the plot {out}: {e}") from None
    return out


# ---------------------------------------------------------------------- the command's work
@dataclass
class MetaReport:
    """What :func:`make_report` read, computed and wrote."""

    log: Path
    summary: dict[str, Any]
    verdict: str
    png: Path
    json_path: Path | None = None
    #: what the reader skipped (unreadable lines), for the command to print
    notes: list[str] = field(default_factory=list)


def _finite(v: Any) -> Any:
    """``v`` with non-finite floats replaced by None (JSON has no NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def make_report(source: str | os.PathLike, out_png: str | os.PathLike | None = None, last: int | None = None,
                json_path: str | os.PathLike | None = None) -> MetaReport:
    """Read the meta events of ``source`` (a run folder or its log.jsonl), summarise the last
    ``last`` of them, judge them, plot them into ``out_png`` (default: ``meta-diagnostics.png``
    beside the log) and, when ``json_path`` is given, write ``{"log", "summary", "verdict"}`` there."""
    log = resolve_log(source)
    events, skipped = _read(log)
    summary = summarise(events, last)
    text = verdict(summary)
    run_dir = log.parent
    png = plot_meta_diagnostics(events, Path(out_png) if out_png is not None else run_dir / PNG_NAME,
                                title=f"MetAug meta diagnostics: {run_dir.name}")
    report = MetaReport(log, summary, text, png, notes=[_skipped_message(log, skipped)] if skipped else [])
    if json_path is not None:
        report.json_path = Path(json_path)
        doc = _finite({"log": str(log), "summary": summary, "verdict": text})
        try:
            atomic_write_text(report.json_path, json.dumps(doc, indent=2) + "\n")
        except OSError as e:
            raise MetaDiagnosticsError(f"cannot write {report.json_path}: {e}") from None
    return report
