"""The view-generator sections of the training config: ``idaa`` (docs/METHODS.md section 8) and
``a2`` (section 9). Either adds one generated view to any method's step. Each section validates
itself on construction (ConfigError naming the dotted key).
"""

from __future__ import annotations

from dataclasses import dataclass

from metaug_features.errors import ConfigError

from .checks import check_at_least, check_choice, check_positive


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

    def __post_init__(self) -> None:
        if self.enabled and not self.vae:
            raise ConfigError("config key 'idaa.vae' must name a VAE folder (metaug-train-vae) when idaa.enabled is true")
        check_positive("idaa.eps", self.eps, allow_zero=True)
        check_at_least("idaa.steps", self.steps, 1)
        check_positive("idaa.weight", self.weight, allow_zero=True)


A2_MODES = ("perturb", "search")
A2_LOSSES = ("infonce", "simclr", "full")

#: The released model whose features A2 measures: ``a2.calibration_model`` (perturb views) and
#: ``metaug-a2-search --model`` (search views). Spelled as its alias, which resolves to the copy
#: shipped in the package, offline, from any directory.
A2_FEATURE_MODEL = "cifar10-conv"
#: Earlier spellings of that model -> its alias. "hub/cifar10-conv" (the default until issue #55)
#: names the same shipped folder (``metaug_features.hub.bundled_model_dir``); reading it as the
#: alias keeps configs saved with it resuming against recipes that now say "cifar10-conv". A
#: folder of that name elsewhere is still reachable as "./hub/cifar10-conv".
_A2_MODEL_SPELLINGS = {"hub/cifar10-conv": A2_FEATURE_MODEL}


@dataclass(frozen=True)
class A2Config:
    """A2 with a VAE generator (docs/METHODS.md section 9; the paper's StyleGAN2 is not available here).

    One generated view per image joins the step: loss = base + ``weight`` x L_A2.
    mode: "perturb" = decode(mu(x) + sigma * noise) online; "search" = latents searched offline
        by ``metaug-a2-search`` (``cache``), decoded and cropped like the batch.
    sigma: perturb noise std in the latent; 0 = calibrate at the start so that the mean cosine
        between ``calibration_model`` features of G(x) and of the perturbed view is
        ``target_cosine`` (over ``calibration_images`` training images; logged in log.jsonl).
    calibration_model: a model folder, alias or Hub id; default ``A2_FEATURE_MODEL``.
    loss: "infonce" (A2-InfoNCE), "simclr" (A2-SimCLR) or "full" (A2-full, SupCon with the
        generated view as a positive; alpha unused); alpha and tau as in docs/METHODS.md section 9.
    """

    enabled: bool = False
    vae: str = ""
    mode: str = "perturb"
    sigma: float = 0.0
    target_cosine: float = 0.85
    calibration_model: str = A2_FEATURE_MODEL
    calibration_images: int = 512
    cache: str = ""
    loss: str = "infonce"
    alpha: float = 0.5
    tau: float = 0.5
    weight: float = 1.0

    def __post_init__(self) -> None:
        # object.__setattr__ because frozen: one spelling per model, so two configs that name the
        # same model compare equal (what a resume checks).
        object.__setattr__(self, "calibration_model", _A2_MODEL_SPELLINGS.get(self.calibration_model, self.calibration_model))
        if self.enabled and not self.vae:
            raise ConfigError("config key 'a2.vae' must name a VAE folder (metaug-train-vae) when a2.enabled is true")
        check_choice("a2.mode", self.mode, A2_MODES)
        check_choice("a2.loss", self.loss, A2_LOSSES)
        if self.enabled and self.mode == "search" and not self.cache:
            raise ConfigError("config key 'a2.cache' must name the latents file of metaug-a2-search when a2.mode is 'search'")
        if self.enabled and self.mode == "perturb" and self.sigma == 0 and not self.calibration_model:
            raise ConfigError("config key 'a2.calibration_model' must name a model when a2.sigma is 0 (calibrated)")
        check_positive("a2.sigma", self.sigma, allow_zero=True)
        if not (-1 < self.target_cosine < 1):
            raise ConfigError(f"config key 'a2.target_cosine' must be in (-1, 1), got {self.target_cosine}")
        check_at_least("a2.calibration_images", self.calibration_images, 2)
        check_positive("a2.alpha", self.alpha, allow_zero=True)
        check_positive("a2.tau", self.tau)
        check_positive("a2.weight", self.weight, allow_zero=True)
