"""The separable model (docs/pde.md §1, §2, §7.1–7.7, 7.15): sizes, shapes, causality, integrators, swap, mixing."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from dynagen.models.pde.experiment import PRESETS, PDEConfig
from dynagen.models.pde.model import EulerBlocks, ODEFlow, build_model

# docs/pde.md §1.6 totals (Es + Et + D + R). Chairs: the original's unused ResNet `bn_out` (2·(128 + 10) = 276
# parameters) is not built here, see networks.ResNet18Encoder.
SPEC_PARAMETERS = {
    "wave": 60_842_864,
    "wave_partial": 15_013_868,
    "mnist": 10_985_833,
    "chairs": 27_190_507 - 276,
    "taxibj": 25_636_050,
    "sst": 15_809_123,
}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_wave(**overrides) -> PDEConfig:
    return PDEConfig(
        **{"resolution": 32, "enc_hidden_size": 32, "dec_hidden_size": 32, "res_hidden_size": 16, "code_size_s": 8, "code_size_t": 8, **overrides}
    )


def small_mnist(**overrides) -> PDEConfig:
    return PDEConfig(**{**PRESETS["mnist"], "enc_hidden_size": 8, "dec_hidden_size": 8, "code_size_s": 16, "code_size_t": 6, **overrides})


@pytest.mark.parametrize("preset", sorted(SPEC_PARAMETERS))
def test_parameter_counts_match_the_spec(preset):
    with torch.device("meta"):
        model = build_model(PDEConfig(**PRESETS[preset]), initialise=False)
    assert count(model) == SPEC_PARAMETERS[preset]


def test_wave_shapes_and_sigmoid_range():
    model = build_model(PDEConfig()).eval()  # the full 60.8M-parameter WaveEq model
    cond = torch.rand(2, 5, 1, 64, 64)
    with torch.no_grad():
        assert model.Es(cond).shape == (2, 32) and model.Et(cond).shape == (2, 32)
        out = model.get_forecast(cond, 7)
    assert out.forecasts.shape == (2, 7, 1, 64, 64) and out.t_codes.shape == (2, 7, 32)
    assert out.forecasts.min() > 0 and out.forecasts.max() < 1


def test_sst_feature_map_shapes_and_unbounded_output():
    model = build_model(PDEConfig(**PRESETS["sst"])).eval()
    cond = torch.randn(2, 4, 1, 64, 64)
    with torch.no_grad():
        code, skips = model.Es(cond)
        assert code.shape == (2, 196, 16, 16)
        assert [s.shape for s in skips] == [(2, 256, 16, 16), (2, 128, 32, 32), (2, 64, 64, 64)]
        assert model.Et(cond).shape == (2, 64, 16, 16)
        out = model.get_forecast(cond, 3)
    assert out.t_codes.shape == (2, 3, 64, 16, 16) and out.forecasts.shape == (2, 3, 1, 64, 64)
    assert out.forecasts.min() < 0  # identity output (BN + LeakyReLU last block lets negatives through)


@pytest.mark.parametrize("preset,shape", [("mnist", (1, 64, 64)), ("chairs", (3, 64, 64)), ("taxibj", (2, 32, 32)), ("wave_partial", (1, 100))])
def test_other_families_forecast_shapes(preset, shape):
    small = {"mnist": dict(enc_hidden_size=8, dec_hidden_size=8), "chairs": dict(dec_hidden_size=8), "taxibj": dict(enc_hidden_size=8, dec_hidden_size=8), "wave_partial": dict(enc_hidden_size=64, dec_hidden_size=16)}
    config = PDEConfig(**{**PRESETS[preset], **small[preset]})
    model = build_model(config).eval()
    with torch.no_grad():
        out = model.get_forecast(torch.rand(2, config.nt_cond, *shape), 3)
    assert out.forecasts.shape == (2, 3, *shape) and out.t_codes.shape == (2, 3, config.code_size_t)
    if preset in ("mnist", "chairs", "wave_partial"):
        assert 0 < out.forecasts.min() and out.forecasts.max() < 1


@pytest.mark.parametrize("make", [small_wave, lambda: small_mnist(skipco=True)])
def test_forecasts_depend_only_on_conditioning_frames(make):
    """docs/pde.md §7.2: zero gradient w.r.t. target frames and bitwise-identical forecasts when they change (train mode)."""
    config = make()
    model = build_model(config).train()
    shape = (1, 32, 32) if config.dataset == "wave" else (1, 64, 64)
    window = torch.rand(4, config.nt_cond + config.nt_pred, *shape, requires_grad=True)
    out = model(window, ae_time=config.nt_cond)
    out.forecast.forecasts.sum().backward()
    assert torch.count_nonzero(window.grad[:, config.nt_cond :]) == 0
    assert torch.count_nonzero(window.grad[:, : config.nt_cond]) > 0
    changed = window.detach().clone()
    changed[:, config.nt_cond :] = torch.rand_like(changed[:, config.nt_cond :])
    torch.testing.assert_close(model(changed, config.nt_cond).forecast.forecasts, out.forecast.forecasts, rtol=0, atol=0)


def test_content_code_is_computed_once_and_fed_to_every_step():
    """docs/pde.md §7.4: E_S runs once per rollout (twice per training step) and D sees the same S at every frame."""
    config = small_mnist()
    model = build_model(config).eval()
    es_calls, decoder_inputs = [], []
    model.Es.register_forward_hook(lambda m, i, o: es_calls.append(1))
    model.decoder.register_forward_hook(lambda m, i, o: decoder_inputs.append(i[0][:, : config.code_size_s]))
    with torch.no_grad():
        model.get_forecast(torch.rand(2, 5, 1, 64, 64), 6)
        assert len(es_calls) == 1 and len(decoder_inputs) == 6
        assert all(torch.equal(z, decoder_inputs[0]) for z in decoder_inputs)
        model(torch.rand(2, 15, 1, 64, 64), ae_time=9)
    assert len(es_calls) == 3


def test_predict_drops_the_conditioning_reconstructions():
    """docs/pde.md §7.3: with offset τ, evaluation uses outputs τ … τ+H−1 of the rollout."""
    model = build_model(small_wave()).eval()
    cond = torch.rand(3, 5, 1, 32, 32)
    with torch.no_grad():
        full = model.get_forecast(cond, 5 + 8).forecasts
        assert torch.equal(model.predict(cond, 8), full[:, 5:])


def test_zero_residual_output_layers_freeze_the_dynamics():
    """docs/pde.md §7.5: with every block's last layer at 0, y_k = y_0 and all decoded frames are identical."""
    model = build_model(small_wave()).eval()
    for field in model.temporal.fields:
        nn.init.zeros_(field.net[-1].weight)
        nn.init.zeros_(field.net[-1].bias)
    with torch.no_grad():
        out = model.get_forecast(torch.rand(2, 5, 1, 32, 32), 6)
    assert all(torch.equal(out.t_codes[:, k], out.t_codes[:, 0]) for k in range(6))
    assert all(torch.equal(out.forecasts[:, k], out.forecasts[:, 0]) for k in range(6))


def test_one_linear_euler_block_gives_matrix_powers_not_the_exponential():
    torch.manual_seed(0)
    d = 4
    A = 0.3 * torch.randn(d, d, dtype=torch.float64)
    block = nn.Linear(d, d, bias=False).double()
    block.weight.data.copy_(A)
    y0 = torch.randn(2, d, dtype=torch.float64)
    ys = EulerBlocks([block]).rollout(y0, 6)
    for k in range(6):
        expected = y0 @ torch.linalg.matrix_power(torch.eye(d, dtype=torch.float64) + A, k).T
        torch.testing.assert_close(ys[:, k], expected)
    assert (ys[:, 5] - y0 @ torch.linalg.matrix_exp(5 * A).T).abs().max() > 1e-2


@pytest.mark.parametrize("method,step,tol,adjoint", [("rk4", 0.05, 1e-9, False), ("dopri5", 1.0, 1e-10, False), ("dopri5", 1.0, 1e-10, True)])
def test_odeint_temporal_model_matches_the_matrix_exponential(method, step, tol, adjoint):
    """ODEFlow with f(y) = Ay gives y_k = exp(kA) y_0 (one time unit per frame)."""
    torch.manual_seed(1)
    d = 4
    A = 0.3 * torch.randn(d, d, dtype=torch.float64)
    field = nn.Linear(d, d, bias=False).double()
    field.weight.data.copy_(A)
    flow = ODEFlow(field, method=method, step_size=step, tol=tol, adjoint=adjoint)
    y0 = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    ys = flow.rollout(y0, 5)
    expected = torch.stack([y0 @ torch.linalg.matrix_exp(k * A).T for k in range(5)], 1)
    torch.testing.assert_close(ys, expected, rtol=1e-6, atol=1e-7)
    # Gradients w.r.t. y_0 and A (adjoint or backprop through the solver) match the closed form's.
    (ys[:, -1] ** 2).sum().backward()
    grad_y0, grad_A = y0.grad.clone(), field.weight.grad.clone()
    y0.grad = None
    A_leaf = A.clone().requires_grad_(True)
    ((y0 @ torch.linalg.matrix_exp(4 * A_leaf).T) ** 2).sum().backward()
    torch.testing.assert_close(grad_y0, y0.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_A, A_leaf.grad, rtol=1e-5, atol=1e-6)


def test_odeint_model_builds_and_rolls_out():
    model = build_model(small_wave(temporal_model="odeint", ode_method="rk4", ode_step_size=0.5)).eval()
    with torch.no_grad():
        out = model.get_forecast(torch.rand(2, 5, 1, 32, 32), 4)
    assert out.forecasts.shape == (2, 4, 1, 32, 32) and torch.isfinite(out.forecasts).all()


@pytest.mark.parametrize("make", [small_wave, lambda: small_mnist(skipco=True)])
def test_content_swap_keeps_the_dynamics_bitwise(make):
    """docs/pde.md §7.6: S from sequence A leaves sequence B's t_codes bitwise unchanged; only the frames change."""
    config = make().model_copy(update={"gain_encoder": 0.3})  # weights large enough for S to show
    model = build_model(config).eval()
    shape = (1, 32, 32) if config.dataset == "wave" else (1, 64, 64)
    x_a, x_b = torch.rand(2, config.nt_cond, *shape), torch.rand(2, config.nt_cond, *shape)
    with torch.no_grad():
        plain = model.get_forecast(x_b, 6)
        swapped = model.get_forecast(x_b, 6, init_s_code=model.Es(x_a))
    assert torch.equal(plain.t_codes, swapped.t_codes)
    assert not torch.equal(plain.forecasts, swapped.forecasts)


def test_mul_mixing_depends_only_on_the_product():
    """docs/pde.md §7.7: D(αS, y/α) = D(S, y); α = 2 makes both products bitwise equal."""
    model = build_model(small_wave()).eval()
    s, y = torch.randn(3, 8), torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(model.decode(2 * s, y / 2), model.decode(s, y))
        assert not torch.equal(model.decode(2 * s, y), model.decode(s, y))


def test_bad_configs_name_the_field_and_allowed_values():
    with pytest.raises(ValidationError, match="dataset") as error:
        PDEConfig(dataset="kth")
    assert "'wave'" in str(error.value) and "'sst'" in str(error.value)
    with pytest.raises(ValidationError, match="temporal_model"):
        PDEConfig(temporal_model="leapfrog")
    with pytest.raises(ValidationError, match="code_size_s == code_size_t"):
        PDEConfig(code_size_s=16)
    with pytest.raises(ValidationError, match="skipco"):
        PDEConfig(skipco=True)
    with pytest.raises(ValidationError, match="offset"):
        PDEConfig(offset=3)
    with pytest.raises(ValidationError, match="extra"):
        PDEConfig(unknown=1)


def test_epoch_presets_convert_to_steps_and_lr_schedule_is_per_epoch():
    from dynagen.models.pde.experiment import steps_for
    from dynagen.models.pde.train import lr_at

    wave = PDEConfig(**PRESETS["wave"])
    assert steps_for(wave, 30_240) == 250 * 237  # 250 epochs of ceil(30,240 / 128) iterations
    assert steps_for(PDEConfig(**PRESETS["wave-cpu"]), 10_080) == 2400  # explicit steps
    mnist = PDEConfig(**PRESETS["mnist"])
    assert [lr_at(mnist, e) for e in (0, 299, 300, 450, 700)] == [4e-4, 4e-4, 2e-4, 1e-4, 4e-4 * 0.5**5]
