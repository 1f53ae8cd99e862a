"""Model cards for released folders, rendered from ``metaug_training/model_cards/encoder_card.md``.

Cards are never written by hand: the export step fills the template with the encoder's config,
the training recipe and budget, and the metrics the evaluation measured on the exported folder.
The YAML front matter carries ``library_name``, tags, datasets, licence and a ``model-index``
that ``huggingface_hub.ModelCard`` parses into ``card.data.eval_results`` (one ``EvalResult``
per metric entry), which is what ``python -m metaug_release reproduce`` checks against.

A metric entry (one measured number) is a dict::

    {"task": "image-classification",          # model-index task type
     "dataset": "CIFAR-10 (JPEG q75)",        # dataset display name
     "metric": "accuracy",                    # metric type
     "name": "weighted k-NN k=200 T=0.07 (conv)",
     "value": 55.1,
     # optional:
     "dataset_type": "cifar10", "split": "test", "task_name": "...",
     "args": {"protocol": "knn", "k": 200, "temperature": 0.07, "layer": "conv"}}

``args`` is stored as the metric's ``args`` in the model-index; the reproduce script reads the
layer, k and T from it.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from metaug_features.config import EncoderConfig
from metaug_features.errors import ConfigError, MetAugError
from metaug_features.model import MetAugEncoder

try:  # the `train` extra: only rendering a card needs YAML, the library never does
    import yaml
except ImportError:  # tests/test_dependencies.py runs a render with the import blocked
    yaml = None

#: What to run when PyYAML is missing (the error names it).
TRAIN_EXTRA_HINT = "pip install 'metaug-features[train]'"


def _template_path() -> Path:
    """Where ``encoder_card.md`` is: ``metaug_training/model_cards/`` beside this module, both in a
    source checkout and in an installed wheel (package data). The library never reads it; only this
    renderer (training / release tooling) does."""
    return Path(__file__).resolve().parent / "model_cards" / "encoder_card.md"


TEMPLATE_PATH = _template_path()

LIBRARY_NAME = "metaug-features"
DEFAULT_DATASET_TYPE = "cifar10"
#: Hub dataset id listed under ``datasets:`` in the metadata.
HUB_DATASETS = ["uoft-cs/cifar10"]
#: Tags every card carries; :data:`METHOD_TAGS` adds the method's own first.
TAGS = ["self-supervised-learning", "contrastive-learning", "feature-extraction",
        "image-feature-extraction", "cifar10"]
#: The tags that name the training method, by the folder's provenance ``method``. An OUCL-trained
#: folder is tagged "metaug-only-oucl" (the MetAug paper's Table 1 name, "MetAug (only OUCL)") and
#: "oucl", never plain "metaug": a tag must not claim meta feature augmentation the weights never had.
METHOD_TAGS = {
    "metaug": ["metaug", "meta-feature-augmentation"],
    "oucl": ["metaug-only-oucl", "oucl"],
    "cmc": ["cmc"],
}
_REQUIRED_METRIC_KEYS = ("task", "dataset", "metric", "name", "value")
#: How the card's first sentence names the training method, by the ``method`` of the folder's
#: provenance (the run's config): a card says what trained the weights, never more.
METHOD_TEXT = {
    "metaug": "**MetAug** (contrastive learning with meta\nfeature augmentation, Li et al., ICML 2022)",
    "oucl": "**MetAug (only OUCL)** (the MetAug paper's Table 1 name for its ablation: the unified\n"
            "contrastive loss OUCL of Li et al., ICML 2022, on its own: no meta feature augmentation, no\n"
            "MetAug meta step)",
    "cmc": "**CMC** (Contrastive Multiview Coding, Tian et al., 2020; the baseline of the MetAug paper)",
}
_LICENSE_TEXT = {
    "mit": "MIT (the weights and the `metaug-features` code). CIFAR-10 is distributed by its "
           "authors without an explicit licence; check its terms before commercial use.",
}


def load_template(path: str | Path | None = None) -> string.Template:
    """The card template (``$name`` / ``${name}`` placeholders, :class:`string.Template`)."""
    p = Path(path) if path is not None else TEMPLATE_PATH
    if not p.is_file():
        raise ConfigError(f"model-card template not found at {p}; run from a source checkout of "
                          f"metaug-features or pass template=PATH")
    return string.Template(p.read_text(encoding="utf-8"))


def check_metrics(metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate metric entries (keys, finite numeric value); returns plain dict copies."""
    if not metrics:
        raise ConfigError("a release card needs at least one measured metric (metrics=[] given)")
    out = []
    for i, m in enumerate(metrics):
        missing = [k for k in _REQUIRED_METRIC_KEYS if k not in m]
        if missing:
            raise ConfigError(f"metric entry {i} lacks {missing}; each needs {list(_REQUIRED_METRIC_KEYS)}")
        value = m["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigError(f"metric entry {i} ({m['name']!r}) has a non-numeric value {value!r}")
        out.append(dict(m))
    return out


def model_index(model_name: str, metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``model-index`` YAML structure: one result per (task, dataset, split), metrics in the
    order given (the Hub's model-index spec, as read by ``huggingface_hub.ModelCard``)."""
    results: dict[tuple, dict[str, Any]] = {}
    for m in check_metrics(metrics):
        key = (m["task"], m.get("task_name"), m["dataset"], m.get("dataset_type", DEFAULT_DATASET_TYPE),
               m.get("split", "test"))
        if key not in results:
            task = {"type": m["task"]}
            if m.get("task_name"):
                task["name"] = m["task_name"]
            results[key] = {
                "task": task,
                "dataset": {"type": key[3], "name": m["dataset"], "split": key[4]},
                "metrics": [],
            }
        entry: dict[str, Any] = {"type": m["metric"], "value": float(m["value"]), "name": m["name"]}
        if m.get("args"):
            entry["args"] = dict(m["args"])
        results[key]["metrics"].append(entry)
    return [{"name": model_name, "results": list(results.values())}]


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (columns: the given ones, or the first row's keys)."""
    cols = list(columns) if columns else list(rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v).replace("|", "\\|") if v is not None else ""

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _kv_list(d: Mapping[str, Any]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in d.items()) if d else "- (not recorded)"


def without_notes(value: Any) -> Any:
    """``value`` with every mapping key that starts with "_" dropped, at any depth: recipes keep
    their notes for readers there (``_comment``, ``_plan``), and the training config ignores them
    (``metaug_training/config/``); a card shows the settings only."""
    if isinstance(value, Mapping):
        return {k: without_notes(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [without_notes(v) for v in value]
    return value


def _recipe_text(recipe: Mapping[str, Any] | str) -> str:
    if isinstance(recipe, str):
        if (Path(__file__).resolve().parent / "recipes" / f"{recipe}.json").is_file():
            return f"Recipe: `{recipe}` (metaug_training/recipes/{recipe}.json; `metaug-train --config {recipe}`)."
        return f"Recipe: {recipe}."
    return ("Recipe (the training configuration, as run):\n\n```json\n"
            + json.dumps(without_notes(recipe), indent=2, sort_keys=True) + "\n```")


def builtin_alias(repo_id: str | None) -> tuple[str, str, str] | None:
    """``(alias, repo_id, revision)`` of the built-in alias (``metaug_features.hub.MODEL_ALIASES``,
    read at render time) that points to ``repo_id``, or None."""
    from metaug_features.hub import MODEL_ALIASES

    for alias, (rid, revision) in MODEL_ALIASES.items():
        if repo_id is not None and rid == repo_id:
            return alias, rid, revision
    return None


#: The template's Hub-status alternatives: the first block for a model a built-in alias names
#: (shipped in the package), the second for any other folder.
_HUB_STATUS = re.compile(r"<!-- hub-status: built-in -->\n(?P<builtin>.*?)<!-- hub-status: other -->\n"
                         r"(?P<other>.*?)<!-- hub-status: end -->\n", re.DOTALL)


def method_text(config: EncoderConfig) -> str:
    """The card's name of the method that trained ``config``'s weights (its provenance's ``method``)."""
    method = (config.provenance or {}).get("method")
    if method is None:
        return "a contrastive method of the MetAug paper's toolkit (the folder does not record which)"
    return METHOD_TEXT.get(method, f"**{method}**")


def method_tags(config: EncoderConfig) -> list[str]:
    """The card's tags: the method's own (:data:`METHOD_TAGS`, none when the folder does not record
    its method) followed by :data:`TAGS`."""
    return [*METHOD_TAGS.get((config.provenance or {}).get("method"), []), *TAGS]


#: The MetAug paper's training length in epochs (the official code's schedule, docs/METHODS.md
#: section 6): what a card's training length is compared with.
PAPER_EPOCHS = 300
#: A schedule at least this share of the paper's is "close to" it; a shorter one is called shorter.
CLOSE_TO_PAPER = 0.9


def training_length_text(config: EncoderConfig) -> str:
    """The card's limitation on training length, from the folder's own provenance (``epochs``)
    against :data:`PAPER_EPOCHS`: shorter training, or a schedule close to the paper's on a smaller
    network. Never a fixed sentence: a 284-epoch model is not "far fewer epochs than the paper"."""
    epochs = (config.provenance or {}).get("epochs")
    if epochs is None:
        return (f"**Training length not recorded** in the folder's provenance; the paper trains {PAPER_EPOCHS} "
                f"epochs (docs/METHODS.md section 6).")
    epochs = float(epochs)
    if epochs < CLOSE_TO_PAPER * PAPER_EPOCHS:
        return (f"**Shorter training than the paper**: {epochs:g} epochs against the {PAPER_EPOCHS} of its schedule "
                f"(docs/METHODS.md section 6), so features may be weaker than after the full schedule.")
    smaller = (f", but on a smaller network than the paper's `alexnet224`: `{config.architecture}` width "
               f"{config.width:g} on {config.input_size}-pixel inputs" if config.architecture != "alexnet224" else "")
    return (f"**Training length close to the paper's**: {epochs:g} epochs against the {PAPER_EPOCHS} of its "
            f"schedule (docs/METHODS.md section 6){smaller}.")


def sections_text(sections: Sequence[Mapping[str, str]] | None) -> str:
    """Extra card sections (``[{"title": ..., "body": ...}]``, e.g. what the meta diagnostics say)
    as Markdown, each starting with a blank line; "" for none, so a card without them renders as before."""
    out = []
    for i, sec in enumerate(sections or []):
        if set(sec) != {"title", "body"} or not all(isinstance(sec[k], str) and sec[k].strip() for k in sec):
            raise ConfigError(f"card section {i} must be {{'title': str, 'body': str}} with text in both, got {sorted(sec)}")
        out.append(f"\n\n## {sec['title'].strip()}\n\n{sec['body'].strip()}")
    return "".join(out)


def _select_hub_status(text: str, builtin: bool) -> str:
    """Keep the template's Hub-status block that applies (a template without one is unchanged)."""
    return _HUB_STATUS.sub(lambda m: m.group("builtin" if builtin else "other"), text, count=1)


def render_card(
    config: EncoderConfig,
    metrics: Sequence[Mapping[str, Any]],
    *,
    recipe: Mapping[str, Any] | str,
    budget: Mapping[str, Any],
    hardware: str,
    comparison: Sequence[Mapping[str, Any]] | None = None,
    repo_id: str | None = None,
    license: str = "mit",
    encoder: MetAugEncoder | None = None,
    template: str | Path | None = None,
    notes: Sequence[str] | None = None,
    comparison_title: str = "Comparison with CMC at equal budget",
    sections: Sequence[Mapping[str, str]] | None = None,
) -> str:
    """Render the release model card of a folder whose config is ``config``.

    Args:
        config: the exported encoder's config (provenance included).
        metrics: measured metric entries (module docstring); go to the model-index and a table.
        recipe: a recipe name or the full training config dict.
        budget: e.g. {"epochs": 30, "steps": 11700, "wall_clock_hours": 7.5}.
        hardware: free text, e.g. "1x NVIDIA H100 80GB, 16 CPU cores".
        comparison: rows (dicts with the same keys) comparing with CMC at equal budget; None
            writes "not measured".
        repo_id: the Hub repo the card is for (used as model name and in the usage lines).
        license: SPDX-like id for the metadata (default "mit").
        encoder: the encoder itself (saves rebuilding it to list the layers' dimensions).
        template: another template file (default ``metaug_training/model_cards/encoder_card.md``).
        notes: release-specific limitations, each a sentence derived from the measurements
            (e.g. "below the random-init floor"); added to the card's Limitations list.
        sections: further sections ``[{"title": ..., "body": ...}]`` rendered after the comparison
            (:func:`sections_text`), each body measured elsewhere (e.g. the meta diagnostics).

    When ``repo_id`` is the repo of a built-in alias (``metaug_features.hub.MODEL_ALIASES``, read
    now), the usage lines load the model by that alias and the card's "Hub status" names the
    alias, its repo id and pinned revision; otherwise they use ``repo_id`` (or a folder path).
    Recipe keys starting with "_" (notes such as ``_comment``, ``_plan``) are not rendered.
        comparison_title: the heading of the comparison section.
    Returns:
        README.md text: YAML front matter + Markdown.
    """
    if yaml is None:
        raise MetAugError(f"rendering a model card needs PyYAML, a training dependency: {TRAIN_EXTRA_HINT}")
    metrics = check_metrics(metrics)
    alias = builtin_alias(repo_id)
    enc = encoder if encoder is not None else MetAugEncoder(config)
    default_layer = config.default_layer or enc.config.default_layer or enc.layers[0]
    name = repo_id.split("/")[-1] if repo_id else f"metaug-{config.architecture}"
    metadata = {
        "library_name": LIBRARY_NAME,
        "license": license,
        "tags": method_tags(config),
        "datasets": list(HUB_DATASETS),
        "pipeline_tag": "image-feature-extraction",
        "model-index": model_index(name, metrics),
    }
    values = {
        "metadata": yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True),
        "title": name,
        "method_text": method_text(config),
        "architecture": config.architecture,
        "width": config.width,
        "views": ", ".join(config.views),
        "default_layer": default_layer,
        "default_dim": enc.feature_dim(default_layer),
        "layers": ", ".join(f"`{layer}` ({enc.feature_dim(layer)})" for layer in enc.layers),
        # A built-in model loads by its alias (the copy shipped in the package, offline).
        "model_ref": alias[0] if alias else (repo_id or "path/to/this/folder"),
        "alias": alias[0] if alias else "",
        "alias_repo_id": alias[1] if alias else "",
        "alias_revision": alias[2] if alias else "",
        "hub_repo_id": repo_id or "ORG/NAME",
        "resize_size": enc.preprocess.resize_size if hasattr(enc.preprocess, "resize_size") else config.resize_size,
        "input_size": enc.preprocess.input_size if hasattr(enc.preprocess, "input_size") else config.input_size,
        "recipe": _recipe_text(recipe),
        "budget": _kv_list(budget),
        "hardware": hardware,
        "provenance": _kv_list(dict(config.provenance or {})),
        "metrics_table": markdown_table(metrics, ["name", "dataset", "split", "metric", "value"]
                                if any("split" in m for m in metrics) else ["name", "dataset", "metric", "value"]),
        "comparison_title": comparison_title,
        "comparison": markdown_table(comparison) if comparison else "Not measured for this release.",
        "sections": sections_text(sections),
        "license_text": _LICENSE_TEXT.get(license, license),
        "notes": "".join(f"\n- {n}" for n in (notes or [])),
        "training_length": training_length_text(config),
    }
    text = _select_hub_status(load_template(template).template, builtin=alias is not None)
    return string.Template(text).substitute(values)


def card_renderer_from_json(path: str | Path) -> Callable[[EncoderConfig, MetAugEncoder | None], str]:
    """Read a card-metrics JSON (as written by the evaluation / release scripts) and return a
    function ``(config, encoder) -> card text`` for the export step.

    The JSON holds ``metrics`` (required) and optionally ``recipe``, ``budget``, ``hardware``,
    ``comparison``, ``comparison_title``, ``repo_id``, ``license``, ``notes``, ``sections`` — the keyword arguments of
    :func:`render_card`.
    """
    p = Path(path)
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read card metrics {p}: {e}") from None
    if not isinstance(spec, dict) or "metrics" not in spec:
        raise ConfigError(f"{p} must be a JSON object with a 'metrics' list (and optional recipe, budget, "
                          f"hardware, comparison, repo_id, license)")
    unknown = sorted(set(spec) - {"metrics", "recipe", "budget", "hardware", "comparison", "comparison_title", "repo_id",
                             "license", "notes", "sections"})
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}")
    metrics = check_metrics(spec["metrics"])

    def render(config: EncoderConfig, encoder: MetAugEncoder | None = None) -> str:
        prov = dict(config.provenance or {})
        return render_card(
            config, metrics,
            recipe=spec.get("recipe", f"method `{prov.get('method', 'unknown')}` (full config not recorded)"),
            budget=spec.get("budget", {k: prov[k] for k in ("epochs", "steps", "batch_size") if k in prov}),
            hardware=spec.get("hardware", "not recorded"),
            comparison=spec.get("comparison"),
            repo_id=spec.get("repo_id"),
            license=spec.get("license", "mit"),
            encoder=encoder,
            notes=spec.get("notes"),
            comparison_title=spec.get("comparison_title", "Comparison with CMC at equal budget"),
            sections=spec.get("sections"),
        )

    return render
