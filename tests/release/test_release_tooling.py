"""Release tooling (issue 5): model card rendered from metaug_training/model_cards/, parsed by huggingface_hub;
metaug-export --card-metrics; metaug-push --dry-run validation and the no-token / offline stop
before any network call; `python -m metaug_release reproduce` re-measures the card's k-NN number and
`python -m metaug_release evaluate` writes the release evaluation as a metaug-eval report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import HfApi, ModelCard

from metaug_cli.export import main as export_main
from metaug_cli.push import main as push_main
from metaug_features import EncoderConfig, load_encoder, save_pretrained
from metaug_features.errors import ConfigError
from metaug_features.evaluation import knn_evaluate
from metaug_features.hub import RELEASE_TAG
from metaug_features.model import MetAugEncoder
from metaug_release import reproduce
from metaug_release.cli import main as release_cli
from metaug_training.checkpoint import save_checkpoint
from metaug_training.config import load_config
from metaug_training.model_card import render_card
from metaug_training.publish import PublishError, push_folder, validate_model_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
CFG = EncoderConfig(architecture="alexnet32", width=0.125, views=("l", "ab"))
METRICS = [
    {"task": "image-classification", "dataset": "CIFAR-10 (JPEG q75)", "metric": "accuracy",
     "name": "weighted k-NN k=200 T=0.07 (conv)", "value": 55.13,
     "args": {"protocol": "knn", "k": 200, "temperature": 0.07, "layer": "conv"}},
    {"task": "image-classification", "dataset": "CIFAR-10 (JPEG q75)", "metric": "accuracy",
     "name": "linear probe (fc)", "value": 61.5},
    {"task": "feature-extraction", "dataset": "CIFAR-10 (JPEG q75)", "metric": "nmi",
     "name": "k-means NMI in % (conv)", "value": 23.1, "split": "test"},
]
COMPARISON = [{"method": "CMC", "epochs": 30, "knn (conv)": 52.4}, {"method": "MetAug", "epochs": 30, "knn (conv)": 55.13}]


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    yield


def card_text(metrics=METRICS, **kw) -> str:
    return render_card(CFG, metrics, recipe=kw.pop("recipe", "cifar10-metaug"),
                       budget={"epochs": 30, "wall_clock_hours": 6.5}, hardware="1x NVIDIA H100",
                       comparison=kw.pop("comparison", COMPARISON), repo_id="metaug-features/test-model", **kw)


@pytest.fixture(scope="module")
def encoder() -> MetAugEncoder:
    torch.manual_seed(0)
    return MetAugEncoder(CFG).eval()


@pytest.fixture
def folder(tmp_path, encoder) -> Path:
    return save_pretrained(encoder, tmp_path / "model", card=card_text())


# ---------------------------------------------------------------- card rendering / parsing
def test_card_parses_with_huggingface_hub(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(card_text())
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "metaug-features" and data["license"] == "mit"
    # the config records no training method: no method tag (tests/release/test_shipped_names.py has them)
    assert "cifar10" in data["tags"] and "metaug" not in data["tags"] and data["datasets"] == ["uoft-cs/cifar10"]
    assert card.data.model_name == "test-model"
    got = [(r.task_type, r.dataset_name, r.dataset_type, r.dataset_split, r.metric_type, r.metric_name, r.metric_value)
           for r in card.data.eval_results]
    want = [(m["task"], m["dataset"], "cifar10", m.get("split", "test"), m["metric"], m["name"], m["value"]) for m in METRICS]
    assert sorted(got) == sorted(want)
    knn = next(r for r in card.data.eval_results if r.metric_name.startswith("weighted k-NN"))
    assert knn.metric_args == {"protocol": "knn", "k": 200, "temperature": 0.07, "layer": "conv"}
    # the body: usage lines, comparison table, limitations, citations, dims of the real encoder
    text = card.text
    assert 'load_encoder("metaug-features/test-model")' in text
    assert "| CMC | 30 | 52.40 |" in text and "| MetAug | 30 | 55.13 |" in text
    assert "JPEG" in text and "not the paper's numbers" in text
    assert "li2022metaug" in text and "krizhevsky2009cifar" in text
    dim = MetAugEncoder(CFG).feature_dim("conv")
    assert f"[N, {dim}]" in text


def test_card_recipe_dict_and_no_comparison():
    text = card_text(recipe={"method": "metaug", "optim": {"epochs": 30}}, comparison=None)
    assert '"method": "metaug"' in text and "Not measured for this release." in text


@pytest.mark.parametrize("bad, msg", [
    ([], "at least one"),
    ([{"task": "image-classification", "dataset": "x", "metric": "accuracy", "name": "n"}], "lacks ['value']"),
    ([{"task": "t", "dataset": "x", "metric": "accuracy", "name": "n", "value": "55"}], "non-numeric"),
    ([{"task": "t", "dataset": "x", "metric": "accuracy", "name": "n", "value": math.nan}], "non-numeric"),
])
def test_bad_metrics_are_refused(bad, msg):
    with pytest.raises(ConfigError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        card_text(metrics=bad)


def test_library_does_not_import_training():
    import subprocess
    import sys

    code = "import sys, metaug_features, metaug_features.hub, metaug_features.model_io; " \
           "print(any(m.startswith(('metaug_training', 'metaug_cli')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------- export hook
def test_export_cli_renders_card_from_metrics_json(tmp_path):
    cfg = load_config(None, ["model.width=0.125", "model.views=l,ab", f"run.out_dir={tmp_path / 'run'}", "method=metaug"])
    torch.manual_seed(1)
    enc = MetAugEncoder(cfg.encoder_config())
    ckpt = save_checkpoint(tmp_path / "last.pt", {"config": cfg.to_dict(), "encoder": enc.state_dict(), "step": 7,
                                                  "steps_per_epoch": 3, "git_commit": "abc123"})
    spec = {"metrics": METRICS[:1], "budget": {"epochs": 2.333}, "hardware": "2 CPU cores",
            "comparison": COMPARISON, "repo_id": "metaug-features/metaug-alexnet32-cifar10-conv"}
    (tmp_path / "m.json").write_text(json.dumps(spec))
    out = tmp_path / "exported"
    res = CliRunner().invoke(export_main, [str(ckpt), "-o", str(out), "--card-metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    card = ModelCard.load(out / "README.md")
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [(METRICS[0]["name"], 55.13)]
    assert "git_sha: abc123" in card.text and "2 CPU cores" in card.text  # provenance of the export
    # weights unchanged by the card option
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(load_encoder(out)(x, "conv"), enc.eval()(x, "conv"))
    assert validate_model_folder(out).ok

    (tmp_path / "bad.json").write_text(json.dumps({"metrics": [], "hardware": "x"}))
    res = CliRunner().invoke(export_main, [str(ckpt), "-o", str(tmp_path / "o2"), "--card-metrics", str(tmp_path / "bad.json")])
    assert res.exit_code != 0 and "at least one measured metric" in res.output
    # without --card-metrics the minimal card is still written (backwards compatible)
    res = CliRunner().invoke(export_main, [str(ckpt), "-o", str(tmp_path / "o3")])
    assert res.exit_code == 0 and not ModelCard.load(tmp_path / "o3" / "README.md").data.eval_results


def test_export_cli_release_layer_truncation_and_dtype(tmp_path):
    """--default-layer / --truncate-after / --dtype: the folder returns the chosen layer by
    default, stores only the weights up to it, and its kept layers give the checkpoint's features
    (bit-exact in float32; float16 storage within its rounding error)."""
    from safetensors.torch import load_file

    cfg = load_config(None, ["model.width=0.125", "model.views=l,ab", f"run.out_dir={tmp_path / 'run'}", "method=cmc"])
    torch.manual_seed(2)
    enc = MetAugEncoder(cfg.encoder_config()).eval()
    ckpt = save_checkpoint(tmp_path / "last.pt", {"config": cfg.to_dict(), "encoder": enc.state_dict(), "step": 4,
                                                  "steps_per_epoch": 2, "git_commit": "abc"})
    x = torch.rand(3, 3, 32, 32)
    full = tmp_path / "full"
    assert CliRunner().invoke(export_main, [str(ckpt), "-o", str(full)]).exit_code == 0
    for layer in ("conv", "fc"):
        out = tmp_path / layer
        res = CliRunner().invoke(export_main, [str(ckpt), "-o", str(out), "--default-layer", layer, "--truncate-after", layer])
        assert res.exit_code == 0, res.output + repr(res.exception)
        small = load_encoder(out)
        assert small.config.default_layer == layer and small.config.truncate_after == layer
        assert torch.equal(small(x), enc(x, layer))  # default layer, bit-exact
        assert (out / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size
        assert not any(k.startswith("head") or ".head" in k for k in load_file(out / "model.safetensors"))
    # the conv folder cannot serve fc
    with pytest.raises(Exception, match="fc"):
        load_encoder(tmp_path / "conv")(x, "fc")

    half = tmp_path / "half"
    res = CliRunner().invoke(export_main, [str(ckpt), "-o", str(half), "--default-layer", "fc", "--dtype", "float16"])
    assert res.exit_code == 0, res.output
    assert {t.dtype for t in load_file(half / "model.safetensors").values() if t.is_floating_point()} == {torch.float16}
    assert json.loads((half / "config.json").read_text())["weights_dtype"] == "float16"
    torch.testing.assert_close(load_encoder(half)(x), enc(x, "fc"), rtol=2e-2, atol=2e-3)

    res = CliRunner().invoke(export_main, [str(ckpt), "-o", str(tmp_path / "bad"), "--default-layer", "fc",
                                           "--truncate-after", "conv"])
    assert res.exit_code != 0 and "'fc' is not among the exported layers" in res.output
    assert not (tmp_path / "bad" / "config.json").exists()


# ---------------------------------------------------------------- dry run / validation
def test_dry_run_passes_on_valid_folder(folder):
    (folder / "notes.txt").write_text("scratch")
    res = CliRunner().invoke(push_main, [str(folder), "--repo-id", "metaug-features/metaug-alexnet32-cifar10-conv",
                                         "--tag", RELEASE_TAG, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "config.json" in res.output and "model.safetensors" in res.output and "README.md" in res.output
    assert "dry run OK: would push 3 file(s)" in res.output
    assert "notes.txt" in res.output.split("not uploaded")[1]
    assert "weighted k-NN k=200 T=0.07 (conv): 55.13" in res.output
    assert f"cifar10-metaug-conv -> metaug-features/metaug-alexnet32-cifar10-conv@{RELEASE_TAG}" in res.output


def _dry(folder) -> tuple[int, str]:
    res = CliRunner().invoke(push_main, [str(folder), "--repo-id", "o/n", "--dry-run"])
    return res.exit_code, res.output


def test_dry_run_fails_on_bad_yaml(folder):
    (folder / "README.md").write_text("---\nlibrary_name: [unclosed\n---\n# card\n")
    code, out = _dry(folder)
    assert code != 0 and "metadata does not parse" in out and "not publishable" in out


def test_dry_run_fails_on_missing_weights(folder):
    (folder / "model.safetensors").unlink()
    code, out = _dry(folder)
    assert code != 0 and "model does not load" in out


def test_dry_run_fails_on_corrupt_weights(folder):
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    code, out = _dry(folder)
    assert code != 0 and "model does not load" in out


def test_dry_run_fails_without_model_index(folder, encoder):
    save_pretrained(encoder, folder)  # the library's minimal card: valid YAML, no metrics
    code, out = _dry(folder)
    assert code != 0 and "no model-index" in out and "datasets" in out


# ---------------------------------------------------------------- push: never reaches the network
@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every HfApi network method used by push raises; records nothing reached them."""
    calls = []
    for name in ("whoami", "create_repo", "create_branch", "upload_folder", "create_tag"):
        def boom(self, *a, _n=name, **k):
            calls.append(_n)
            raise AssertionError(f"network call {_n} reached")
        monkeypatch.setattr(HfApi, name, boom)
    # no saved login: huggingface_hub computes the token path at import, so patch the constant too
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    return calls


def test_push_without_token_stops_before_network(folder, no_network, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(push_main, [str(folder), "--repo-id", "metaug-features/x", "--tag", "v0.1.0"])
    assert res.exit_code != 0 and "no Hugging Face token" in res.output and "nothing was uploaded" in res.output
    assert no_network == []


def test_push_offline_with_token_stops_before_network(folder, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        push_folder(folder, "metaug-features/x", token="hf_dummy")
    assert no_network == []


def test_push_refuses_broken_folder_and_bad_repo_id_first(folder, no_network):
    with pytest.raises(PublishError, match="ORG/NAME"):
        push_folder(folder, "not a repo", token="hf_dummy")
    (folder / "model.safetensors").unlink()
    with pytest.raises(PublishError, match="not publishable"):
        push_folder(folder, "o/n", token="hf_dummy")
    assert no_network == []


def test_push_unreachable_hub_stops_after_probe(folder, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(PublishError, match="cannot reach the Hugging Face Hub"):
        push_folder(folder, "o/n", token="hf_dummy")
    assert no_network == ["whoami"]  # the probe failed: no repo created, nothing uploaded


def test_push_sequence_with_tag(folder, monkeypatch):
    """With a token and a reachable Hub: create_repo, upload only the model files, tag the commit."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []

    class Info:
        oid = "c0ffee"
        commit_url = "https://huggingface.co/o/n/commit/c0ffee"

    monkeypatch.setattr(HfApi, "whoami", lambda self, token=None, **k: calls.append(("whoami", token)) or {"name": "me"})
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **k: calls.append(("create_repo", repo_id, k["private"])))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **k: calls.append(("upload_folder", k["repo_id"], k["folder_path"], tuple(k["allow_patterns"]))) or Info())
    monkeypatch.setattr(HfApi, "create_tag", lambda self, repo_id, **k: calls.append(("create_tag", repo_id, k["tag"], k["revision"])))
    (folder / "junk.bin").write_bytes(b"x")
    res = push_folder(folder, "o/n", private=True, tag="v0.1.0", token="hf_dummy")
    assert [c[0] for c in calls] == ["whoami", "create_repo", "upload_folder", "create_tag"]
    assert calls[1] == ("create_repo", "o/n", True)
    assert calls[2][1:3] == ("o/n", str(folder)) and "*.bin" not in calls[2][3]
    assert calls[3] == ("create_tag", "o/n", "v0.1.0", "c0ffee")
    assert res.files == ["README.md", "config.json", "model.safetensors"] and res.tag == "v0.1.0"


# ---------------------------------------------------------------- python -m metaug_release reproduce
def test_reproduce_release_checks_card_against_measurement(cifar_images, encoder, tmp_path):
    # The card's number is a real measurement, taken here by a different path (encoder.extract
    # on the files in memory) than the script's (extract_features -> feature folder).
    splits = {}
    for split in ("train", "test"):
        files = sorted((cifar_images / split).glob("*/*.jpg"))
        splits[split] = (encoder.extract(files, layer="fc6").numpy(), [f.parent.name for f in files])
    measured = knn_evaluate(*splits["train"], *splits["test"], ks=(200,), temperature=0.07).accuracy[200]["top1"]
    claim = {**METRICS[0], "name": "weighted k-NN k=200 T=0.07 (fc6)", "value": round(measured, 2),
             "args": {"protocol": "knn", "k": 200, "temperature": 0.07, "layer": "fc6"}}
    good = save_pretrained(encoder, tmp_path / "good", card=card_text([claim, METRICS[1]]))
    rows = reproduce.reproduce(good, cifar_images, tmp_path / "work", workers=0, batch_size=100)
    assert len(rows) == 1 and rows[0]["layer"] == "fc6" and rows[0]["ok"]
    assert abs(rows[0]["measured"] - measured) < 1e-6

    off = save_pretrained(encoder, tmp_path / "off", card=card_text([{**claim, "value": round(measured + 0.5, 2)}]))
    rows = reproduce.reproduce(off, cifar_images, tmp_path / "work", workers=0, batch_size=100)
    assert not rows[0]["ok"] and rows[0]["diff"] == pytest.approx(-0.5, abs=0.006)
    # the command: exit 0 for the good folder, 2 (a failed check) when any folder is off
    res = CliRunner().invoke(release_cli, ["reproduce", str(good), "--data", str(cifar_images), "--workers", "0",
                                           "--device", "cpu", "-o", str(tmp_path / "w2"),
                                           "--report", str(tmp_path / "rows.json")])
    assert res.exit_code == 0 and res.output.startswith("OK"), res.output
    assert json.loads((tmp_path / "rows.json").read_text())[0]["ok"] is True
    res = CliRunner().invoke(release_cli, ["reproduce", str(good), str(off), "--data", str(cifar_images),
                                           "--workers", "0", "--device", "cpu", "-o", str(tmp_path / "w2")])
    assert res.exit_code == 2 and "FAIL" in res.output
    assert "Error: 1 of 2 card numbers differ by more than 0.3 points" in res.output


def test_reproduce_release_reads_archive(cifar_images, tmp_path):
    """--data may be a .tar.gz of a folder holding train/ and test/."""
    import tarfile

    arc = tmp_path / "c.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        tar.add(cifar_images / "test" / "cat", arcname="cifar10/test/cat")
        tar.add(cifar_images / "train" / "cat", arcname="cifar10/train/cat")
    root = reproduce.resolve_data(arc, tmp_path / "work")
    assert root == tmp_path / "work" / "data" / "cifar10"
    assert len(list((root / "train" / "cat").glob("*.jpg"))) == 20


# ---------------------------------------------------------------- python -m metaug_release evaluate
def test_evaluate_encoder_matches_extraction_and_evaluators(cifar_images, tmp_path, one_torch_thread):
    """The release evaluation's one-pass conv+fc features equal metaug-extract's per-layer
    output, and its k-NN / probe / k-means numbers, read back from the metaug-eval report it
    writes, equal the library evaluators on them."""
    from metaug_features.evaluation import cluster_evaluate, fast_linear_probe, read_report
    from metaug_features.extract import extract_features
    from metaug_features.feature_files import read_feature_set
    from metaug_release.records import load_evaluation

    torch.manual_seed(0)
    model = save_pretrained(MetAugEncoder(EncoderConfig(architecture="alexnet32", width=0.125)), tmp_path / "m")
    res = CliRunner().invoke(release_cli, ["evaluate", "--model", str(model), "--data", str(cifar_images),
                                           "-o", str(tmp_path / "feats"), "--report", str(tmp_path / "r.json"),
                                           "--per-class-test", "10", "--quiet"])
    assert res.exit_code == 0, res.output
    report = read_report(tmp_path / "r.json")
    assert report["format"] == "metaug-eval-report" and report["version"] == 2
    assert report["inputs"]["data"]["extract"]["train"]["images"] == 200
    assert report["inputs"]["data"]["extract"]["test"]["images"] == 100
    assert report["inputs"]["model"]["weights_sha256"] == sha256_of(model / "model.safetensors")
    assert [(e["layer"], e["name"]) for e in report["evaluations"]] == [
        (layer, name) for layer in ("conv", "fc") for name in ("knn", "fast_probe", "kmeans")]
    ev = load_evaluation(tmp_path / "r.json")
    for layer in ("conv", "fc"):
        tr, te = read_feature_set(tmp_path / "feats" / f"train_{layer}"), read_feature_set(tmp_path / "feats" / f"test_{layer}")
        assert report["inputs"][f"{layer}/train"]["num_rows"] == 200 and ev[layer].dim == tr.features.shape[1]
        extract_features(str(model), [cifar_images / "train"], tmp_path / f"ref_{layer}", layer=layer,
                               workers=0, progress=False)
        np_ref = read_feature_set(tmp_path / f"ref_{layer}")
        assert list(np_ref.paths) == list(tr.paths)
        # same preprocessing and weights; batch 256 vs 64 may reorder float sums, hence the tolerance
        torch.testing.assert_close(torch.from_numpy(tr.features), torch.from_numpy(np_ref.features),
                                   rtol=1e-5, atol=1e-5)
        knn = knn_evaluate(tr.features, tr.labels, te.features, te.labels, ks=(200, 20), temperature=0.07)
        assert ev[layer].knn == {k: acc["top1"] for k, acc in knn.accuracy.items()}
        assert ev[layer].probe == fast_linear_probe(tr.features, tr.labels, te.features, te.labels).accuracy["top1"]
        kmeans = cluster_evaluate(te.features, te.labels, restarts=5, seed=0).metrics
        assert ev[layer].kmeans["nmi_percent"] == kmeans["nmi_percent"] and "nmi" not in ev[layer].kmeans
        assert ev[layer].nmi_percent == kmeans["nmi_percent"]


def sha256_of(path: Path) -> str:
    from metaug_features.feature_files import sha256_file

    return sha256_file(path)


def test_evaluate_refuses_bad_inputs_with_one_line(cifar_images, tmp_path):
    """Both or neither of --model / --random-init, an empty split folder: exit 2, one Error line."""
    for args, msg in ((["--model", "x", "--random-init", "0.5"], "exactly one of --model and --random-init"),
                      ([], "exactly one of --model and --random-init"),
                      (["--random-init", "0"], "positive width")):
        res = CliRunner().invoke(release_cli, ["evaluate", *args, "--data", str(cifar_images), "-o", str(tmp_path / "f")])
        assert res.exit_code == 2 and msg in res.output, res.output
    (tmp_path / "empty" / "train").mkdir(parents=True)
    res = CliRunner().invoke(release_cli, ["evaluate", "--random-init", "0.125", "--data", str(tmp_path / "empty"),
                                           "-o", str(tmp_path / "f")])
    assert res.exit_code == 2 and "no image files under" in res.output, res.output
