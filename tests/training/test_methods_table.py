"""The methods table (metaug_training/methods/table.py) is the one place a method's name is
tested: each row is a Method named by its key, nothing in training or the CLI compares
``cfg.method`` with a name, and an unknown name is an error that lists the known ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metaug_features.errors import ConfigError
from metaug_training.methods import METHODS, Method, method_for

REPO = Path(__file__).resolve().parents[2]


def test_every_row_is_a_method_named_by_its_key():
    assert list(METHODS) == ["cmc", "oucl", "metaug"]
    for name, method in METHODS.items():
        assert isinstance(method, Method) and method.name == name
    # only MetAug writes meta-step records and restores extra weights from a compact state
    assert [n for n, m in METHODS.items() if m.meta_diagnostics] == ["metaug"]
    assert {n: m.warm_start_keys for n, m in METHODS.items()} == {"cmc": (), "oucl": (), "metaug": ("mags",)}


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown method 'mataug'; known methods: cmc, oucl, metaug"):
        method_for("mataug")


def test_no_code_outside_the_table_tests_a_method_name():
    """`cfg.method == "metaug"` and the like were spread over 7 places (issue #55); a method's
    behaviour now lives in its module, reached through the table."""
    pattern = re.compile(r"\.method\s*(==|!=|\bin\b|\bnot in\b)")
    offenders = []
    for folder in ("metaug_training", "metaug_cli"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "method names tested outside metaug_training/methods/table.py:\n" + "\n".join(offenders)


def test_an_unknown_method_on_the_command_line_fails_before_any_data_is_read(tmp_path):
    """The config checks only that ``method`` is a name (the table imports the config, so the
    config cannot import the table); training looks it up first, so a typo costs no decoding."""
    from click.testing import CliRunner

    from metaug_cli.train import main

    missing = tmp_path / "no-such-dataset"
    res = CliRunner().invoke(main, ["--config", "cifar10-cmc", "method=simclr", f"data.path={missing}",
                                    "-o", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "unknown method 'simclr'; known methods: cmc, oucl, metaug" in res.output
    assert not (tmp_path / "run").exists()
