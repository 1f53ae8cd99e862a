"""``--threads`` and ``-q/--quiet``: one definition (metaug_cli/_common.py), the same behaviour on
every command. On the command that does the work; a group accepts each one that a subcommand
takes, before the subcommand, as that subcommand's default (a value given to the subcommand
wins). Every command that prints progress or info lines takes ``-q/--quiet``."""

from __future__ import annotations

import click
import numpy as np
import pytest
from _cli_helpers import (
    command_id,
    command_targets,
    importable,
    script_command,
    walk_commands,
)
from click.testing import CliRunner

from metaug_cli._common import SharedOption, group, quiet_option, threads_option
from metaug_features.feature_files import FeatureSet, write_feature_set

COMMANDS = walk_commands(importable(command_targets()))

#: Leaf commands that print no progress and no info line, only their result: no -q/--quiet.
RESULT_ONLY = {
    ("metaug-export",): "prints the one 'exported A -> B' line",
    ("metaug-push",): "prints what it pushed (or, with --dry-run, the check)",
    ("metaug-compact-state",): "prints the one summary line",
}


def _opts(cmd: click.Command, ctx: click.Context | None = None) -> dict[str, click.Parameter]:
    params = cmd.get_params(ctx or click.Context(cmd))
    return {o: p for p in params for o in getattr(p, "opts", [])}


@pytest.mark.parametrize("name,sub,cmd", COMMANDS, ids=command_id)
def test_threads_and_quiet_are_the_shared_options(name, sub, cmd):
    """Wherever --threads or -q/--quiet appears, it is the one option of metaug_cli/_common.py."""
    for p in cmd.params:
        opts = set(getattr(p, "opts", []))
        if opts & {"--threads", "--quiet", "-q"}:
            assert isinstance(p, SharedOption), f"{name} {' '.join(sub)}: {sorted(opts)} is not threads_option/quiet_option"
            assert opts in ({"--threads"}, {"--quiet", "-q"}), opts


@pytest.mark.parametrize("name,sub,cmd", [c for c in COMMANDS if isinstance(c[2], click.Group)], ids=command_id)
def test_groups_accept_what_their_subcommands_take(name, sub, cmd):
    """A group offers --threads / -q exactly when one of its subcommands (at any depth) does."""
    offered = {o for o in _opts(cmd) if o in {"--threads", "--quiet", "-q"}}
    below = {o for c in _subtree(cmd) for p in c.params if isinstance(p, SharedOption) for o in p.opts}
    assert offered == below, f"{name} {' '.join(sub)}"


def _subtree(cmd: click.Command) -> list[click.Command]:
    out = []
    for c in getattr(cmd, "commands", {}).values():
        out += [c, *_subtree(c)]
    return out


@pytest.mark.parametrize("name,sub,cmd", [c for c in COMMANDS if not isinstance(c[2], click.Group)], ids=command_id)
def test_every_command_that_prints_progress_takes_quiet(name, sub, cmd):
    has_quiet = "--quiet" in _opts(cmd) and "-q" in _opts(cmd)
    if (name, *sub) in RESULT_ONLY:
        assert not has_quiet, f"{name}: takes -q now; remove it from RESULT_ONLY"
    elif name.startswith("metaug-"):  # the release tooling (python -m metaug_release) keeps its own list
        assert has_quiet, f"{name} {' '.join(sub)}: add quiet_option() (or list it in RESULT_ONLY, with why)"


# ---------------------------------------------------------------------- the mechanism, on a toy group
@group("toy")
def toy() -> None:
    """A group like metaug-eval."""


@toy.command()
@threads_option("threads", default=1)
@quiet_option()
def leaf(threads, quiet):
    click.echo(f"threads={threads} quiet={quiet}")


@toy.group()
def nested() -> None:
    """A sub-group (python -m metaug_release campaign ...)."""


@nested.command()
@threads_option("threads")
def deep(threads):
    click.echo(f"threads={threads}")


@pytest.mark.parametrize("args,printed", [
    (["leaf"], "threads=1 quiet=False"),                                  # the subcommand's default
    (["--threads", "3", "leaf"], "threads=3 quiet=False"),                # the group's value
    (["leaf", "--threads", "3"], "threads=3 quiet=False"),                # the subcommand's value
    (["--threads", "2", "leaf", "--threads", "3"], "threads=3 quiet=False"),  # the subcommand's wins
    (["-q", "leaf"], "threads=1 quiet=True"),
    (["leaf", "--quiet"], "threads=1 quiet=True"),
    (["--threads", "4", "nested", "deep"], "threads=4"),                  # through a sub-group
    (["nested", "--threads", "4", "deep"], "threads=4"),
    (["nested", "deep"], "threads=None"),
])
def test_group_value_is_the_subcommands_default(args, printed):
    res = CliRunner().invoke(toy, args)
    assert res.exit_code == 0 and res.output == printed + "\n", res.output


def test_bad_threads_is_a_usage_error_at_both_levels():
    for args in (["--threads", "0", "leaf"], ["leaf", "--threads", "0"]):
        res = CliRunner().invoke(toy, args)
        assert res.exit_code == 2 and "--threads" in res.output, res.output


# ---------------------------------------------------------------------- metaug-eval, end to end
@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    rng = np.random.default_rng(0)
    labels = [c for c in "abc" for _ in range(12)]
    root = tmp_path_factory.mktemp("shared")
    for split in ("train", "test"):
        write_feature_set(root / split, FeatureSet(rng.normal(size=(36, 6)).astype(np.float32),
                                                   [f"{c}/{i}.jpg" for i, c in enumerate(labels)], labels))
    return root


@pytest.mark.parametrize("before,after,expected", [([], [], None), (["--threads", "3"], [], 3),
                                                   ([], ["--threads", "3"], 3), (["--threads", "2"], ["--threads", "3"], 3)])
def test_eval_threads_reach_the_library_from_either_place(feats, monkeypatch, before, after, expected):
    from metaug_features.evaluation import folders

    seen = []
    real = folders.knn_evaluate
    monkeypatch.setattr(folders, "knn_evaluate", lambda *a, **k: seen.append(k.get("threads")) or real(*a, **k))
    args = [*before, "knn", "--train", str(feats / "train"), "--test", str(feats / "test"), "--k", "5", *after]
    res = CliRunner().invoke(script_command("metaug-eval"), args)
    assert res.exit_code == 0, res.output
    assert seen == [expected]


@pytest.mark.parametrize("where", ["group", "subcommand"])
def test_eval_quiet_silences_info_lines_from_either_place(feats, tmp_path, where):
    """``metaug-eval -q all ...`` used to be refused; now -q before or after the subcommand
    leaves only the result table on the output: no step lines, no 'wrote' lines."""
    args = ["all", "--train", str(feats / "train"), "--test", str(feats / "test"), "--k", "5", "--c-grid", "0.1",
            "--restarts", "1", "-o", str(tmp_path / "plots"), "--max-points", "36", "--report", str(tmp_path / "r.json")]
    loud = CliRunner().invoke(script_command("metaug-eval"), args)
    assert loud.exit_code == 0 and "[metaug-eval] knn ..." in loud.output and "wrote " in loud.output, loud.output
    quiet_args = ["-q", *args] if where == "group" else [*args, "-q"]
    quiet = CliRunner().invoke(script_command("metaug-eval"), quiet_args)
    assert quiet.exit_code == 0, quiet.output
    assert "[metaug-eval]" not in quiet.output and "wrote" not in quiet.output
    assert "k5_top1" in quiet.output  # the result table stays
    assert (tmp_path / "r.json").is_file()


def test_train_vae_quiet_drops_the_epoch_lines(monkeypatch, tmp_path):
    import metaug_cli.train_vae as cli

    def fake_train_vae(path, out, *, log, **kwargs):
        if log:
            log("epoch 1/1: loss 1.0")
            log("VAE saved")
        return {"test_psnr_db": 21.5, "psnr_measured_on": "test split"}

    monkeypatch.setattr(cli, "train_vae", fake_train_vae)
    loud = CliRunner().invoke(cli.main, ["data", "-o", str(tmp_path / "v")])
    assert loud.exit_code == 0 and "epoch 1/1" in loud.output, loud.output
    quiet = CliRunner().invoke(cli.main, ["data", "-o", str(tmp_path / "v"), "-q"])
    assert quiet.exit_code == 0 and "epoch" not in quiet.output
    assert quiet.output == f"VAE saved to {tmp_path / 'v'}: PSNR 21.50 dB on the test split\n"
