"""The variable-separation model (docs/pde.md §1.1, §2), top to bottom.

A sequence is explained as u(p, t) = D(w(p), y(t)):

    S   = E_S(x_{0:τ})                       content ("spatial") code, computed once and held fixed (docs/pde.md §7.4)
    y_0 = E_T(x_{0:τ})                       initial dynamics code; E_S and E_T share no weights
    y_{k+1} = R(y_k)                         the temporal ODE dy/dt = f(y), one application per frame
    x̂_k = D(S, y_k) = Dec(concat[S, y_k])  or  Dec(S ⊙ y_k)  ("mul" mixing: the literal w(p)·y(t))

With offset = τ (every dataset but SST) x̂_0 is aligned with the *first* conditioning frame x_0 (docs/pde.md §0.2):
the model reconstructs the τ conditioning frames, then forecasts; evaluation drops the first τ outputs.

Two temporal models:
- ``EulerBlocks`` (default, the original's): R = Φ_{n_blocks} ∘ … ∘ Φ_1 with Φ_b(y) = y + g_b(y), i.e.
  one explicit-Euler step of size 1 per block and frame (docs/pde.md §0.1). For g(y) = Ay, y_k = (I + A)^k y_0.
- ``ODEFlow`` (an extension none of the originals has): one learned vector field f integrated in
  continuous time with ``torchdiffeq.odeint`` (rk4 with a fixed step, or adaptive dopri5; optionally
  the adjoint method), one unit of time per frame, so for f(y) = Ay, y_k = exp(kA) y_0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from dynagen.models.layers import init_orthogonal
from dynagen.models.pde import networks as nets
from dynagen.models.pde.data import frame_shape


class EulerBlocks(nn.Module):
    """R(y) = Φ_n ∘ … ∘ Φ_1 (y), Φ_b(y) = y + g_b(y): the original's discretised ODE (docs/pde.md §1.2, §2)."""

    def __init__(self, fields: list[nn.Module]):
        super().__init__()
        self.fields = nn.ModuleList(fields)

    def step(self, y: torch.Tensor) -> torch.Tensor:
        for g in self.fields:
            y = y + g(y)
        return y

    def rollout(self, y0: torch.Tensor, n: int) -> torch.Tensor:
        """(B, n, *dims): y_0 … y_{n-1}, one R application per frame."""
        ys = [y0]
        for _ in range(n - 1):
            ys.append(self.step(ys[-1]))
        return torch.stack(ys, 1)


class ODEFlow(nn.Module):
    """dy/dt = f(y), integrated by torchdiffeq with one time unit per frame."""

    def __init__(self, field: nn.Module, method: str = "rk4", step_size: float = 1.0, tol: float = 1e-5, adjoint: bool = False):
        super().__init__()
        self.field = field
        self.method, self.step_size, self.tol, self.adjoint = method, step_size, tol, adjoint

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.field(y)

    def rollout(self, y0: torch.Tensor, n: int) -> torch.Tensor:
        if n == 1:
            return y0[:, None]
        times = torch.arange(n, dtype=y0.dtype, device=y0.device)
        solve = odeint_adjoint if self.adjoint else odeint
        options = {"step_size": self.step_size} if self.method == "rk4" else None
        ys = solve(self, y0, times, method=self.method, rtol=self.tol, atol=self.tol, options=options)
        return ys.movedim(0, 1)


class Forecast(NamedTuple):
    forecasts: torch.Tensor  # (B, n, C, H, W) or (B, n, C, P)
    t_codes: torch.Tensor  # (B, n, *dim_T)
    s_code: object  # the S code, or (code, skips) with skip connections


class TrainingOutputs(NamedTuple):
    forecast: Forecast  # rolled out from the conditioning frames with S_old
    s_old: object  # E_S(x_{0:τ})
    s_new: object  # E_S(x_{L-τ:L})
    reconstruction: torch.Tensor  # D(S_old, E_T(x_{t'-τ:t'})), the auto-encoding of docs/pde.md §3.3


def split_content(s) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    return (s[0], s[1]) if isinstance(s, tuple) else (s, None)


class SeparableNetwork(nn.Module):
    def __init__(self, Es: nn.Module, Et: nn.Module, temporal: nn.Module, decoder: nn.Module, mixing: str, nt_cond: int, offset: int):
        super().__init__()
        self.Es, self.Et, self.temporal, self.decoder = Es, Et, temporal, decoder
        self.mixing, self.nt_cond, self.offset = mixing, nt_cond, offset

    def decode(self, s, y: torch.Tensor) -> torch.Tensor:
        code, skips = split_content(s)
        z = code * y if self.mixing == "mul" else torch.cat([code, y], 1)
        return self.decoder(z, skips)

    def get_forecast(self, cond: torch.Tensor, n_forecast: int, init_t_code=None, init_s_code=None) -> Forecast:
        """Frames 0 … n_forecast−1 from the τ conditioning frames only (docs/pde.md §1.1); S is held fixed over time."""
        s = self.Es(cond) if init_s_code is None else init_s_code
        y0 = self.Et(cond) if init_t_code is None else init_t_code
        t_codes = self.temporal.rollout(y0, n_forecast)
        forecasts = torch.stack([self.decode(s, t_codes[:, k]) for k in range(n_forecast)], 1)
        return Forecast(forecasts, t_codes, s)

    def predict(self, cond: torch.Tensor, horizon: int, init_s_code=None) -> torch.Tensor:
        """The ``horizon`` frames after the conditioning ones (drops the τ reconstructions when offset = τ)."""
        out = self.get_forecast(cond, horizon + self.offset, init_s_code=init_s_code)
        return out.forecasts[:, self.offset :]

    def forward(self, window: torch.Tensor, ae_time: int) -> TrainingOutputs:
        """Everything the docs/pde.md §3 losses need from one training window x_0 … x_{L−1} and the drawn t′."""
        tau, length = self.nt_cond, window.shape[1]
        cond = window[:, :tau]
        s_old = self.Es(cond)
        s_new = self.Es(window[:, length - tau :])
        reconstruction = self.decode(s_old, self.Et(window[:, ae_time - tau : ae_time]))
        forecast = self.get_forecast(cond, length - tau + self.offset, init_s_code=s_old)
        return TrainingOutputs(forecast, s_old, s_new, reconstruction)


def build_encoder(config, code: int, skip: bool) -> nn.Module:
    shape = frame_shape(config)
    c_in = config.nt_cond * shape[0]
    kind = config.encoder
    if kind == "mlp":
        return nets.MLPEncoder(config.nt_cond, shape, config.enc_hidden_size, code, config.enc_n_layers)
    if kind == "dcgan":
        return nets.DCGAN64Encoder(c_in, code, config.enc_hidden_size, skip)
    if kind == "vgg":
        return nets.VGG64Encoder(c_in, code, config.enc_hidden_size, shape[-1], skip)
    if kind == "resnet":
        return nets.ResNet18Encoder(c_in, code)
    return nets.EncoderSST(c_in, code, skip)


def build_decoder(config) -> nn.Module:
    shape = frame_shape(config)
    # docs/pde.md §1.5: sigmoid outputs for data in [0, 1]; TaxiBJ and the standardised SST are left unbounded.
    last = nn.Sigmoid() if config.dataset in ("wave", "wave_partial", "mnist", "chairs") else nn.Identity()
    code = config.code_size_t if config.mixing == "mul" else config.code_size_s + config.code_size_t
    kind = config.decoder
    if kind == "mlp":
        return nets.MLPDecoder(code, shape, config.dec_hidden_size, config.dec_n_layers, last)
    if kind == "dcgan":
        return nets.DCGAN64Decoder(code, shape[0], config.dec_hidden_size, last, config.skipco)
    if kind == "vgg":
        return nets.VGG64Decoder(code, shape[0], config.dec_hidden_size, shape[-1], last, config.skipco)
    return nets.DecoderSST(config.code_size_s + config.code_size_t, shape[0], config.skipco)


def build_temporal(config) -> nn.Module:
    field_type = nets.ConvField if config.encoder == "encoderSST" else nets.MLPField
    if config.temporal_model == "euler_blocks":
        temporal = EulerBlocks([field_type(config.code_size_t, config.res_hidden_size) for _ in range(config.n_blocks)])
    else:
        field = field_type(config.code_size_t, config.res_hidden_size)
        temporal = ODEFlow(field, config.ode_method, config.ode_step_size, config.ode_tol, config.adjoint)
    return temporal


def build_model(config, initialise: bool = True) -> SeparableNetwork:
    """The separable network for ``config`` (an ``experiment.PDEConfig``), initialised as in docs/pde.md §1.2/§1.5."""
    Es = nets.ConstantS(config.code_size_t) if config.no_s else build_encoder(config, config.code_size_s, config.skipco)
    Et = build_encoder(config, config.code_size_t, skip=False)
    model = SeparableNetwork(
        Es, Et, build_temporal(config), build_decoder(config), config.mixing, config.nt_cond, config.resolved_offset
    )
    if initialise:
        for part in (model.Es, model.Et, model.decoder):
            nets.init_normal(part, config.gain_encoder)
        init_orthogonal(model.temporal, config.gain_resnet)
    return model
