"""The training configuration: one frozen dataclass, read from a JSON recipe plus overrides.

``TrainConfig`` is the single source of truth for a run. It is grouped into small sections
(``data``, ``model``, ``bank``, ``loss``, ``metaug``, ``optim``, ``run``) so that a recipe reads
like docs/METHODS.md; every section is itself a frozen dataclass. Defaults are the ones
docs/METHODS.md names (the official code's where it picks the code's reading). A recipe file holds any subset of the keys; the command line
overrides single keys with dotted names::

    metaug-train --config metaug_training/recipes/cifar10-metaug.json optim.lr=0.05 model.views=l,ab

Every value is checked against the field's type (an int is accepted where a float belongs, a
bool never is) and range; an unknown key or a bad value is a
:class:`~metaug_features.errors.ConfigError` that names the dotted key. The config is saved into
every checkpoint (``to_dict``) and rebuilt from it (``from_dict``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from metaug_features.config import EncoderConfig
from metaug_features.device import DEVICE_SPECS, check_device_spec
from metaug_features.errors import ConfigError, MetAugError

#: Training methods (docs/METHODS.md sections 3-6): memory-bank CMC, OUCL without generators, full MetAug.
METHODS = ("cmc", "oucl", "metaug")
#: Folder of the shipped recipes; ``--config cifar10-metaug`` is looked up here.
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are augmented (docs/METHODS.md section 1).

    path: an image folder (class sub-folders give labels, a flat folder gives none) or the
        CIFAR-10 JPEG archive (``.tar.gz`` with ``<top>/<split>/<class>/<file>.jpg``).
    split: sub-folder used when ``path`` holds one of that name (``train`` of CIFAR-10); a
        folder without it is used whole.
    cache_dir: where the decoded uint8 array [N, S, S, 3] is cached (``~`` expanded).
    cache_size: side S of the cached images; 0 = the encoder's ``resize_size`` (32 for
        alexnet32, 256 for alexnet224). CIFAR-10 images stay 32 x 32 and are upsampled by
        the crop when the encoder wants more.
    limit: use only the first ``limit`` images (sorted by path); 0 = all.
    num_workers: decoding processes for image folders (0 decodes in the main process).
    crop_scale, crop_ratio: RandomResizedCrop area fraction and aspect-ratio ranges.
    flip: random horizontal flip with probability 0.5.
    """

    path: str = "data/cifar10-jpeg.tar.gz"
    split: str = "train"
    cache_dir: str = "~/.cache/metaug-features/datasets"
    cache_size: int = 0
    limit: int = 0
    num_workers: int = 2
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """The encoder (docs/METHODS.md section 2); these become the exported ``EncoderConfig``."""

    architecture: str = "alexnet32"
    width: float = 1.0
    views: tuple[str, ...] = ("l", "ab", "ori")
    ori_space: str = "lab"
    embedding_dim: int = 128
    stem: str = "imagenet"


@dataclass(frozen=True)
class BankConfig:
    """Memory bank (docs/METHODS.md section 3). scoring: "full" = exact per-anchor scores via
    ``z @ bank.T`` (docs/METHODS.md section 3(a)), "gather" = naive reference, "shared" = one set of K negatives
    for the whole batch (docs/METHODS.md section 3(b), a change of sampling)."""

    num_negatives: int = 4096
    momentum: float = 0.5
    scoring: str = "full"


@dataclass(frozen=True)
class LossConfig:
    """Losses (docs/METHODS.md section 4).

    cmc: the CMC baseline's loss, "infonce" (softmax) or "nce" (memory-bank NCE), both at
        ``temperature``.
    beta, margin, weighting, gamma, phi_dec: OUCL options (methods oucl and metaug).
        margin None = D_p = D_n = 0; a number m sets D_p = 1 - m, D_n = m.
        weighting "none" = a_p = a_n = 1; "adaptive" = the detached weights of eq. 9-10.
    """

    cmc: str = "infonce"
    temperature: float = 0.07
    beta: float = 16.0
    margin: float | None = None
    weighting: str = "none"
    gamma: float = 0.4
    phi_dec: float = 6.0


@dataclass(frozen=True)
class MetaugConfig:
    """MetAug-only options (docs/METHODS.md sections 4-6).

    delta, alpha: weights of the augmented terms and of the regulariser R.
    aug_terms: "code" (the four augmented terms), "paper" (eq. 11's single all-augmented term),
        "none", or an explicit list of view subsets written like "l", "ab+ori", "l+ab+ori".
    reg_mode, reg_c, reg_where: R of eq. 4-5 ("large" | "medium" | "small"; its hidden constant
        c; applied to the MAG update only "mag" (paper), to both updates "both" (code), "off").
    reg_detach_thresholds: stop gradients into R's per-anchor thresholds sigma+/sigma-.
    reg_scores: the scores eq. 4-5 read: "mapped" (default, the official code: s -> (s+1)/2 as in
        OUCL) or "raw" (the dot products; exactly twice the mapped R). A saved config without
        this key (checkpoints written before it existed) loads with the default.
    inner_lr: eta_in of the fast weights theta* = theta' - eta_in * g.
    meta_every: the meta step runs every k-th iteration (1 = paper).
    lr, momentum, weight_decay: SGD of the MAGs (scheduled like the encoder's lr).
    """

    delta: float = 1e-5
    alpha: float = 1e-11
    aug_terms: Any = "code"
    reg_mode: str = "large"
    reg_c: float = 1e-4
    reg_where: str = "mag"
    reg_detach_thresholds: bool = False
    reg_scores: str = "mapped"
    inner_lr: float = 1e-3
    meta_every: int = 1
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class OptimConfig:
    """Encoder optimiser and schedule (docs/METHODS.md section 6, the code's SGD).

    optimizer: "sgd" (official code, default) or "adam" (the paper's text); applies to the
        encoder and the MAGs. Adam uses ``lr`` and ``weight_decay`` (L2, as torch.optim.Adam)
        and ignores ``momentum``.

    batch_size: global batch (all ranks and accumulation steps together); each forward sees
        ``batch_size / (world_size * accum_steps)`` images.
    schedule: "step" (x ``lr_decay`` at each epoch of ``milestones``) or "cosine" (to 0 over
        ``epochs``, per step). warmup_epochs: linear warm-up from 0, per step.
    accum_steps: micro-batches per step (gradients averaged; the bank is updated once per step).
    """

    optimizer: str = "sgd"
    batch_size: int = 64
    epochs: int = 300
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    milestones: tuple[int, ...] = (120, 160, 200)
    lr_decay: float = 0.1
    warmup_epochs: float = 0.0
    accum_steps: int = 1


@dataclass(frozen=True)
class IDAAConfig:
    """IDAA (docs/METHODS.md section 8): one adversarial view per image, made in a frozen VAE's latent space.

    Each step: z = mu(x1) of the VAE; ``steps`` ascent steps z <- z + (eps / steps) * sign(grad_z)
    of the method's own contrastive loss of x_adv = x1 + G(z) - G(x1) (so eps is the L-inf
    radius in the latent); x_adv is then an added view: loss = base + ``weight`` x loss(x_adv).
    enabled: turn it on (any method: cmc, oucl, metaug).
    vae: folder written by ``metaug-train-vae``.
    separate_bn: the adversarial inputs go through their own BN layers (affine weights and
        running statistics, initialised from the encoder's), as the official code; the
        exported encoder keeps the clean-input BN only.
    """

    enabled: bool = False
    vae: str = ""
    eps: float = 0.1
    steps: int = 1
    weight: float = 1.0
    separate_bn: bool = False


A2_MODES = ("perturb", "search")
A2_LOSSES = ("infonce", "simclr", "full")


@dataclass(frozen=True)
class A2Config:
    """A2 with a VAE generator (docs/METHODS.md section 9; the paper's StyleGAN2 is not available here).

    One generated view per image joins the step: loss = base + ``weight`` x L_A2.
    mode: "perturb" = decode(mu(x) + sigma * noise) online; "search" = latents searched offline
        by ``metaug-a2-search`` (``cache``), decoded and cropped like the batch.
    sigma: perturb noise std in the latent; 0 = calibrate at the start so that the mean cosine
        between ``calibration_model`` features of G(x) and of the perturbed view is
        ``target_cosine`` (over ``calibration_images`` training images; logged in log.jsonl).
    loss: "infonce" (A2-InfoNCE), "simclr" (A2-SimCLR) or "full" (A2-full, SupCon with the
        generated view as a positive; alpha unused); alpha and tau as in docs/METHODS.md section 9.
    """

    enabled: bool = False
    vae: str = ""
    mode: str = "perturb"
    sigma: float = 0.0
    target_cosine: float = 0.85
    calibration_model: str = "hub/cifar10-conv"
    calibration_images: int = 512
    cache: str = ""
    loss: str = "infonce"
    alpha: float = 0.5
    tau: float = 0.5
    weight: float = 1.0


META_GRAD_MODES = ("jvp", "double_backward")


@dataclass(frozen=True)
class RunConfig:
    """How the run is executed and recorded (never changes the maths, so a resume may change it).

    device: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N".
    precision: "fp32" or "bf16" (autocast on CUDA only).
    num_threads: torch CPU threads per process; 0 = the cores this process may use divided by
        the processes on this machine.
    ckpt_every: write ``checkpoints/last.pt`` every this many steps (and at the end).
    max_steps: stop after this global step (0 = run all epochs); the schedule is unchanged.
    stop_after_minutes: wall-clock deadline; the run stops cleanly, checkpoints and exports.
    export: write ``export/`` (the inference model folder) when the run stops.
    warm_start: a compact-state folder (``metaug_training/compact_state.py``, written by
        ``metaug-compact-state``) that ``--resume`` continues from when there is no full
        checkpoint in ``out_dir`` (a run continued on another machine). Not bit-exact: the
        memory bank is rebuilt and the optimiser momentum restarts. "" = none.

    Speed settings (benchmarks/train_speed.py measures each, "Training speed" in
    benchmarks/RESULTS.md; none changes the maths beyond float rounding,
    tests/training/test_train_speed_settings.py checks it). Defaults are what won on the 2-core CPU:
    channels_last: keep conv weights and inputs in NHWC (oneDNN's fast layout on CPUs). On.
    prefetch: prepare the next step's batch (gather, crop, flip, Lab) in a worker thread while
        the current step computes. On: the data path is only a few per cent of a CPU step, but
        the worker keeps it off the critical path (and matters more where the step runs on a GPU).
    meta_grad: "jvp" (default) computes the meta step's second-order term as a Jacobian-vector
        product through the encoder and a double backward through the loss head only;
        "double_backward" differentiates the whole inner backward (the textbook route).
    compile: ``torch.compile`` the encoder forward of the encoder step (inductor). Off: slower
        than eager here, and it compiles at the first step.
    keep_freed_memory: keep freed blocks in glibc's heap instead of returning them to the
        kernel, so a step does not page-fault its tensors in again (metaug_training/cpu_tuning.py). On.
    """

    out_dir: str = "runs/default/full"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    num_threads: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    max_steps: int = 0
    stop_after_minutes: float = 0.0
    export: bool = True
    warm_start: str = ""
    quiet: bool = False
    channels_last: bool = True
    prefetch: bool = True
    meta_grad: str = "jvp"
    compile: bool = False
    keep_freed_memory: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``method`` picks the step (cmc | oucl | metaug); ``idaa`` and
    ``a2`` add generated views to any of them."""

    method: str = "metaug"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    metaug: MetaugConfig = field(default_factory=MetaugConfig)
    idaa: IDAAConfig = field(default_factory=IDAAConfig)
    a2: A2Config = field(default_factory=A2Config)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples as lists), JSON-ready and loadable by torch weights_only."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Strictly rebuild a config from a (possibly partial) nested dict."""
        return _build(cls, d, prefix="")

    def encoder_config(self, provenance: Mapping[str, Any] | None = None) -> EncoderConfig:
        """The library's ``EncoderConfig`` of this run's encoder."""
        m = self.model
        return EncoderConfig(
            architecture=m.architecture,
            width=float(m.width),
            views=tuple(m.views),
            ori_space=m.ori_space,
            embedding_dim=m.embedding_dim,
            stem=m.stem,
            provenance=dict(provenance or {}),
        )


# ---------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a JSON recipe (a file, or the name of a shipped recipe) and apply ``key=value``
    overrides with dotted keys. Raises ConfigError naming the offending key."""
    d: dict[str, Any] = {}
    if path is not None:
        d = read_recipe(path)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(d, key, value)
    return TrainConfig.from_dict(d)


def read_recipe(path: str | Path) -> dict[str, Any]:
    """JSON object of a recipe file; ``name`` without a folder also finds ``recipes/name.json``.
    Keys starting with "_" are comments and are dropped."""
    p = Path(path)
    if not p.is_file():
        shipped = RECIPES_DIR / (p.name if p.suffix == ".json" else p.name + ".json")
        if p.parent == Path(".") and shipped.is_file():
            p = shipped
        else:
            names = ", ".join(sorted(q.stem for q in RECIPES_DIR.glob("*.json")))
            raise ConfigError(f"config file not found: {path} (shipped recipes: {names})")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {p} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {p} must hold a JSON object, got {type(d).__name__}")
    return _strip_comments(d)


def _strip_comments(d: dict[str, Any]) -> dict[str, Any]:
    """Keys starting with "_" (e.g. "_comment") are notes for readers, not settings."""
    return {k: (_strip_comments(v) if isinstance(v, dict) else v) for k, v in d.items() if not k.startswith("_")}


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=0.05"`` -> ("optim.lr", "0.05"). The value stays a string here and is
    converted with the field's type when the config is built (so "3" is an int for an int
    field and "l,ab" a tuple for a tuple field)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=0.05)")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    return key, _Raw(value.strip())


class _Raw(str):
    """A command-line value: text to be parsed with the target field's type."""


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for i, part in enumerate(parts[:-1]):
        nxt = cur.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"config key {'.'.join(parts[: i + 1])!r} is not a section; cannot set {key!r}")
        cur = nxt
    cur[parts[-1]] = value


# ---------------------------------------------------------------------- building + types


def _build(cls: type, d: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(d, Mapping):
        raise ConfigError(f"config key {prefix.rstrip('.') or '<root>'!r} must be a JSON object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in names:
            where = f"section {prefix.rstrip('.')!r}" if prefix else "the top level"
            raise ConfigError(f"unknown config key {prefix + key!r}; known keys in {where}: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in d:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, d[name], prefix + name + ".")
        else:
            kwargs[name] = _coerce(prefix + name, d[name], tp)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - defensive, fields are checked above
        raise ConfigError(str(e)) from None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        inner = _type_name(args[0])
        return f"list of {inner}" if (len(args) == 2 and args[1] is Ellipsis) else f"list of {len(args)} {inner}"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against type ``tp``; a command-line string (_Raw) is parsed first."""
    if tp is Any:
        if isinstance(value, _Raw):
            value = _parse_any(str(value))
        # Lists become tuples: the config is frozen and hashable.
        return tuple(value) if isinstance(value, list) else value
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, _Raw) and value.lower() in ("none", "null", ""))):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, _Raw):
            text = str(value)
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {text!r}") from None
                value = [_Raw(str(v)) if not isinstance(v, str) else _Raw(v) for v in value]
            else:
                value = [_Raw(v.strip()) for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            elem_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {len(value)} values {list(value)!r}")
            elem_types = list(args)
        return tuple(_coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, elem_types)))
    if isinstance(value, _Raw):
        return _parse_scalar(key, str(value), tp)
    # Values from a JSON file: exact types; an int is fine where a float belongs, a bool never
    # stands for a number.
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _parse_scalar(key: str, text: str, tp: Any) -> Any:
    try:
        if tp is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
    except ValueError:
        pass
    raise ConfigError(f"config key {key!r} must be {_type_name(tp)}, got {text!r}")


def _parse_any(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------- validation


def _choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"config key {key!r} must be one of {list(choices)}, got {value!r}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config key {key!r} must be a finite number {bound}, got {value!r}")


#: Views of the augmented terms in "code" order: single-view replacements, then all views.
def expand_aug_terms(aug_terms: Any, views: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The augmented terms as tuples of views whose anchors a MAG output replaces.

    "code" -> one term per view plus the all-views term (4 terms for three views, as the
    official code); "paper" -> the single all-views term (eq. 11); "none" -> no augmented
    term (MAGs are trained by R alone); a list of "l" / "ab+ori"
    strings -> exactly those."""
    views = tuple(views)
    if aug_terms == "code":
        return tuple((v,) for v in views) + (views,)
    if aug_terms == "paper":
        return (views,)
    if aug_terms == "none":
        return ()
    if isinstance(aug_terms, (list, tuple)) and aug_terms:
        out = []
        for i, term in enumerate(aug_terms):
            if not isinstance(term, str) or not term:
                raise ConfigError(f"config key 'metaug.aug_terms[{i}]' must be a string like 'l' or 'ab+ori', got {term!r}")
            parts = tuple(p.strip() for p in term.split("+"))
            for p in parts:
                if p not in views:
                    raise ConfigError(f"config key 'metaug.aug_terms[{i}]': view {p!r} is not one of the model's views {list(views)}")
            out.append(tuple(v for v in views if v in parts))
        return tuple(out)
    raise ConfigError(f"config key 'metaug.aug_terms' must be 'code', 'paper' or a list like ['l', 'ab+ori'], got {aug_terms!r}")


def validate(cfg: TrainConfig) -> None:
    """Range and choice checks across sections; ConfigError names the dotted key."""
    _choice("method", cfg.method, METHODS)
    d, m, b, lo, mg, o, r = cfg.data, cfg.model, cfg.bank, cfg.loss, cfg.metaug, cfg.optim, cfg.run
    if not d.path:
        raise ConfigError("config key 'data.path' must name an image folder or the CIFAR-10 archive")
    for key, v in (("data.cache_size", d.cache_size), ("data.limit", d.limit), ("data.num_workers", d.num_workers)):
        if v < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {v}")
    lo_s, hi_s = d.crop_scale
    if not (0 < lo_s <= hi_s <= 1):
        raise ConfigError(f"config key 'data.crop_scale' must satisfy 0 < min <= max <= 1, got {list(d.crop_scale)}")
    if not (0 < d.crop_ratio[0] <= d.crop_ratio[1]):
        raise ConfigError(f"config key 'data.crop_ratio' must satisfy 0 < min <= max, got {list(d.crop_ratio)}")
    # The encoder section is validated by the library's own EncoderConfig; re-key its errors.
    try:
        cfg.encoder_config()
    except ConfigError as e:
        raise ConfigError(f"model: {e}".replace("config key '", "config key 'model.")) from None
    if len(m.views) < 2:
        raise ConfigError(f"config key 'model.views' needs at least two views for contrastive training, got {list(m.views)}")
    if b.num_negatives < 1:
        raise ConfigError(f"config key 'bank.num_negatives' must be >= 1, got {b.num_negatives}")
    if not (0 <= b.momentum < 1):
        raise ConfigError(f"config key 'bank.momentum' must be in [0, 1), got {b.momentum}")
    _choice("bank.scoring", b.scoring, ("full", "gather", "shared"))
    _choice("loss.cmc", lo.cmc, ("infonce", "nce"))
    _positive("loss.temperature", lo.temperature)
    _positive("loss.beta", lo.beta)
    if lo.margin is not None and not (0 <= lo.margin <= 1):
        raise ConfigError(f"config key 'loss.margin' must be null or in [0, 1], got {lo.margin}")
    _choice("loss.weighting", lo.weighting, ("none", "adaptive"))
    _positive("loss.gamma", lo.gamma, allow_zero=True)
    _positive("loss.phi_dec", lo.phi_dec)
    _positive("metaug.delta", mg.delta, allow_zero=True)
    _positive("metaug.alpha", mg.alpha, allow_zero=True)
    expand_aug_terms(mg.aug_terms, m.views)
    _choice("metaug.reg_mode", mg.reg_mode, ("large", "medium", "small"))
    _positive("metaug.reg_c", mg.reg_c, allow_zero=True)
    _choice("metaug.reg_where", mg.reg_where, ("mag", "both", "off"))
    _choice("metaug.reg_scores", mg.reg_scores, ("mapped", "raw"))
    _positive("metaug.inner_lr", mg.inner_lr, allow_zero=True)
    if mg.meta_every < 1:
        raise ConfigError(f"config key 'metaug.meta_every' must be >= 1, got {mg.meta_every}")
    _positive("metaug.lr", mg.lr, allow_zero=True)
    _positive("metaug.momentum", mg.momentum, allow_zero=True)
    _positive("metaug.weight_decay", mg.weight_decay, allow_zero=True)
    _validate_generators(cfg)
    _choice("optim.optimizer", o.optimizer, ("sgd", "adam"))
    if o.batch_size < 2:
        raise ConfigError(f"config key 'optim.batch_size' must be >= 2, got {o.batch_size}")
    if o.epochs < 1:
        raise ConfigError(f"config key 'optim.epochs' must be >= 1, got {o.epochs}")
    _positive("optim.lr", o.lr, allow_zero=True)
    _positive("optim.momentum", o.momentum, allow_zero=True)
    _positive("optim.weight_decay", o.weight_decay, allow_zero=True)
    _choice("optim.schedule", o.schedule, ("step", "cosine"))
    if list(o.milestones) != sorted(o.milestones) or any(x < 1 for x in o.milestones):
        raise ConfigError(f"config key 'optim.milestones' must be increasing positive epochs, got {list(o.milestones)}")
    _positive("optim.lr_decay", o.lr_decay)
    _positive("optim.warmup_epochs", o.warmup_epochs, allow_zero=True)
    if o.accum_steps < 1 or o.batch_size % o.accum_steps:
        raise ConfigError(f"config key 'optim.accum_steps' must be >= 1 and divide optim.batch_size ({o.batch_size}), got {o.accum_steps}")
    if o.batch_size // o.accum_steps < 2:
        raise ConfigError("config key 'optim.accum_steps' leaves fewer than 2 images per micro-batch (batch norm needs 2)")
    if not r.out_dir:
        raise ConfigError("config key 'run.out_dir' must not be empty")
    try:
        check_device_spec(r.device)
    except MetAugError:
        raise ConfigError(f"config key 'run.device' must be {DEVICE_SPECS}, got {r.device!r}") from None
    _choice("run.precision", r.precision, ("fp32", "bf16"))
    _choice("run.meta_grad", r.meta_grad, META_GRAD_MODES)
    for key, v in (("run.num_threads", r.num_threads), ("run.max_steps", r.max_steps), ("run.seed", r.seed)):
        if v < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {v}")
    for key, v in (("run.log_every", r.log_every), ("run.ckpt_every", r.ckpt_every)):
        if v < 1:
            raise ConfigError(f"config key {key!r} must be >= 1, got {v}")
    _positive("run.stop_after_minutes", r.stop_after_minutes, allow_zero=True)


def _validate_generators(cfg: TrainConfig) -> None:
    i, a = cfg.idaa, cfg.a2
    if i.enabled and not i.vae:
        raise ConfigError("config key 'idaa.vae' must name a VAE folder (metaug-train-vae) when idaa.enabled is true")
    _positive("idaa.eps", i.eps, allow_zero=True)
    if i.steps < 1:
        raise ConfigError(f"config key 'idaa.steps' must be >= 1, got {i.steps}")
    _positive("idaa.weight", i.weight, allow_zero=True)
    if a.enabled and not a.vae:
        raise ConfigError("config key 'a2.vae' must name a VAE folder (metaug-train-vae) when a2.enabled is true")
    _choice("a2.mode", a.mode, A2_MODES)
    _choice("a2.loss", a.loss, A2_LOSSES)
    if a.enabled and a.mode == "search" and not a.cache:
        raise ConfigError("config key 'a2.cache' must name the latents file of metaug-a2-search when a2.mode is 'search'")
    if a.enabled and a.mode == "perturb" and a.sigma == 0 and not a.calibration_model:
        raise ConfigError("config key 'a2.calibration_model' must name a model when a2.sigma is 0 (calibrated)")
    _positive("a2.sigma", a.sigma, allow_zero=True)
    if not (-1 < a.target_cosine < 1):
        raise ConfigError(f"config key 'a2.target_cosine' must be in (-1, 1), got {a.target_cosine}")
    if a.calibration_images < 2:
        raise ConfigError(f"config key 'a2.calibration_images' must be >= 2, got {a.calibration_images}")
    _positive("a2.alpha", a.alpha, allow_zero=True)
    _positive("a2.tau", a.tau)
    _positive("a2.weight", a.weight, allow_zero=True)


#: Keys a resume may change: they affect how the run executes, never the numbers it computes.
RESUMABLE_SECTIONS = ("run",)
RESUMABLE_KEYS = ("data.path", "data.cache_dir", "data.num_workers", "optim.epochs", "optim.accum_steps")


def diff_keys(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    out: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        for f in dataclasses.fields(x):
            vx, vy = getattr(x, f.name), getattr(y, f.name)
            if dataclasses.is_dataclass(vx):
                walk(vx, vy, prefix + f.name + ".")
            elif vx != vy:
                out.append(prefix + f.name)

    walk(a, b, "")
    return out
