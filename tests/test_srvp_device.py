"""GPU readiness of SRVP checked on a CPU-only machine.

* Tensor factories: in training, validation, sampling and evaluation, every ``torch.zeros / arange / rand ...``
  call in SRVP's code must name its ``device=``: one that does not lands on the CPU and breaks on CUDA. The calls
  are intercepted (a TorchFunctionMode) during a real (tiny) training run and evaluation.
* The ``meta`` device (shapes only, no data): the same code runs there end to end, so it holds no host sync
  (``.item()``, ``bool(tensor)``: a stall per step on a GPU, e.g. torch.distributions' argument checks) and no
  ``.numpy()`` of a device tensor, and every output stays on the input's device. Float64 inputs stay float64.
* Mixed precision: CUDA's float16 autocast cannot run here; CPU autocast (bfloat16) runs the same model and loss
  code. The model's outputs come out in low precision, and the docs/srvp.md §3 loss must still be computed in float32: its terms
  are checked against their closed forms evaluated in float64 on the same outputs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from dynagen.models.srvp import metrics as M
from dynagen.models.srvp.evaluate import baselines, sample_predictions
from dynagen.models.srvp.experiment import EXPERIMENT, SRVPConfig
from dynagen.models.srvp.loss import srvp_loss
from dynagen.models.srvp.model import SRVP
from dynagen.platform.context import LocalContext, load_state
from tests.test_srvp_train import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SRVP_CODE = Path(M.__file__).resolve().parent
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint, torch.randperm,
             torch.arange, torch.linspace, torch.eye, torch.tensor}


class FactoryCalls(TorchFunctionMode):
    """Records the tensor factory calls made from SRVP's own files, and those without a ``device=`` argument."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []
        self.without_device: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        caller = sys._getframe(1)
        if func in FACTORIES and Path(caller.f_code.co_filename).resolve().parent == SRVP_CODE:
            where = f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno} torch.{func.__name__}"
            self.seen.append(where)
            if "device" not in kwargs:
                self.without_device.append(where)
        return func(*args, **kwargs)


def training_step_sampling_and_metrics(config: SRVPConfig, device: str, dtype: torch.dtype) -> None:
    """One docs/srvp.md §3 training step, §4 prior sampling at another frame rate and the §4 metrics, with output checks."""
    torch.manual_seed(0)
    model = SRVP.from_config(config).to(device=device, dtype=dtype)
    x = torch.rand(config.seq_len, 3, 1, config.nx, config.nx, device=device, dtype=dtype)

    out = model(x, n_euler_steps=2)  # training mode: random frame choice, posterior samples, K = 2 sub-steps
    terms = srvp_loss(x, out, config.obs_scale, config.beta_y, config.beta_z, config.l2_res)
    terms["loss"].backward()
    assert all(p.grad.device.type == device for p in model.parameters())

    model.eval()
    cond, future = x[: config.nt_cond], x[config.nt_cond :]
    preds = sample_predictions(model, x, config.nt_cond, 2, 1, 3)  # K = 3 at test time
    assert preds.device.type == device and preds.dtype == dtype
    for pred in [*preds, *baselines(cond, len(future)).values()]:
        for score in (M.frame_psnr(pred, future), M.frame_ssim(pred, future)):
            assert score.device.type == device and score.shape == future.shape[:2]
    _, curve, best = M.best_of_n(torch.stack([M.frame_psnr(p, future) for p in preds]))
    assert curve.device.type == device and best.device.type == device


def test_tensor_factories_in_srvp_code_name_their_device(tmp_path):
    config = SRVPConfig(**{**TINY, "steps": 2, "lr_scheduling_burnin": 2, "log_every": 1, "val_interval": 2})
    calls = FactoryCalls()
    with calls:
        training_step_sampling_and_metrics(config, "cpu", torch.float32)
        # and the real loops: training with validation and a checkpoint, then the docs/srvp.md §4 evaluation
        EXPERIMENT.train(config, LocalContext(tmp_path / "run", tensorboard=False))
        EXPERIMENT.evaluate(config, load_state(tmp_path / "run" / "checkpoint"), tmp_path / "eval", samples=2, n_test=4)
    assert len(calls.seen) > 10  # the interception works: e.g. model.py's frame choice and noise, metrics' window
    assert calls.without_device == []


@pytest.mark.parametrize("device, dtype", [("meta", torch.float32), ("cpu", torch.float64)])
def test_training_step_sampling_and_metrics_follow_the_input_device_and_dtype(device, dtype):
    training_step_sampling_and_metrics(SRVPConfig(**TINY), device, dtype)


def test_loss_is_float32_under_autocast():
    config = SRVPConfig(**TINY)
    torch.manual_seed(0)
    model = SRVP.from_config(config)
    x = torch.rand(config.seq_len, 4, 1, config.nx, config.nx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, n_euler_steps=2)
    assert out.x.dtype == torch.bfloat16  # autocast did engage: the decoder ran in low precision
    s, batch = config.obs_scale, x.shape[1]
    terms = srvp_loss(x, out, s, config.beta_y, config.beta_z, config.l2_res)
    assert all(term.dtype == torch.float32 for term in terms.values())

    # docs/srvp.md §3 closed forms in float64 on the same low-precision outputs. A sum over the 5,120 pixels or the KL terms
    # accumulated in bfloat16 (8-bit mantissa) would be off by far more than float32 rounding.
    x_hat = out.x.double()
    nll = (0.5 * ((x.double() - x_hat) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)).sum() / batch
    mean, raw = out.q_y.double().chunk(2, -1)
    std = torch.nn.functional.softplus(raw) + 1e-8
    kl_y = (-torch.log(std) + (std**2 + mean**2) / 2 - 0.5).sum() / batch
    l2 = out.res.double().norm(dim=-1).sum() / batch
    torch.testing.assert_close(terms["nll"].double(), nll, rtol=1e-5, atol=0)
    torch.testing.assert_close(terms["kl_y"].double(), kl_y, rtol=1e-5, atol=0)
    torch.testing.assert_close(terms["l2_res"].double(), l2, rtol=1e-5, atol=0)

    terms["loss"].backward()
    assert all(p.grad is None or (p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()) for p in model.parameters())
