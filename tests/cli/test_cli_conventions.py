"""One command-line style for every console script in pyproject.toml (and the checkout's
``python -m metaug_release``), each subcommand included: ``--help`` ends with the exit-code
convention, ``--version``, ``--output/-o`` for what a command writes (old spellings still
parse), one ``--device`` parser, user errors exit 2 with one ``Error:`` line, written paths
printed normalised, and README.md's commands use only options that exist. ``--threads`` and
``-q/--quiet``: tests/cli/test_shared_options.py."""

from __future__ import annotations

import os
import re
import shlex
import signal
import time
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from _cli_helpers import (
    REPO,
    assert_user_error,
    command_id,
    command_targets,
    console_scripts,
    importable,
    script_command,
    walk_commands,
)
from click.testing import CliRunner

from metaug_cli._common import EXIT_CODES, DeviceSpec, _OutputOption
from metaug_features import __version__
from metaug_features.device import check_device_spec, resolve_device
from metaug_features.errors import MetAugError
from metaug_features.feature_files import FeatureSet, write_feature_set

SCRIPTS = importable(console_scripts())
COMMANDS = importable(command_targets())  # the scripts, then python -m metaug_release
_command = script_command


def _all_commands() -> list[tuple[str, list[str], click.Command]]:
    """(command, subcommand path, command object) for every command and every subcommand of a
    group, at any depth (``python -m metaug_release campaign row``)."""
    return walk_commands(COMMANDS)


def _help(cmd: click.Command, sub: list[str]) -> str:
    res = CliRunner().invoke(cmd, [*sub, "--help"])
    assert res.exit_code == 0, res.output
    return res.output


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_every_console_script_is_checked():
    """Each script of pyproject.toml names a module that exists (the release tooling is no
    script: it lives in the checkout, ``python -m metaug_release``)."""
    assert set(SCRIPTS) == set(console_scripts()), "a console script names a module that does not exist"
    assert set(SCRIPTS) == {"metaug-extract", "metaug-eval", "metaug-train", "metaug-export", "metaug-push",
                            "metaug-compact-state", "metaug-train-vae", "metaug-a2-search", "metaug-meta-diagnostics"}
    assert "python -m metaug_release" in COMMANDS


@pytest.mark.parametrize("name,sub,cmd", _all_commands(), ids=command_id)
def test_help_ends_with_the_exit_codes(name, sub, cmd):
    assert _flat(EXIT_CODES) in _flat(_help(_command(name), sub))


@pytest.mark.parametrize("name,sub,cmd", _all_commands(), ids=command_id)
def test_version_on_every_command_and_subcommand(name, sub, cmd):
    """``--version`` prints ``<command> <version>`` (the command the user typed first), also
    after a subcommand, and also where the subcommand has required options."""
    res = CliRunner().invoke(_command(name), [*sub, "--version"])
    assert res.exit_code == 0 and res.output == f"{name} {__version__}\n", res.output
    assert "--version" in _help(_command(name), sub)


@pytest.mark.parametrize("name,sub,cmd", _all_commands(), ids=command_id)
def test_outputs_are_dash_o(name, sub, cmd):
    """An option that names something to write is --output/-o; no other visible name says 'out'."""
    for p in cmd.params:
        if not isinstance(p, click.Option) or p.hidden:
            continue
        writes_folder = isinstance(p.type, click.Path) and not p.type.file_okay and not p.type.exists
        if writes_folder or isinstance(p, _OutputOption):
            assert isinstance(p, _OutputOption), f"{name} {sub}: {p.opts} names an output folder"
            assert sorted(o for o in p.opts if o not in p.legacy) == ["--output", "-o"], p.opts
        else:
            assert not any(o.startswith("--out") for o in p.opts), f"{name} {sub}: {p.opts}"
    text = _help(_command(name), sub)
    assert "--out-dir" not in text and "--plots" not in text


@pytest.mark.parametrize("name,sub,cmd", _all_commands(), ids=command_id)
def test_device_options_share_one_parser(name, sub, cmd):
    for p in cmd.params:
        if "--device" in getattr(p, "opts", []):
            assert isinstance(p.type, DeviceSpec), f"{name} {sub}"
            assert p.default == ("auto" if name != "metaug-train" else None)  # train: the recipe's run.device


# ---------------------------------------------------------------------- the device parser
def test_device_specs():
    for spec in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", " cpu "):
        assert check_device_spec(spec) == spec.strip()
    for bad in ("gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "mps", ""):
        with pytest.raises(MetAugError, match=r"unknown device .*auto \| cpu \| cuda \| cuda:N"):
            check_device_spec(bad)
    with pytest.raises(MetAugError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_device_without_cuda():
    assert resolve_device("auto") == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(MetAugError, match=f"device '{spec}' asked for, but no CUDA GPU is available"):
            resolve_device(spec)


def test_device_index_beyond_the_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(MetAugError, match=r"'cuda:2' asked for, but this machine has 2 CUDA GPU\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_train_config_uses_the_same_parser():
    from metaug_training.config import load_config

    assert load_config("cifar10-cmc", ["run.device=cuda:3"]).run.device == "cuda:3"
    with pytest.raises(MetAugError, match=r"'run.device' must be auto \| cpu \| cuda \| cuda:N, got 'gpu'"):
        load_config("cifar10-cmc", ["run.device=gpu"])


# ---------------------------------------------------------------------- errors exit 2, one line
def _user_errors(tmp: Path) -> dict[str, list[str]]:
    """An invocation per command that fails on something the user can fix."""
    missing = str(tmp / "missing")
    (tmp / "empty").mkdir(exist_ok=True)
    return {
        "metaug-extract": ["--model", str(REPO / "hub" / "cifar10-conv"), "-o", str(tmp / "o"), missing],
        "metaug-eval": ["knn", "--train", missing, "--test", missing],
        "metaug-train": ["--config", "cifar10-cmc", "optim.lrr=0.1"],
        "metaug-export": [str(tmp / "missing.pt"), "-o", str(tmp / "o")],
        "metaug-push": [str(tmp / "empty"), "--repo-id", "o/n", "--dry-run"],
        "metaug-compact-state": [str(tmp / "missing.pt"), "-o", str(tmp / "o")],
        "metaug-train-vae": [missing, "-o", str(tmp / "o")],
        "metaug-a2-search": [missing, missing, "-o", str(tmp / "o.safetensors")],
        "python -m metaug_release": ["campaign", "cards", "--leg", "99", "-o", str(tmp / "o")],
        "metaug-meta-diagnostics": [missing],
    }


@pytest.mark.parametrize("name", COMMANDS)
def test_user_error_exits_2_with_one_line(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # dataset caches land here
    assert_user_error(CliRunner().invoke(_command(name), _user_errors(tmp_path)[name]))
    assert_user_error(CliRunner().invoke(_command(name), ["--no-such-option"]), "--no-such-option")


@pytest.mark.parametrize("name,sub", [("metaug-extract", []), ("metaug-eval", ["paper-probe"]),
                                      ("metaug-train", []), ("metaug-train-vae", []), ("metaug-a2-search", []),
                                      ("python -m metaug_release", ["reproduce"])])
def test_bad_device_is_a_usage_error(name, sub):
    assert_user_error(CliRunner().invoke(_command(name), [*sub, "--device", "gpu"]), "unknown device 'gpu'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_missing_gpu_is_a_user_error(tmp_path):
    res = CliRunner().invoke(_command("metaug-train"), ["--config", "cifar10-cmc", "--device", "cuda:0",
                                                        "-o", str(tmp_path / "run"), f"data.path={tmp_path}"])
    assert_user_error(res, "no CUDA GPU is available")


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_exits_130(monkeypatch, tmp_path, how):
    """Ctrl-C, and SIGTERM while the command runs, exit 130; SIGTERM's handler is put back after."""
    from metaug_training import checkpoint

    def interrupted(*a, **k):
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the command")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(checkpoint, "load_checkpoint", interrupted)
    res = CliRunner().invoke(_command("metaug-compact-state"), [str(tmp_path / "c.pt"), "-o", str(tmp_path / "s")])
    assert res.exit_code == 130 and "interrupted" in res.output, res.output
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------------- old spellings, shortcuts
def test_positional_output_still_works_and_must_agree(tmp_path):
    export = _command("metaug-export")
    ckpt = str(tmp_path / "missing.pt")
    # the old form parses (and reaches the checkpoint check)
    assert_user_error(CliRunner().invoke(export, [ckpt, str(tmp_path / "out")]), "no checkpoint")
    assert_user_error(CliRunner().invoke(export, [ckpt, str(tmp_path / "out"), "-o", str(tmp_path / "x/../out")]),
                       "no checkpoint")
    assert_user_error(CliRunner().invoke(export, [ckpt, str(tmp_path / "a"), "-o", str(tmp_path / "b")]),
                       "two output folders")
    assert_user_error(CliRunner().invoke(export, [ckpt]), "Missing option '--output' / '-o'")
    assert re.search(r"Usage: \S+ \[OPTIONS\] CHECKPOINT\n", CliRunner().invoke(export, ["--help"]).output)


def test_hidden_old_option_names_still_parse(tmp_path):
    ev = _command("metaug-eval")
    missing = str(tmp_path / "missing")
    assert_user_error(CliRunner().invoke(ev, ["plot", "--features", missing, "--out-dir", str(tmp_path / "p")]),
                       missing)
    assert_user_error(CliRunner().invoke(ev, ["all", "--train", missing, "--test", missing, "--plots", missing]),
                       missing)


def test_train_shortcuts_conflict_with_a_different_override(tmp_path):
    res = CliRunner().invoke(_command("metaug-train"), ["--config", "cifar10-cmc", "--device", "cpu", "run.device=cuda"])
    assert_user_error(res, "run.device is set twice")


# ---------------------------------------------------------------------- printed paths
def test_plot_prints_the_files_it_wrote_normalised(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    labels = [c for c in "abc" for _ in range(12)]
    write_feature_set(tmp_path / "feats", FeatureSet(rng.normal(size=(36, 6)).astype(np.float32),
                                                     [f"{c}/{i}.jpg" for i, c in enumerate(labels)], labels))
    monkeypatch.chdir(tmp_path)
    args = ["plot", "--features", "feats", "-o", "x/../plots", "--max-points", "36"]
    res = CliRunner().invoke(_command("metaug-eval"), args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    for name in ("embedding.png", "similarity_hist.png"):
        assert f"wrote {tmp_path / 'plots' / name}\n" in res.output
        assert (tmp_path / "plots" / name).is_file()
    quiet = CliRunner().invoke(_command("metaug-eval"), [*args, "--quiet"])
    assert quiet.exit_code == 0 and "wrote" not in quiet.output


# ---------------------------------------------------------------------- README agrees with --help
def _readme_invocations() -> list[tuple[str, list[str], set[str]]]:
    """(command, subcommand path, --options) of every command line in README.md's code blocks
    and inline code spans."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)
    spans = re.findall(r"(?<!`)`([^`]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    found = []
    for lines in [b.splitlines() for b in blocks] + [[" ".join(s.split())] for s in spans]:
        for line in lines:
            for part in re.split(r"&&|\|", line.split("#", 1)[0]):
                words = shlex.split(part, posix=False) if part.strip() else []
                if words and words[0] in SCRIPTS:
                    cmd, sub = _command(words[0]), []
                    while isinstance(cmd, click.Group) and len(words) > len(sub) + 1 and words[len(sub) + 1] in cmd.commands:
                        cmd = cmd.commands[words[len(sub) + 1]]
                        sub.append(words[len(sub) + 1])
                    found.append((words[0], sub, set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", part))))
    return found


def test_readme_options_exist_in_help():
    seen = set()
    for name, sub, options in _readme_invocations():
        help_text = _help(_command(name), sub)
        for opt in options:
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", help_text), f"README: {name} {' '.join(sub)} {opt}"
        seen.add(name)
    assert seen == set(SCRIPTS)


def test_readme_states_the_exit_codes_of_the_help():
    assert EXIT_CODES in (REPO / "README.md").read_text(encoding="utf-8")
