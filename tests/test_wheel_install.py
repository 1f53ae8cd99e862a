"""The shipped models work anywhere: a plain (non-editable) install from a wheel, used from a
folder outside the repository with the Hub offline, resolves ``hub/cifar10-conv`` and the
aliases (the default MetAug (only OUCL) pair and the MetAug pair ``cifar10-metaug-{conv,fc}``) to
the model folders installed with the package, and renders cards from the template installed with
it. The wheel stays under 30 MB and holds no release tooling (metaug_release/, the old
metaug_training/release/, a metaug-release script), though the checkout it is built from has it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from metaug_features import load_encoder

# Full tier only (python -m pytest -q --run-slow): builds and installs a wheel.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: What a wheel is built from (a copy, so the build leaves nothing in the checkout). metaug_release
#: is copied too, so that leaving it out of the wheel is pyproject.toml's doing, checked below.
SOURCES = ["pyproject.toml", "README.md", "metaug_features", "metaug_cli", "metaug_training", "metaug_release",
           "hub/cifar10-conv", "hub/cifar10-fc", "hub/cifar10-metaug-conv", "hub/cifar10-metaug-fc"]
#: The most the wheel may weigh (issue #54: both shipped pairs travel in it).
MAX_WHEEL_BYTES = 30 * 1000 * 1000
SHIPPED = ("cifar10-conv", "cifar10-fc", "cifar10-metaug-conv", "cifar10-metaug-fc")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, **kwargs)
    assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Build a wheel from a copy of the sources and install it (no dependencies: those are the
    test environment's) into a fresh target folder outside the repository."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w", str(root / "dist")])
    (wheel,) = (root / "dist").glob("metaug_features-*.whl")
    # both pairs, nothing else of hub/, and under the size limit
    names = zipfile.ZipFile(wheel).namelist()
    bundled = sorted({n.split("/")[2] for n in names if n.startswith("metaug_features/_bundled_models/")
                      and n.count("/") == 3})
    assert bundled == sorted(SHIPPED), bundled
    assert wheel.stat().st_size < MAX_WHEEL_BYTES, f"the wheel weighs {wheel.stat().st_size:,} bytes"
    # no release tooling: neither the package nor its old place nor a console script
    release = [n for n in names if n.startswith(("metaug_release/", "metaug_training/release/"))]
    assert not release, release[:5]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "metaug-extract" in scripts and "release" not in scripts, scripts
    target = root / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)])
    return target


def _env(target: Path, home: Path) -> dict[str, str]:
    # The installed copy first on the path; the test environment supplies torch & co. The Hub
    # is offline and its cache empty, so nothing can come from a download.
    return dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"), METAUG_HUB_ORG="nobody-offline")


def test_wheel_extracts_with_the_shipped_model_offline(installed, tmp_path):
    images = tmp_path / "images"
    for cls in ("cat", "ship"):
        shutil.copytree(REPO / "examples" / "cifar10-sample" / cls, images / cls)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env(installed, tmp_path)
    script = installed / "bin" / "metaug-extract"
    _run([sys.executable, str(script), "--model", "hub/cifar10-conv", str(images), "--output", "out", "--quiet"], cwd=work, env=env)
    feats = np.load(work / "out" / "features.npy")
    assert feats.shape == (40, 1728)
    # The installed folder holds the same weights as the repository's: same features.
    expected = load_encoder(REPO / "hub" / "cifar10-conv").extract(sorted(images.glob("*/*.jpg"))).numpy()
    np.testing.assert_allclose(feats, expected, atol=1e-5)

    probe = _run(
        [sys.executable, "-c", (
            "import json, metaug_features, metaug_training.model_card as mc\n"
            "from metaug_features import load_encoder\n"
            "from metaug_features.hub import resolve_model_dir\n"
            "enc = load_encoder('cifar10-fc')\n"
            "print(json.dumps({'package': metaug_features.__file__, 'dim': enc.feature_dim(),\n"
            "                  'fc': str(resolve_model_dir('cifar10-fc')), 'template': str(mc.TEMPLATE_PATH),\n"
            "                  'template_ok': mc.TEMPLATE_PATH.is_file()}))"
        )],
        cwd=work, env=env,
    )
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(facts["package"]).is_relative_to(installed), facts  # not the checkout's copy
    assert Path(facts["fc"]).is_relative_to(installed) and facts["dim"] == 3072
    assert Path(facts["template"]).is_relative_to(installed) and facts["template_ok"]


def test_wheel_loads_the_metaug_model_offline_from_any_folder(installed, tmp_path):
    """load_encoder("cifar10-metaug-conv") after a plain wheel install, outside the repository, with
    the Hub offline: the installed copy of campaign 1's MetAug weights, same features as the
    repository's folder; the default alias is still the other (MetAug (only OUCL)) model."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    images = sorted((REPO / "examples" / "cifar10-sample" / "cat").glob("*.jpg"))[:4]
    code = (
        "import json, sys, numpy as np\n"
        "from metaug_features import load_encoder\n"
        "from metaug_features.hub import resolve_model_dir\n"
        "enc = load_encoder('cifar10-metaug-conv')\n"
        "np.save('feats.npy', enc.extract(sys.argv[1:]).numpy())\n"
        "print(json.dumps({'folder': str(resolve_model_dir('cifar10-metaug-conv')), 'method': enc.config.provenance['method'],\n"
        "                  'default_method': load_encoder('cifar10-conv').config.provenance['method'],\n"
        "                  'fc': str(resolve_model_dir('cifar10-metaug-fc'))}))"
    )
    res = _run([sys.executable, "-c", code, *map(str, images)], cwd=work, env=_env(installed, tmp_path))
    facts = json.loads(res.stdout.strip().splitlines()[-1])
    assert Path(facts["folder"]).is_relative_to(installed) and Path(facts["fc"]).is_relative_to(installed), facts
    assert Path(facts["folder"]).name == "cifar10-metaug-conv"
    assert (facts["method"], facts["default_method"]) == ("metaug", "oucl")
    expected = load_encoder(REPO / "hub" / "cifar10-metaug-conv").extract(images).numpy()
    np.testing.assert_allclose(np.load(work / "feats.npy"), expected, atol=1e-5)
