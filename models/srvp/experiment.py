"""The ``srvp`` experiment: config, presets (docs/srvp.md §6, §8), train and evaluate entry points.

Imports only pydantic at module level; the training and evaluation code lives in ``train.py`` / ``evaluate.py``.
Defaults are the Stochastic Moving MNIST values of docs/srvp.md §6.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from dynagen.platform.registry import EvaluateOptions, Experiment, ExperimentConfig, PathText

Dataset = Literal["smmnist", "mmnist", "kth", "human", "bair"]  # mmnist = deterministic Moving MNIST


class SRVPConfig(ExperimentConfig):
    # --- data (docs/srvp.md §5, §6)
    dataset: Dataset = "smmnist"
    data_dir: Optional[PathText] = Field(None, description="MNIST IDX files or mnist.npz / preprocessed dataset; None = sklearn digits (Moving MNIST only)")
    nx: Literal[32, 64] = 64
    ndigits: int = Field(2, ge=1, le=4)
    max_speed: int = Field(4, ge=1)
    digit_size: int = Field(28, ge=4, le=64)
    subsampling: int = Field(8, ge=1, description="Human3.6M: keep one frame in this many")
    num_workers: int = Field(0, ge=0)
    # --- architecture (docs/srvp.md §1)
    architecture: Literal["dcgan", "vgg"] = "dcgan"
    skipco: bool = False
    nf: int = Field(64, ge=1)
    nhx: int = Field(128, ge=1)
    ny: int = Field(20, ge=1)
    nz: int = Field(20, ge=1)
    nh_inf: int = Field(256, ge=1)
    nlayers_inf: int = Field(3, ge=2)
    nh_res: int = Field(512, ge=1)
    nlayers_res: int = Field(4, ge=2)
    res_gain: float = Field(1.41, gt=0)
    nt_inf: int = Field(5, ge=1)
    n_euler_steps: int = Field(1, ge=1, description="K Euler sub-steps per frame in training")
    ablation: Literal["residual", "gru", "mlp", "no_z"] = "residual"
    # --- objective and optimisation (docs/srvp.md §3)
    obs_scale: float = Field(1.0, gt=0)
    beta_y: float = Field(1.0, ge=0)
    beta_z: float = Field(2.0, ge=0)
    l2_res: float = Field(1.0, ge=0)
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(128, ge=1, description="global, split across workers")
    steps: int = Field(1_100_000, ge=1)
    lr_scheduling_burnin: int = Field(1_000_000, ge=0)
    lr_scheduling_n_iter: int = Field(100_000, ge=1)
    seq_len: int = Field(15, ge=2)
    amp: bool = Field(False, description="mixed precision, used only on CUDA")
    log_every: int = Field(100, ge=1)
    # --- validation during training (rank 0) and test (docs/srvp.md §3, §4)
    nt_cond: int = Field(5, ge=1)
    seq_len_test: int = Field(15, ge=2, description="validation clip length")
    val_interval: int = Field(20_000, ge=1)
    batch_size_test: int = Field(16, ge=1)
    n_iter_test: int = Field(25, ge=1)
    n_samples_test: int = Field(100, ge=1, description="validation samples per sequence")
    nt_gen: int = Field(25, ge=2, description="test clip length: nt_cond conditioning + predicted frames")
    n_samples: int = Field(100, ge=1, description="test samples per sequence (best-of-N)")
    n_euler_steps_test: Optional[int] = Field(None, ge=1, description="K at test time (any frame rate); None = training K")

    @property
    def nc(self) -> int:
        return 3 if self.dataset in ("human", "bair") else 1

    @property
    def deterministic(self) -> bool:
        return self.dataset == "mmnist"

    def data_source(self) -> str:
        return self.data_dir or f"generated: {self.dataset} from sklearn digits"

    @model_validator(mode="after")
    def _consistent(self) -> "SRVPConfig":
        if self.nt_inf > min(self.nt_cond, self.seq_len):
            raise ValueError(f"nt_inf ({self.nt_inf}) must not exceed nt_cond ({self.nt_cond}) or seq_len ({self.seq_len})")
        if self.nt_gen <= self.nt_cond or self.seq_len_test <= self.nt_cond:
            raise ValueError("nt_gen and seq_len_test must exceed nt_cond")
        if self.ablation in ("gru", "mlp") and (self.n_euler_steps != 1 or (self.n_euler_steps_test or 1) != 1):
            raise ValueError(f"ablation {self.ablation!r} updates once per frame: n_euler_steps must be 1")
        if self.architecture == "vgg" and self.nx != 64:
            raise ValueError("architecture 'vgg' needs nx = 64")
        if self.dataset in ("smmnist", "mmnist") and self.digit_size > self.nx:
            raise ValueError(f"digit_size ({self.digit_size}) must fit the canvas nx ({self.nx})")
        if self.dataset in ("kth", "human", "bair") and not self.data_dir:
            raise ValueError(f"data_dir is required for dataset {self.dataset!r} (no downloads)")
        return self


_VGG = dict(architecture="vgg", skipco=True, ny=50, nz=50, n_euler_steps=2, beta_z=1.0)
# docs/srvp.md §6: 4 data-loader workers for every dataset. Drawing one 128-clip Moving MNIST batch takes ~0.2 s on one core
# (measured on the 2-core test machine), several GPU steps: in the training process alone it would starve the GPU.
_LOADER = dict(num_workers=4)

PRESETS: dict[str, dict[str, Any]] = {
    # docs/srvp.md §6, one column each. Global batch sizes; iterations = burnin + decay.
    "smmnist": dict(dataset="smmnist", **_LOADER, steps=1_100_000, lr_scheduling_burnin=1_000_000, lr_scheduling_n_iter=100_000),
    "mmnist-deterministic": dict(dataset="mmnist", **_LOADER, steps=900_000, lr_scheduling_burnin=800_000,
                                 lr_scheduling_n_iter=100_000, nt_gen=100, n_samples=1),
    "kth": dict(dataset="kth", **_VGG, **_LOADER, res_gain=1.2, nt_inf=3, nt_cond=10, obs_scale=0.2, batch_size=100,
                steps=200_000, lr_scheduling_burnin=150_000, lr_scheduling_n_iter=50_000, seq_len=20, seq_len_test=30,
                val_interval=5_000, nt_gen=40),
    "human": dict(dataset="human", **_VGG, **_LOADER, res_gain=1.2, nt_inf=3, nt_cond=8, obs_scale=0.2, batch_size=100,
                  steps=350_000, lr_scheduling_burnin=325_000, lr_scheduling_n_iter=25_000, seq_len=16,
                  seq_len_test=53, batch_size_test=8, nt_gen=53, subsampling=8),
    "bair": dict(dataset="bair", **_VGG, **_LOADER, res_gain=1.41, nt_inf=2, nt_cond=2, obs_scale=0.71, batch_size=192,
                 steps=1_500_000, lr_scheduling_burnin=1_000_000, lr_scheduling_n_iter=500_000, seq_len=12,
                 seq_len_test=12, nt_gen=30),
    # docs/srvp.md §8: one 14x14 digit on a 32x32 canvas, a 3-block DCGAN, a few thousand iterations on 2 CPU cores.
    # obs_scale 0.2 (the KTH / Human3.6M value) instead of docs/srvp.md §8's 1.0: measured with sigma_x = 1, 3,000 iterations
    # collapse the posterior (KL_y, KL_z ~ 0.01 nat; w alone draws the digit) and best-of-20 PSNR stays at the
    # all-black level (15.76 vs 15.64 dB); with 0.2 the latents are used within 500 iterations.
    "smmnist-cpu": dict(dataset="smmnist", nx=32, digit_size=14, max_speed=2, ndigits=1, nf=16, nhx=64, ny=10, nz=10,
                        nh_inf=128, nh_res=128, nlayers_res=3, obs_scale=0.2, lr=1e-3, batch_size=16, seq_len=10, steps=3000,
                        lr_scheduling_burnin=2000, lr_scheduling_n_iter=1000, log_every=50, val_interval=1000,
                        seq_len_test=15, n_iter_test=2, n_samples_test=10, nt_gen=15, n_samples=20),
}


class SRVPEvaluateOptions(EvaluateOptions):
    """Options of ``dynagen evaluate srvp`` (the docs/srvp.md §4 test protocol; ``evaluate.py`` documents them, None = its default)."""

    n_test: Optional[int] = Field(None, ge=1, description="test clips (all by default)")
    batch_size: Optional[int] = Field(None, ge=1, description="clips per evaluation batch (16)")
    device: Optional[str] = Field(None, description="cpu, cuda, cuda:1 ... (default: the first GPU, else the CPU)")
    n_euler_steps_test: Optional[int] = Field(None, ge=1, description="Euler sub-steps per frame at test time")
    # TorchScript files are programs: loading one runs its code, by design (README, "Security")
    lpips: Optional[PathText] = Field(None, description="TorchScript file of the LPIPS network (runs its code: use trusted files)")
    fvd: Optional[PathText] = Field(None, description="TorchScript file of the I3D network (runs its code: use trusted files)")


EXPERIMENT = Experiment(
    name="srvp",
    config=SRVPConfig,
    train="dynagen.models.srvp.train:train",
    evaluate="dynagen.models.srvp.evaluate:evaluate",
    evaluate_options=SRVPEvaluateOptions,
    presets=PRESETS,
    backend="torch",
    description="Stochastic Latent Residual Video Prediction (Franceschi et al. 2020) on Moving MNIST, KTH, Human3.6M, BAIR",
    importers={"released": "dynagen.models.srvp.released:import_released"},
    published="dynagen.models.srvp.published:compare",
    analyses={"paper": "dynagen.models.srvp.published:paper"},
    metrics=("train/loss", "train/nll", "train/kl_y", "train/kl_z", "train/l2_res", "lr", "val/psnr"),
    checkpoint_keys=("model",),
)
