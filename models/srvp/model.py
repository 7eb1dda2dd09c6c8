"""Stochastic Latent Residual Video Prediction (Franceschi et al., ICML 2020), as docs/srvp.md describes the code.

Tensors are time-major: videos (T, B, C, H, W) in [0, 1], latents (T, B, d). Time starts at 0 (docs/srvp.md notation).

    h_t  = E(x_t)                                           frame encoder, every frame independently (docs/srvp.md §2.1)
    w    = tanh(W2 sum_{i in S} ReLU(W1 h_i + b1) + b2)     content, permutation-invariant over S (docs/srvp.md §2.2)
    y_0  ~ q(y_0 | h_0..h_{nt_inf-1}) = N(q_y(concat h))     initial state, time-ordered concat (docs/srvp.md §2.3)
    z_t  ~ q(z_t | x_{0:t}) = N(q_z(LSTM(h)_t))   t >= 1   causal posterior filter (docs/srvp.md §2.4)
    z_t  ~ p(z_t | y_{t-1}) = N(p_z(y_{t-1}))               learned prior, used past the observations (docs/srvp.md §2.5)
    y    <- y + dt f([y, z_t])   K = 1/dt sub-steps / frame  residual dynamics, one z_t per frame interval (docs/srvp.md §2.5)
    x^_t = sigmoid(D([w, y_t], skips))                      decoder, same w and skips at every t (docs/srvp.md §2.6)

Ablations the paper reports (``ablation``): ``gru`` (y_t = GRUCell(z_t, y_{t-1})), ``mlp`` (non-residual
y_t = f([y_{t-1}, z_t])), both one update per frame; ``no_z`` (deterministic residual dynamics y <- y + dt f(y)).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dynagen.models.layers import MLP, init_orthogonal
from dynagen.models.srvp.networks import DECODERS, ENCODERS, init_conv_weights

Ablation = Literal["residual", "gru", "mlp", "no_z"]
STD_EPS = 1e-8


def gaussian_parameters(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """docs/srvp.md §1.5: split (mean, raw) on the last axis; std = softplus(raw) + 1e-8, the mean is the raw linear output."""
    mean, raw = params.chunk(2, dim=-1)
    return mean, F.softplus(raw) + STD_EPS


def rsample(params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised sample of N(mean, std^2) from 2d-sized parameters."""
    mean, std = gaussian_parameters(params)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * noise


class SRVPOutput(NamedTuple):
    """What :meth:`SRVP.forward` returns (docs/srvp.md §2, "outputs, in order")."""

    x: torch.Tensor  # (nt, B, C, H, W) decoded frames, or ((nt-1)K+1, ...) with intermediate states
    y: torch.Tensor  # (nt, B, ny) states, or ((nt-1)K+1, B, ny)
    z: torch.Tensor  # (nt-1, B, nz) the z_t used for each frame interval
    w: torch.Tensor  # (B, nh_inf) content variable
    q_y: torch.Tensor  # (B, 2ny) posterior parameters of y_0
    q_z: torch.Tensor  # (min(T_in, nt)-1, B, 2nz) posterior parameters of z_1..
    p_z: torch.Tensor  # (nt-1, B, 2nz) prior parameters of z_1..z_{nt-1}
    res: torch.Tensor  # ((nt-1)K, B, ny) every Euler increment dt*f (empty for the non-residual ablations)


class SRVP(nn.Module):
    def __init__(
        self,
        nx: int = 64,
        nc: int = 1,
        nf: int = 64,
        nhx: int = 128,
        ny: int = 20,
        nz: int = 20,
        skipco: bool = False,
        nt_inf: int = 5,
        nh_inf: int = 256,
        nlayers_inf: int = 3,
        nh_res: int = 512,
        nlayers_res: int = 4,
        archi: Literal["dcgan", "vgg"] = "dcgan",
        res_gain: float = 1.41,
        ablation: Ablation = "residual",
    ):
        super().__init__()
        self.ny, self.nz, self.nt_inf, self.ablation = ny, (0 if ablation == "no_z" else nz), nt_inf, ablation
        # docs/srvp.md §1.2-1.3 frame encoder and decoder; the decoder reads [w, y].
        self.encoder = ENCODERS[archi](nc, nf, nhx, nx)
        self.decoder = DECODERS[archi](nh_inf + ny, nc, nf, nx, skipco)
        # docs/srvp.md §1.4 content variable w (DeepSets), initial state y_0.
        self.w_proj = nn.Sequential(nn.Linear(nhx, nh_inf), nn.ReLU(inplace=True))
        self.w_inf = nn.Sequential(nn.Linear(nh_inf, nh_inf), nn.Tanh())
        self.q_y = MLP(nhx * nt_inf, nh_inf, 2 * ny, nlayers_inf)
        # docs/srvp.md §1.4 posterior filter and prior for z (absent in the deterministic ablation).
        if self.nz > 0:
            self.inf_z = nn.LSTM(nhx, nh_inf, num_layers=1)
            self.q_z = nn.Linear(nh_inf, 2 * self.nz)
            self.p_z = MLP(ny, nh_res, 2 * self.nz, nlayers_res)
        # docs/srvp.md §1.4 transition: the residual function f, or an ablation's non-residual map.
        if ablation == "gru":
            self.dynamics = nn.GRUCell(self.nz, ny)
        else:
            self.dynamics = MLP(ny + self.nz, nh_res, ny, nlayers_res)
        # docs/srvp.md §1.6 initialisation: N(0, 0.02) convs, N(1, 0.02) BN; orthogonal dynamics; PyTorch defaults elsewhere.
        self.encoder.apply(init_conv_weights)
        self.decoder.apply(init_conv_weights)
        if ablation != "gru":
            init_orthogonal(self.dynamics, res_gain)

    @classmethod
    def from_config(cls, config) -> "SRVP":
        """The model of an ``SRVPConfig`` (experiment.py)."""
        return cls(nx=config.nx, nc=config.nc, nf=config.nf, nhx=config.nhx, ny=config.ny, nz=config.nz,
                   skipco=config.skipco, nt_inf=config.nt_inf, nh_inf=config.nh_inf, nlayers_inf=config.nlayers_inf,
                   nh_res=config.nh_res, nlayers_res=config.nlayers_res, archi=config.architecture,
                   res_gain=config.res_gain, ablation=config.ablation)

    # ---------------------------------------------------------------- inference networks (docs/srvp.md §2.1-2.4)
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """docs/srvp.md §2.1: every frame encoded independently; BatchNorm statistics span all frames of all sequences."""
        t, b = x.shape[:2]
        h, skips = self.encoder(x.flatten(0, 1))
        return h.view(t, b, -1), [s.view(t, b, *s.shape[1:]) for s in skips]

    def frame_indices(self, t: int, b: int, count: int, device: torch.device) -> torch.Tensor:
        """(count, B) frame indices for w / skips: random distinct frames of the clip in training, the last ones in eval."""
        if self.training:
            return torch.rand(t, b, device=device).argsort(0)[:count]
        return torch.arange(t - count, t, device=device)[:, None].expand(count, b)

    def infer_w(self, h: torch.Tensor) -> torch.Tensor:
        """docs/srvp.md §2.2: w = tanh(W2 sum_S ReLU(W1 h_i + b1) + b2), S = nt_inf random frames (train) / the last nt_inf (eval)."""
        idx = self.frame_indices(h.shape[0], h.shape[1], self.nt_inf, h.device)
        chosen = h.gather(0, idx[..., None].expand(-1, -1, h.shape[2]))
        return self.w_inf(self.w_proj(chosen).sum(0))

    def select_skips(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """docs/srvp.md §2.1: the skips of one frame per sequence (random in training, the last input frame in eval)."""
        t, b = skips[0].shape[:2]
        idx = self.frame_indices(t, b, 1, skips[0].device)[0]
        batch = torch.arange(b, device=idx.device)
        return [s[idx, batch] for s in skips]

    def infer_y(self, h: torch.Tensor) -> torch.Tensor:
        """docs/srvp.md §2.3: q(y_0) parameters from the first nt_inf encodings concatenated in time order."""
        return self.q_y(h[: self.nt_inf].permute(1, 0, 2).flatten(1))

    def infer_z(self, h: torch.Tensor) -> torch.Tensor:
        """docs/srvp.md §2.4: q(z_t | x_{0:t}) parameters for t = 1..T_in-1 from a unidirectional LSTM (g_0 is unused)."""
        if self.nz == 0:
            return h.new_zeros(h.shape[0] - 1, h.shape[1], 0)
        g, _ = self.inf_z(h)
        return self.q_z(g[1:])

    # ---------------------------------------------------------------- latent dynamics (docs/srvp.md §2.5)
    def step(self, y: torch.Tensor, z: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One transition; returns (new state, Euler increment r = dt f([y, z]) or None when not residual)."""
        if self.ablation == "gru":
            return self.dynamics(z, y), None
        f = self.dynamics(torch.cat([y, z], -1))
        if self.ablation == "mlp":
            return f, None
        r = dt * f
        return y + r, r

    def generate(
        self,
        y0: torch.Tensor,
        q_z: torch.Tensor | None,
        nt: int,
        n_euler_steps: int = 1,
        remove_intermediate: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """docs/srvp.md §2.5: roll y from y_0 over nt frames; returns (y, z, p_z params, res).

        Frame interval t (y_{t-1} -> y_t) takes K = n_euler_steps sub-steps of dt = 1/K, all with the same z_t:
        drawn from the posterior q_z[t-1] while observations exist, else from the prior p(z_t | y_{t-1}).
        Integer counters replace the original float linspace/ceil indexing.
        """
        if isinstance(n_euler_steps, bool) or int(n_euler_steps) != n_euler_steps or n_euler_steps < 1:
            raise ValueError(f"n_euler_steps must be a positive integer, got {n_euler_steps}")
        if self.ablation in ("gru", "mlp") and n_euler_steps != 1:
            raise ValueError(f"ablation {self.ablation!r} is a per-frame map: n_euler_steps must be 1")
        dt = 1.0 / n_euler_steps
        n_observed = 0 if q_z is None else q_z.shape[0]
        y, ys, zs, p_zs, res = y0, [y0], [], [], []
        for t in range(1, nt):
            if self.nz > 0:
                p_z = self.p_z(y)  # prior from the state at the previous integer time
                p_zs.append(p_z)
                if t <= n_observed:
                    z = rsample(q_z[t - 1], generator)
                else:
                    assert not self.training, "sampling z from the prior is only allowed in eval mode (docs/srvp.md §2.5)"
                    z = rsample(p_z, generator)
            else:
                z = y.new_zeros(*y.shape[:-1], 0)
            zs.append(z)
            for k in range(n_euler_steps):
                y, r = self.step(y, z, dt)
                if r is not None:
                    res.append(r)
                if not remove_intermediate or k == n_euler_steps - 1:
                    ys.append(y)
        b = y0.shape[0]
        stack = lambda xs, d: torch.stack(xs) if xs else y0.new_zeros(0, b, d)  # noqa: E731
        return stack(ys, self.ny), stack(zs, self.nz), stack(p_zs, 2 * self.nz), stack(res, self.ny)

    # ---------------------------------------------------------------- decoding (docs/srvp.md §2.6)
    def decode(self, w: torch.Tensor, y: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """x^_t = sigmoid(D([w, y_t], skips)) for every state; w and the skips are shared over time (docs/srvp.md §7.18)."""
        t, b = y.shape[:2]
        v = torch.cat([w.expand(t, b, -1), y], -1).flatten(0, 1)
        tiled_skips = [s.expand(t, *s.shape).flatten(0, 1) for s in skips]
        x = self.decoder(v, tiled_skips)
        return x.view(t, b, *x.shape[1:])

    # ---------------------------------------------------------------- the two operating modes
    def forward(
        self, x: torch.Tensor, nt: int | None = None, n_euler_steps: int = 1, remove_intermediate: bool = True
    ) -> SRVPOutput:
        """Conditioning through the posterior on the T_in given frames, then (eval only) the prior up to nt."""
        nt = x.shape[0] if nt is None else nt
        h, skips = self.encode(x)
        skips = self.select_skips(skips)
        w = self.infer_w(h)
        q_y = self.infer_y(h)
        q_z = self.infer_z(h)[: nt - 1]
        y, z, p_z, res = self.generate(rsample(q_y), q_z, nt, n_euler_steps, remove_intermediate)
        return SRVPOutput(self.decode(w, y, skips), y, z, w, q_y, q_z, p_z, res)

    @torch.no_grad()
    def predict(
        self,
        x_cond: torch.Tensor,
        n_pred: int,
        n_euler_steps: int = 1,
        n_euler_steps_test: int | None = None,
        content: torch.Tensor | None = None,
        y_start: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Test-time prediction (docs/srvp.md §2, test.py), in eval mode: (nt_cond + n_pred, B, C, H, W) clamped to [0, 1].

        The conditioning frames are reconstructed through the posterior (K = n_euler_steps, the training value);
        the n_pred future frames come from the prior with K_test = n_euler_steps_test (any frame rate).
        ``content``: frames whose w and skips replace x_cond's (content swap, dynamics from x_cond).
        ``y_start``: overrides the state at the last conditioning frame (used by :meth:`interpolate`).
        """
        assert not self.training, "predict runs in eval mode (BatchNorm running statistics, prior sampling)"
        h, skips = self.encode(x_cond)
        if content is not None:
            h_content, skips = self.encode(content)
            w = self.infer_w(h_content)
        else:
            w = self.infer_w(h)
        skips = self.select_skips(skips)
        y_cond, *_ = self.generate(rsample(self.infer_y(h), generator), self.infer_z(h), len(x_cond), n_euler_steps,
                                   generator=generator)
        start = y_cond[-1] if y_start is None else y_start
        y_pred, *_ = self.generate(start, None, n_pred + 1, n_euler_steps_test or n_euler_steps, generator=generator)
        return self.decode(w, torch.cat([y_cond, y_pred[1:]]), skips).clamp(0, 1)

    @torch.no_grad()
    def swap_content(self, x_content: torch.Tensor, x_dynamics: torch.Tensor, n_pred: int, **kwargs) -> torch.Tensor:
        """Content swap: w and skips from ``x_content``'s frames, the states y and z's from ``x_dynamics``."""
        return self.predict(x_dynamics, n_pred, content=x_content, **kwargs)

    @torch.no_grad()
    def interpolate(
        self, x_a: torch.Tensor, x_b: torch.Tensor, n_pred: int, alphas: list[float], n_euler_steps: int = 1, seed: int = 0
    ) -> torch.Tensor:
        """Interpolate two dynamics: y at the last conditioning frame is (1-a) y_a + a y_b, content from video a.

        Every alpha replays the same noise (one seeded generator each), so the outputs vary only through y.
        Returns (len(alphas), nt_cond + n_pred, B, C, H, W).
        """
        def start_state(x: torch.Tensor) -> torch.Tensor:
            h, _ = self.encode(x)
            generator = torch.Generator(device=x.device).manual_seed(seed)
            y, *_ = self.generate(rsample(self.infer_y(h), generator), self.infer_z(h), len(x), n_euler_steps,
                                  generator=generator)
            return y[-1]

        y_a, y_b = start_state(x_a), start_state(x_b)
        return torch.stack([
            self.predict(x_a, n_pred, n_euler_steps, y_start=(1 - a) * y_a + a * y_b,
                         generator=torch.Generator(device=x_a.device).manual_seed(seed))
            for a in alphas
        ])
