"""GAN(TK)² as a dynagen experiment: config, presets, train and evaluate (Franceschi et al., ICML 2022).

Particles x_i are pushed by a discriminator that is either a finite network (``width > 0``, docs/gantk.md §2)
or its infinite-width limit (``width == 0``: the analytic NTK/NNGP kernel of the *same* stax
description, docs/gantk.md §1), with the losses of docs/gantk.md §3. The width regime is a width, not a loss name, so a
sweep can put ``width: {grid: [0, 128, 512]}`` next to ``loss: {grid: [ipm, lsgan]}`` without running
the (width-independent) infinite discriminators once per finite width: ``loss=ipm, width=0`` is the
docs/gantk.md's ``inf_ipm``, ``lsgan`` ↔ ``inf_lsgan``, ``vanilla`` ↔ ``inf_vanilla`` / ``inf_vanilla_ode``
(``vanilla_solver``); ``hinge`` has no infinite counterpart.

This module imports only pydantic: the heavy JAX / neural-tangents code lives in the sibling modules
and is imported inside :func:`train` and :func:`evaluate`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from dynagen.platform.registry import Experiment, ExperimentConfig, PathText

# docs/gantk.md §6.2 arch configs (+ GELU and a tanh-like erf, §10's illustrations, for the activation sweep).
# A named arch fills in these fields; fields given explicitly (preset, file, --set, sweep) still win.
ARCHS: dict[str, dict[str, Any]] = {
    "relu": {"activation": "relu", "depth": 3, "sigma_w": 1.0, "sigma_b": 1.0, "kernel": "ntk"},
    "relu_highbias": {"activation": "relu", "depth": 3, "sigma_w": 1.0, "sigma_b": 4.0, "kernel": "ntk"},
    "relu_nobias": {"activation": "relu", "depth": 3, "sigma_w": 1.0, "sigma_b": 0.0, "kernel": "ntk"},
    "sigmoid": {"activation": "sigmoid_like", "depth": 3, "sigma_w": 1.0, "sigma_b": 0.2, "kernel": "ntk"},
    "gelu": {"activation": "gelu", "depth": 3, "sigma_w": 1.0, "sigma_b": 1.0, "kernel": "ntk"},
    "erf": {"activation": "erf", "act_c": 0.0, "depth": 3, "sigma_w": 1.0, "sigma_b": 1.0, "kernel": "ntk"},
    "rbf": {"activation": "rbf", "act_gamma": 0.5, "depth": 1, "sigma_w": 1.0, "sigma_b": 0.0, "kernel": "nngp"},
}

Activation = Literal[
    "relu", "leaky_relu", "abs", "gelu", "erf", "tanh_like", "sigmoid_like", "sin", "rbf", "arbf", "identity"
]
Target = Literal[
    "eight_gaussians", "ring", "modes_1d", "modes_1d_overlap", "two_couples_2d", "two_singles_1d",
    "image_density", "digits", "mnist", "celeba",
]


class GanNtkConfig(ExperimentConfig):
    """Flat config; names follow docs/gantk.md §6 where sensible (η = ``lr``, discr_eta = ``lr_d``, t = ``t``)."""

    # --- target and particles (docs/gantk.md §4) ---
    target: Target = Field("eight_gaussians", description="target distribution (docs/gantk.md §4)")
    n_particles: int = Field(500, ge=1, description="N generated particles (source N(0, I) unless the toy set fixes them)")
    n_targets: int = Field(500, ge=1, description="M target samples (fixed set, drawn once)")
    n_modes: int = Field(8, ge=1, description="components of the `ring` target (eight_gaussians: 8)")
    ring_radius: float = Field(5.0, gt=0, description="radius of the ring targets")
    ring_std: float = Field(0.5, gt=0, description="std of each ring component")
    source_image: PathText | None = Field(None, description="grayscale image defining the source density (image_density)")
    target_image: PathText | None = Field(None, description="grayscale image defining the target density (image_density)")
    data_path: PathText | None = Field(None, description="MNIST idx file / folder, or folder of CelebA images")

    # --- discriminator architecture (docs/gantk.md §1.1, §6.2) ---
    arch: Literal["custom", "relu", "relu_highbias", "relu_nobias", "sigmoid", "gelu", "erf", "rbf"] = Field(
        "relu", description="named architecture filling activation/depth/sigma_w/sigma_b/kernel (explicit fields win)"
    )
    activation: Activation = "relu"
    depth: int = Field(3, ge=1, le=32, description="number of nonlinearities (hidden layers)")
    width: int = Field(0, ge=0, description="hidden width of the finite discriminator; 0 = infinite width (analytic kernel)")
    sigma_w: float = Field(1.0, gt=0)
    sigma_b: float = Field(1.0, ge=0, description="bias std; 0 switches biases off")
    parameterization: Literal["ntk", "standard"] = "ntk"
    kernel: Literal["ntk", "nngp"] = Field(
        "ntk", description="nngp: NNGP kernel at infinite width; at finite width only the read-out layer is trained"
    )
    act_a: float = Field(1.0, description="a in erf/sin activations a·φ(b·x)+c")
    act_b: float = Field(1.0, description="b in erf/sin activations")
    act_c: float = Field(1.0, description="c in erf/sin activations")
    act_gamma: float = Field(1.0, gt=0, description="γ of the rbf/arbf activation")
    act_alpha: float = Field(0.2, description="negative slope of leaky_relu")

    # --- losses and discriminator training (docs/gantk.md §1.2, §2, §3) ---
    loss: Literal["ipm", "lsgan", "vanilla", "hinge"] = "ipm"
    t: float = Field(1.0, gt=0, description="infinite-width discriminator time (discr_integration_time)")
    vanilla_solver: Literal["lambert_w", "ode"] = Field(
        "lambert_w", description="infinite vanilla: inf_vanilla (Lambert-W eigenbasis) or inf_vanilla_ode"
    )
    lr_d: float = Field(0.1, gt=0, description="finite discriminator learning rate (discr_eta)")
    nb_d_steps: int = Field(
        1, ge=1, description="discriminator steps per generator step (released code: 1; nb_d_steps·lr_d = t matches inf_*)"
    )
    d_optimizer: Literal["sgd", "adam"] = "sgd"
    reset_d: bool = Field(False, description="re-initialise the finite discriminator at every generator step")
    antisymmetric: bool = Field(True, description="f = (g_θ1 − g_θ2)/√2 with θ1 = θ2 at init, so f₀ ≡ 0")

    # --- particle flow and logging (docs/gantk.md §1.3, §5) ---
    lr: float = Field(1000.0, gt=0, description="particle learning rate η: x ← x − η·(1/N)·∇ℓ(x)")
    steps: int = Field(50_000, ge=0, description="generator steps")
    log_every: int = Field(100, ge=1, description="metrics every this many generator steps (log_steps)")
    plot_every: int = Field(0, ge=0, description="PNG/TensorBoard image every this many steps (0: first and last only)")
    save_every: int = Field(5000, ge=0, description="particle snapshot .npz every this many steps (0: last only)")
    sinkhorn_blur: float = Field(1e-3, gt=0)
    precision: Literal["float32", "float64"] = "float32"
    kernel_block: int = Field(
        4096, ge=0, description="kernel matrices with more points than this are computed in blocks of this many "
        "(memory ∝ block², not N·(N+M); sums in another order); 0 = never",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_arch(cls, data: Any) -> Any:
        arch = data.get("arch", "relu") if isinstance(data, dict) else None
        if isinstance(arch, str) and arch in ARCHS:  # anything else is left to the `arch` field's own validation
            return {**ARCHS[arch], **data}
        return data

    @model_validator(mode="after")
    def _check_regime(self) -> "GanNtkConfig":
        if self.width == 0 and self.loss == "hinge":
            raise ValueError("loss: hinge has no infinite-width counterpart (width=0); allowed: ipm, lsgan, vanilla")
        if self.width == 0 and self.parameterization == "standard":
            raise ValueError("parameterization: standard has a width-dependent kernel; use width > 0 or allowed: ntk")
        if self.target == "image_density" and self.target_image is None:
            raise ValueError("target_image: required for target=image_density (a grayscale image file)")
        if self.target in ("mnist", "celeba") and self.data_path is None:
            raise ValueError(f"data_path: required for target={self.target} (no downloads: point to local files)")
        return self

    @property
    def infinite(self) -> bool:
        return self.width == 0

    def data_source(self) -> str:
        return self.data_path or f"generated: {self.target}"


_EIGHT = {"target": "eight_gaussians", "n_particles": 500, "n_targets": 500, "arch": "relu"}
_IMAGES = {"n_particles": 1024, "n_targets": 1024, "width": 0, "lr": 100.0, "t": 1000.0}
_TOY = {"arch": "relu", "lr": 0.5, "steps": 1000, "log_every": 50, "plot_every": 250, "save_every": 0}
_ADE_FINITE = {"lr_d": 0.1, "nb_d_steps": 10, "reset_d": True, "antisymmetric": True}

# docs/gantk.md §6.4: the resolved loss × arch × data combinations (50 000 steps like the original).
PRESETS: dict[str, dict[str, Any]] = {
    "eight_gaussians-inf_ipm": {**_EIGHT, "loss": "ipm", "width": 0, "lr": 1000.0, "t": 1.0},
    "eight_gaussians-inf_ipm-rbf": {**_EIGHT, "arch": "rbf", "loss": "ipm", "width": 0, "lr": 1000.0, "t": 1.0},
    "eight_gaussians-inf_lsgan": {**_EIGHT, "loss": "lsgan", "width": 0, "lr": 1000.0, "t": 1.0},
    "eight_gaussians-ipm": {**_EIGHT, "loss": "ipm", "width": 128, "lr": 100.0, "lr_d": 0.01, "antisymmetric": True},
    "eight_gaussians-ipm_reset": {
        **_EIGHT, "loss": "ipm", "width": 128, "lr": 1000.0, "lr_d": 0.1, "reset_d": True, "antisymmetric": True,
    },
    "eight_gaussians-lsgan": {**_EIGHT, "loss": "lsgan", "width": 128, "lr": 1.0, "lr_d": 0.1, "antisymmetric": False},
    "digits-inf_ipm": {**_IMAGES, "target": "digits", "arch": "relu", "loss": "ipm"},
    "mnist-inf_ipm": {**_IMAGES, "target": "mnist", "arch": "relu", "loss": "ipm"},
    "celeba-inf_ipm": {**_IMAGES, "target": "celeba", "arch": "relu_highbias", "loss": "ipm"},
    # docs/gantk.md §6.5: the adequation plots' fixed 1-D/2-D sets (§4), as flows. Finite discriminators as in
    # `ade1d_config` (3-layer ReLU, σ_b 1, antisymmetric, SGD 0.1 × 10 steps = t = 1, re-initialised every step
    # so f matches its infinite-width counterpart); infinite LSGAN at 4t. η = 0.5: with N = 1–5 particles the
    # 8-Gaussian η = 1000 moves them by ~100 per step and diverges within 20 steps.
    "modes_1d_overlap-ipm": {**_TOY, "target": "modes_1d_overlap", "loss": "ipm", "width": 128, **_ADE_FINITE},
    "modes_1d_overlap-inf_ipm": {**_TOY, "target": "modes_1d_overlap", "loss": "ipm", "width": 0, "t": 1.0},
    "modes_1d-lsgan": {**_TOY, "target": "modes_1d", "loss": "lsgan", "width": 512, **_ADE_FINITE},
    "modes_1d-inf_lsgan": {**_TOY, "target": "modes_1d", "loss": "lsgan", "width": 0, "t": 4.0},
    "two_couples_2d-inf_ipm": {**_TOY, "target": "two_couples_2d", "loss": "ipm", "width": 0, "t": 1.0},
    "two_singles_1d-inf_ipm": {**_TOY, "target": "two_singles_1d", "loss": "ipm", "width": 0, "t": 1.0},
    # Small enough for tests and `make demo` on 2 CPU cores (a few seconds of compute).
    "eight_gaussians-cpu": {
        "target": "eight_gaussians", "arch": "relu", "loss": "ipm", "width": 0, "n_particles": 128,
        "n_targets": 128, "lr": 256.0, "t": 1.0, "steps": 200, "log_every": 50,
    },
}


EXPERIMENT = Experiment(
    name="gan-ntk",
    config=GanNtkConfig,
    train="dynagen.models.gantk.train:train",
    train_seeds="dynagen.models.gantk.train:train_seeds",
    evaluate="dynagen.models.gantk.evaluate:evaluate",
    presets=PRESETS,
    backend="jax",
    description="GAN(TK)²: particle flows driven by finite and infinite-width (NTK) discriminators",
    analyses={"agreement": "dynagen.models.gantk.analyses:agreement", "paper": "dynagen.models.gantk.published:paper"},
    published="dynagen.models.gantk.published:compare",
    metrics=("sinkhorn", "energy", "mmd2", "gen_loss", "ntk_rel_error"),
    checkpoint_keys=("particles", "source", "targets"),
)
