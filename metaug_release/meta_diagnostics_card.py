"""The model-card section "What the meta diagnostics say about the MAGs", rendered from a meta
diagnostics record of a MetAug model's final weights (``benchmarks/meta_diagnostics/NAME.json``,
written by ``python benchmarks/meta_diagnostics.py RUN --json ...`` from the run's committed
state; :attr:`.campaign.Campaign.diagnostics` names the file of each campaign).

The record is a JSON object with (at least) these fields; every number on the section comes
from it, none is typed in here::

    command, date_utc, machine, verdict                 str: how, when, where it was measured; the reading
    weights_sha256                                      str: the sha256 of the weights measured
    meta_steps                                          int: meta steps the numbers average over
    inner_lr, delta, alpha                              the settings the meta steps ran with
    second_order_share                                  ||second-order|| / (||direct|| + ||second-order||)
                                                        of the MAG gradient, in [0, 1]
    cos_z_mag                                           {view: mean cosine between z and MAG(z)}
    pos_orig, pos_aug                                   mean positive score (cosine) of the original
                                                        and of the MAG-augmented anchors
    aug_orig_loss_ratio                                 mean augmented-term OUCL loss / original OUCL loss
    reg                                                 the margin regulariser R
    encoder_step_relative_change                        ||MetAug encoder step - OUCL step|| / ||OUCL step||

Further fields are allowed and not rendered. A record of other weights than the card's (its
``weights_sha256`` is not one of the files the weights are kept in) is refused: a card must never
quote another model's diagnostics. ``python -m metaug_release campaign cards --campaign 1 --leg 4`` puts
the section into the card files and ``python -m metaug_release campaign recard --campaign 1`` onto the cards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metaug_features.errors import MetAugError
from metaug_training.model_card import markdown_table

TITLE = "What the meta diagnostics say about the MAGs"
_STR = ("command", "date_utc", "machine", "weights_sha256", "verdict")
_FLOAT = ("inner_lr", "delta", "alpha", "second_order_share", "pos_orig", "pos_aug", "aug_orig_loss_ratio", "reg",
          "encoder_step_relative_change")
#: Fields whose value is a cosine or a share, so that a number outside the range is a broken record.
_RANGES = {"second_order_share": (0.0, 1.0), "pos_orig": (-1.0, 1.0), "pos_aug": (-1.0, 1.0),
           "aug_orig_loss_ratio": (0.0, math.inf), "encoder_step_relative_change": (0.0, math.inf)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_diagnostics(path: str | Path) -> dict[str, Any]:
    """Read and check a meta-diagnostics record (module docstring); an error names the first bad
    field and the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MetAugError(f"cannot read meta diagnostics {path}: {e}") from None
    if not isinstance(doc, dict):
        raise MetAugError(f"{path}: a meta-diagnostics record is a JSON object")
    missing = [k for k in (*_STR, "meta_steps", *_FLOAT, "cos_z_mag") if k not in doc]
    if missing:
        raise MetAugError(f"{path}: missing field(s) {missing}")
    for key in _STR:
        if not isinstance(doc[key], str) or not doc[key].strip():
            raise MetAugError(f"{path}: {key!r} must be a non-empty string")
    steps = doc["meta_steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise MetAugError(f"{path}: 'meta_steps' must be a positive integer, got {steps!r}")
    for key in _FLOAT:
        lo, hi = _RANGES.get(key, (-math.inf, math.inf))
        if not _number(doc[key]) or not lo <= doc[key] <= hi:
            raise MetAugError(f"{path}: {key!r} must be a finite number in [{lo}, {hi}], got {doc[key]!r}")
    cos = doc["cos_z_mag"]
    if not isinstance(cos, dict) or not cos or not all(_number(v) and -1.0 <= v <= 1.0 for v in cos.values()):
        raise MetAugError(f"{path}: 'cos_z_mag' must map each view to a cosine in [-1, 1], got {cos!r}")
    return doc


def _g(value: float) -> str:
    """A measured number as the record has it, to 4 significant digits."""
    return f"{value:.4g}"


def diagnostics_section(diag: Mapping[str, Any], weights: Mapping[str, str], record: str,
                        recipe_metaug: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The card section (``{"title", "body"}``, :func:`metaug_training.model_card.sections_text`)
    of a checked record ``diag`` (:func:`load_diagnostics`).

    weights: sha256 -> how the card names that file (the files the card's weights are kept in);
    ``diag["weights_sha256"]`` must be one of them. record: the record's path as the card quotes
    it. recipe_metaug: the training recipe's ``metaug`` section; when the record ran with other
    inner lr, delta or alpha, the section says so beside the recipe's values."""
    sha = diag["weights_sha256"]
    if sha not in weights:
        raise MetAugError(f"{record}: the diagnostics were measured on weights with sha256 {sha}, none of this "
                          f"model's files ({', '.join(sorted(weights.values()))}); a card quotes only its own weights")
    settings = f"inner lr {_g(diag['inner_lr'])}, delta {_g(diag['delta'])}, alpha {_g(diag['alpha'])}"
    if recipe_metaug is not None:
        trained = {k: recipe_metaug.get(k) for k in ("inner_lr", "delta", "alpha")}
        if any(trained[k] is None or not math.isclose(diag[k], trained[k], rel_tol=1e-9) for k in trained):
            settings += (f" (not the training recipe's: it trained with inner lr {trained['inner_lr']}, delta "
                         f"{trained['delta']}, alpha {trained['alpha']})")
        else:
            settings += " (the training recipe's)"
    views = list(diag["cos_z_mag"])
    table = markdown_table([
        {"diagnostic": "second-order share of the MAG gradient, ‖second-order‖ / (‖direct‖ + ‖second-order‖)",
         "value": _g(diag["second_order_share"])},
        {"diagnostic": "mean cosine between z and MAG(z), " + " / ".join(f"`{v}`" for v in views)
                       + " (1: MAG(z) points along z)",
         "value": " / ".join(_g(diag["cos_z_mag"][v]) for v in views)},
        {"diagnostic": "mean positive score (cosine), original / MAG-augmented anchors",
         "value": f"{_g(diag['pos_orig'])} / {_g(diag['pos_aug'])}"},
        {"diagnostic": "augmented-term OUCL loss / original OUCL loss", "value": _g(diag["aug_orig_loss_ratio"])},
        {"diagnostic": "margin regulariser R", "value": _g(diag["reg"])},
        {"diagnostic": "MetAug encoder step against the OUCL step, ‖difference‖ / ‖OUCL step‖",
         "value": _g(diag["encoder_step_relative_change"])},
    ])
    body = "\n".join([
        f"Measured on {weights[sha]}, sha256 `{sha}`, by `{diag['command']}` ({diag['date_utc']}; "
        f"{diag['machine']}): means over {diag['meta_steps']} meta steps with {settings}. Record: "
        f"`{record}`; the quantities are defined in docs/METHODS.md, \"The official code against the "
        f"paper\".",
        "",
        table,
        "",
        f"**Verdict** (the record's): {diag['verdict'].strip()}",
    ])
    return {"title": TITLE, "body": body}
