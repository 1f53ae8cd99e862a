"""One source for every default: each option of every console script (and of each subcommand)
has the default of its library counterpart, or is declared here as the command line's own.

``MIRRORS`` says, per command, which library objects its options mirror: settings dataclasses
(their fields), functions (their keyword defaults) or named constants. An option mirrors the
field or parameter of its own name (``RENAMED`` maps the others); ``CLI_ONLY`` lists, with the
reason, the options that have no library counterpart. An option in neither fails the test, so a
new option has to say which it is, and a default written twice that drifts apart fails too.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import click
import pytest
from _cli_helpers import command_id, console_scripts, importable, walk_commands

from metaug_features.evaluation import ClusterConfig, KNNConfig, PlotConfig, ProbeConfig
from metaug_features.evaluation.folders import paper_probe_folders
from metaug_features.evaluation.paper_probe import PaperProbeConfig
from metaug_features.extract import extract_features
from metaug_training.a2_search import build_latent_cache
from metaug_training.compact_state import save_compact_state
from metaug_training.config import A2_FEATURE_MODEL
from metaug_training.data import load_image_array
from metaug_training.export import export_checkpoint
from metaug_training.meta_diagnostics_report import make_report
from metaug_training.publish import push_folder
from metaug_training.trainer import train
from metaug_training.vae import VAEConfig
from metaug_training.vae_train import train_vae

SCRIPTS = importable(console_scripts())  # tests/cli/test_cli_conventions.py fails on a dangling one

#: (script, subcommand...) -> what its options mirror.
MIRRORS: dict[tuple[str, ...], list[Any]] = {
    ("metaug-extract",): [extract_features],
    ("metaug-eval",): [],
    ("metaug-eval", "knn"): [KNNConfig],
    ("metaug-eval", "probe"): [ProbeConfig],
    ("metaug-eval", "cluster"): [ClusterConfig],
    ("metaug-eval", "plot"): [PlotConfig],
    ("metaug-eval", "all"): [KNNConfig, ProbeConfig, ClusterConfig, PlotConfig],
    ("metaug-eval", "paper-probe"): [PaperProbeConfig, paper_probe_folders],
    ("metaug-train",): [train],
    ("metaug-export",): [export_checkpoint],
    ("metaug-push",): [push_folder],
    ("metaug-compact-state",): [save_compact_state],
    ("metaug-train-vae",): [train_vae, VAEConfig],
    ("metaug-a2-search",): [build_latent_cache, load_image_array, {"model": A2_FEATURE_MODEL}],
    ("metaug-meta-diagnostics",): [make_report],
}

#: option name -> the library's name for it, where the two differ.
RENAMED: dict[tuple[str, ...], dict[str, str]] = {
    ("metaug-eval", "cluster"): {"cluster_seed": "seed"},
    ("metaug-eval", "all"): {"cluster_seed": "seed"},
}

#: Options without a library default, and why.
CLI_ONLY: dict[str, str] = {
    "threads": "the shared --threads option (metaug_cli/_common.py): None = each library step's own default",
    "quiet": "the shared -q/--quiet option: the library takes progress= or log= instead",
    "output": "where the command writes: the library takes it as a required argument",
    "device": "the command-line convention: auto (README 'Command-line conventions'); the library's "
              "functions default to cpu like load_encoder",
    "report": "the JSON report file of metaug-eval",
    "train_dir": "a required input folder", "test_dir": "a required input folder",
    "features_dir": "a required input folder", "second_dir": "an optional input folder",
    "train_images": "a required input folder", "test_images": "a required input folder",
    "model_ref": "the model to load: a required input",
    "config_path": "the recipe: a required input",
    "merge": "metaug-extract's other mode (merge_shards)",
    "card_metrics": "a JSON file the command turns into the library's card= renderer",
    "repo_id": "a required input", "dry_run": "metaug-push's other mode (validate_model_folder)",
}

#: metaug-train's options that set a config key are checked against the key by
#: tests/training/test_train_config_cli.py (their library default is the config dataclass field).
CONFIG_SHORTCUTS = {("metaug-train",): {"output", "device", "quiet"}}


def _library_defaults(source: Any) -> dict[str, Any]:
    """{name: default} of a settings dataclass, a function's keyword arguments, or a dict of constants."""
    if isinstance(source, dict):
        return dict(source)
    if dataclasses.is_dataclass(source):
        out = {}
        for f in dataclasses.fields(source):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out
    return {n: p.default for n, p in inspect.signature(source).parameters.items() if p.default is not p.empty}


def _cli_default(cmd: click.Command, param: click.Option) -> Any:
    """The value the command's function receives when the option is not given (after its type
    and callback: ``"200,20"`` -> ``(200, 20)``)."""
    ctx = click.Context(cmd)
    value = param.get_default(ctx)
    if value is None:
        return None
    return param.process_value(ctx, value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


COMMANDS = walk_commands(SCRIPTS)


def test_every_command_declares_what_it_mirrors():
    walked = {(name, *sub) for name, sub, _ in COMMANDS}
    assert walked == set(MIRRORS), f"declare these in MIRRORS: {walked - set(MIRRORS)}; stale: {set(MIRRORS) - walked}"


@pytest.mark.parametrize("name,sub,cmd", COMMANDS, ids=command_id)
def test_option_defaults_are_the_library_defaults(name, sub, cmd):
    key = (name, *sub)
    library: dict[str, list[tuple[str, Any]]] = {}
    for source in MIRRORS[key]:
        for field, value in _library_defaults(source).items():
            library.setdefault(field, []).append((getattr(source, "__name__", "constants"), value))
    renamed = RENAMED.get(key, {})
    undeclared = []
    for p in cmd.params:
        if not isinstance(p, click.Option) or not p.expose_value:
            continue  # --version, --help
        lib_name = renamed.get(p.name, p.name)
        if p.name in CLI_ONLY or p.name in CONFIG_SHORTCUTS.get(key, set()):
            continue  # declared: the command line's own (a library parameter of that name aside)
        if lib_name in library:
            cli = _cli_default(cmd, p)
            for where, value in library[lib_name]:
                assert _same(cli, value), f"{' '.join(key)} {p.opts[0]}: default {cli!r}, but {where}.{lib_name} = {value!r}"
        else:
            undeclared.append(p.opts[0])
    assert not undeclared, (f"{' '.join(key)}: options {undeclared} mirror no library default; name the dataclass "
                            "or function in MIRRORS (or RENAMED), or list them in CLI_ONLY with the reason")


def test_the_check_sees_a_drifted_default():
    """The comparison itself: a default written twice that drifted apart is caught, a tuple
    default given as comma-separated text is compared as the tuple, and 0 is not False."""
    from metaug_cli.eval import knn

    ks = next(p for p in knn.params if p.name == "ks")
    assert _cli_default(knn, ks) == (200, 20) and _same(_cli_default(knn, ks), KNNConfig.ks)
    assert not _same(_cli_default(knn, ks), (200,))
    assert not _same(0, False) and not _same(None, 0) and _same(1, 1.0)
    drifted = click.Command("x", params=[click.Option(["--temperature"], default=0.1, type=float)])
    assert not _same(_cli_default(drifted, drifted.params[0]), KNNConfig.temperature)


def test_knn_defaults_are_written_once():
    """k = 200 / 20 and T = 0.07 live in KNNConfig: the library function and the CLI read them there."""
    from metaug_features.evaluation import knn_evaluate

    params = inspect.signature(knn_evaluate).parameters
    assert params["ks"].default is KNNConfig.ks and params["temperature"].default is KNNConfig.temperature
    assert KNNConfig.ks == (200, 20) and KNNConfig.temperature == 0.07
