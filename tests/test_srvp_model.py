"""SRVP model properties (docs/srvp.md §7.1-7.5, 7.7-7.10, 7.14, 7.18), ablations, frame rates, content swap, interpolation.

Tiny models throughout (32x32 frames, a few channels) except where the spec's full sizes are the point.
"""

from __future__ import annotations

import pytest
import torch

from dynagen.models.srvp.experiment import PRESETS, SRVPConfig
from dynagen.models.srvp.model import SRVP, gaussian_parameters
from dynagen.models.srvp.networks import DCGANDecoder, DCGANEncoder, VGGDecoder, VGGEncoder

TINY = dict(nx=32, nc=1, nf=4, nhx=16, ny=6, nz=5, nt_inf=2, nh_inf=12, nh_res=16, nlayers_res=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**overrides) -> SRVP:
    torch.manual_seed(0)
    return SRVP(**{**TINY, **overrides})


def video(t=6, b=3, nx=32, nc=1, seed=1) -> torch.Tensor:
    return torch.rand(t, b, nc, nx, nx, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [1, 2])
def test_forward_shapes(k):  # docs/srvp.md §7.1
    model, x = tiny(), video()
    t, b = x.shape[:2]
    out = model(x, n_euler_steps=k)
    assert out.x.shape == x.shape and out.x.min() > 0 and out.x.max() < 1
    assert out.y.shape == (t, b, 6)
    assert out.z.shape == (t - 1, b, 5) and out.q_z.shape == out.p_z.shape == (t - 1, b, 10)
    assert out.w.shape == (b, 12) and out.q_y.shape == (b, 12)
    assert out.res.shape == ((t - 1) * k, b, 6)
    full = model(x, n_euler_steps=k, remove_intermediate=False)
    assert full.x.shape[0] == full.y.shape[0] == (t - 1) * k + 1


def test_spec_example_t15_k2_keeps_29_frames():  # docs/srvp.md §7.1 [verified] numbers
    out = tiny()(video(t=15, b=2), n_euler_steps=2, remove_intermediate=False)
    assert out.x.shape[0] == 29 and out.res.shape[0] == 28


def test_encoder_and_skip_shapes():  # docs/srvp.md §7.2
    x64 = torch.rand(2, 1, 64, 64)
    h, skips = DCGANEncoder(1, 4, 128).eval()(x64)
    assert h.shape == (2, 128) and h.abs().max() < 1
    assert [tuple(s.shape[1:]) for s in skips] == [(32, 4, 4), (16, 8, 8), (8, 16, 16), (4, 32, 32)]
    h, skips = VGGEncoder(1, 4, 128).eval()(x64)
    assert h.shape == (2, 128) and h.abs().max() < 1
    assert [tuple(s.shape[1:]) for s in skips] == [(32, 8, 8), (16, 16, 16), (8, 32, 32), (4, 64, 64)]
    # decoders consume those skips (channels doubled before each block) and return frames in (0, 1)
    for decoder, encoder in ((DCGANDecoder(20, 1, 4, 64, skipco=True), DCGANEncoder(1, 4, 128)),
                             (VGGDecoder(20, 1, 4, 64, skipco=True), VGGEncoder(1, 4, 128))):
        frame = decoder.eval()(torch.randn(2, 20), encoder.eval()(x64)[1])
        assert frame.shape == (2, 1, 64, 64) and 0 < frame.min() and frame.max() < 1


@pytest.mark.parametrize("preset,total", [("smmnist", 10_678_284), ("mmnist-deterministic", 10_678_284),
                                          ("kth", 23_877_854), ("human", 23_880_158), ("bair", 23_847_390)])
def test_parameter_counts_of_presets(preset, total):  # docs/srvp.md §7.3 / §1.7
    config = SRVPConfig(**{**PRESETS[preset], "data_dir": "/unused"})
    model = SRVP.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == total
    if preset == "smmnist":
        parts = {"encoder": 3_804_160, "decoder": 5_016_448, "q_y": 240_168, "p_z": 556_584, "dynamics": 556_564,
                 "inf_z": 395_264, "w_proj": 33_024, "w_inf": 65_792, "q_z": 10_280}
        assert {k: sum(p.numel() for p in getattr(model, k).parameters()) for k in parts} == parts


def test_k1_residual_rule_is_exact():  # docs/srvp.md §7.4
    model = tiny().eval()
    out = model(video(), n_euler_steps=1)
    torch.testing.assert_close(out.res, out.y[1:] - out.y[:-1])
    f = model.dynamics(torch.cat([out.y[:-1], out.z], -1))
    torch.testing.assert_close(out.y[1:], out.y[:-1] + f)


def test_k_substeps_reuse_one_z_per_interval():  # docs/srvp.md §7.4
    model, k = tiny().eval(), 3
    out = model(video(t=5), n_euler_steps=k, remove_intermediate=False)
    assert out.res.shape[0] == 4 * k
    for s in range(4 * k):  # sub-step s starts at state s and uses z of interval floor(s / k) + 1
        z = out.z[s // k]
        expected = model.dynamics(torch.cat([out.y[s], z], -1)) / k
        torch.testing.assert_close(out.res[s], expected)
        torch.testing.assert_close(out.y[s + 1], out.y[s] + expected)


def test_prediction_from_prior_only_in_eval_mode():  # docs/srvp.md §7.5
    model, x = tiny(), video(t=5, b=2)
    with pytest.raises(AssertionError, match="prior"):
        model(x, nt=8)
    model.eval()
    out = model(x, nt=25)
    assert out.q_z.shape[0] == 4 and out.p_z.shape[0] == 24 and out.x.shape[0] == 25


def test_posterior_is_causal():  # docs/srvp.md §7.7
    model, x = tiny().eval(), video(t=8)
    q_z = model.infer_z(model.encode(x)[0])
    x2 = x.clone()
    x2[5:] = torch.rand_like(x2[5:])
    q_z2 = model.infer_z(model.encode(x2)[0])
    torch.testing.assert_close(q_z[:4], q_z2[:4])  # z_1..z_4 see frames 0..4 only
    assert not torch.allclose(q_z[4:], q_z2[4:])


def test_eval_mode_dependencies_and_random_frames_in_training():  # docs/srvp.md §7.8
    model, x = tiny(nt_inf=2).eval(), video(t=6, b=4)

    def parts(v):
        h, skips = model.encode(v)
        return model.infer_y(h), model.infer_w(h), model.select_skips(skips)

    q_y, w, skips = parts(x)
    early, late = x.clone(), x.clone()
    early[:3] = torch.rand_like(early[:3])  # frames before the last nt_inf = 2
    late[2:] = torch.rand_like(late[2:])  # frames after the first nt_inf = 2
    torch.testing.assert_close(parts(late)[0], q_y)  # y_0 only sees frames 0..nt_inf-1
    torch.testing.assert_close(parts(early)[1], w)  # w only sees the last nt_inf frames
    before_last = x.clone()
    before_last[:-1] = torch.rand_like(before_last[:-1])
    for a, b in zip(parts(before_last)[2], skips):  # skips only see the last frame
        torch.testing.assert_close(a, b)
    assert not torch.allclose(parts(early)[0], q_y) and not torch.allclose(parts(late)[1], w)
    # training mode: w uses random frames of the whole clip, so it varies from call to call
    model.train()
    h = model.encode(x)[0]
    assert not torch.allclose(model.infer_w(h), model.infer_w(h))


def test_standard_deviations_are_softplus_plus_eps():  # docs/srvp.md §7.10
    raw = torch.tensor([[0.3, -1.0, -200.0, 5.0]])
    mean, std = gaussian_parameters(torch.cat([torch.ones(1, 4), raw], -1))
    torch.testing.assert_close(mean, torch.ones(1, 4))
    torch.testing.assert_close(std, torch.nn.functional.softplus(raw) + 1e-8)
    assert (std > 0).all()


def test_initialisation():  # docs/srvp.md §7.14, §1.6
    torch.manual_seed(0)
    model = SRVP()  # SMMNIST sizes: square 512x512 hidden layers in the dynamics
    square = [m.weight for m in model.dynamics if isinstance(m, torch.nn.Linear) and m.weight.shape[0] == m.weight.shape[1]]
    assert len(square) == 2
    for weight in square:
        torch.testing.assert_close(weight @ weight.T, 1.41**2 * torch.eye(512), atol=1e-4, rtol=0)
    assert all(m.bias.abs().max() == 0 for m in model.dynamics if isinstance(m, torch.nn.Linear))
    convs = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    assert abs(convs.std().item() - 0.02) < 1e-3 and abs(convs.mean().item()) < 1e-3
    bn = torch.cat([m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1) < 5e-3 and abs(bn.std().item() - 0.02) < 5e-3


def test_decoder_reads_w_then_y_and_w_is_shared_over_time():  # docs/srvp.md §7.18
    model = tiny().eval()
    w, y = torch.randn(2, 12), torch.randn(4, 2, 6)
    y[1] = y[0]
    skips = model.select_skips(model.encode(video(t=2, b=2))[1])
    frames = model.decode(w, y, skips)
    torch.testing.assert_close(frames[0], frames[1])  # same state -> same frame: w does not vary with t
    with torch.no_grad():  # cut the decoder's input channels from nh_inf on: the output then ignores y
        model.decoder.first[0].weight[12:] = 0
    torch.testing.assert_close(model.decode(w, y, skips)[0], model.decode(w, y, skips)[2])


@pytest.mark.parametrize("ablation", ["gru", "mlp", "no_z"])
def test_ablations_train_and_predict(ablation):
    model = tiny(ablation=ablation)
    x = video(t=5)
    out = model(x)
    assert out.x.shape == x.shape and out.y.shape == (5, 3, 6)
    assert out.res.shape[0] == (4 if ablation == "no_z" else 0)
    assert out.q_z.shape[-1] == (0 if ablation == "no_z" else 10)
    out.x.sum().backward()
    assert all(p.grad is not None for p in model.dynamics.parameters())
    model.eval()
    assert model.predict(x[:3], 4).shape == (7, 3, 1, 32, 32)
    if ablation != "no_z":
        with pytest.raises(ValueError, match="n_euler_steps must be 1"):
            model(x, n_euler_steps=2)


def test_generation_at_other_frame_rates():
    model, x = tiny().eval(), video(t=4)
    for k_test in (1, 2, 4):
        pred = model.predict(x, 5, n_euler_steps=1, n_euler_steps_test=k_test)
        assert pred.shape == (9, 3, 1, 32, 32) and 0 <= pred.min() and pred.max() <= 1
    # finer Euler steps converge to the flow of dy/ds = f(y, z): the error at s = 1 shrinks like 1/K
    smooth = tiny(res_gain=0.5).eval()
    y0, z = torch.randn(3, 6), torch.randn(1, 3, 10)
    ends = {k: smooth.generate(y0, z, 2, k, generator=torch.Generator().manual_seed(0))[0][-1] for k in (1, 2, 4, 64)}
    errors = [(ends[k] - ends[64]).norm().item() for k in (1, 2, 4)]
    assert errors[0] > errors[1] > errors[2] > 0


def test_content_swap_and_interpolation():
    model = tiny().eval()  # untrained: frames are close to 0.5, so "differs" means "not bitwise equal" here
    x_a, x_b = video(t=4, seed=1), video(t=4, seed=2)
    seeded = lambda seed=3: torch.Generator().manual_seed(seed)  # noqa: E731
    torch.testing.assert_close(model.swap_content(x_a, x_a, 3, generator=seeded()), model.predict(x_a, 3, generator=seeded()))
    swapped = model.swap_content(x_a, x_b, 3, generator=seeded())  # content of a, dynamics of b
    assert not torch.equal(swapped, model.predict(x_b, 3, generator=seeded()))
    assert not torch.equal(swapped, model.predict(x_a, 3, generator=seeded()))
    # the dynamics come from x_b alone: changing x_a's frames before its content frames changes nothing
    x_a_early = x_a.clone()
    x_a_early[:2] = torch.rand_like(x_a_early[:2])
    torch.testing.assert_close(model.swap_content(x_a_early, x_b, 3, generator=seeded()), swapped)
    frames = model.interpolate(x_a, x_b, 3, alphas=[0.0, 0.5, 1.0], seed=5)
    assert frames.shape == (3, 7, 3, 1, 32, 32)
    torch.testing.assert_close(frames[0], model.predict(x_a, 3, generator=seeded(5)))  # alpha = 0 is video a
    assert not torch.equal(frames[0], frames[2])
