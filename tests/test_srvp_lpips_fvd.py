"""SRVP's LPIPS and FVD path (docs/srvp.md §4), end to end through `dynagen evaluate srvp --option lpips=... fvd=...`.

No weights can be downloaded, so small stand-in networks with the call contract of the real ones
(models/srvp/README.md) are scripted, saved with torch.jit.save and read back by the evaluation:
* LPIPS: net(pred, target), two (N, 3, H, W) batches in [-1, 1] -> one distance per pair, (N, 1, 1, 1) like lpips;
  the stand-in is the mean squared difference, so LPIPS(x, y) = 4 MSE(x, y) in [0, 1] units (closed form).
* I3D: net(clips), (B, T, 224, 224, 3) in [-1, 1] -> (B, D); the stand-in is a fixed linear map of 32x32-average-
  pooled frames, so adding a constant c to every pixel shifts every embedding by 2c W^T 1 (closed form for FVD).
Both stand-ins assert the layout and the value range they are called with.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dynagen.models.srvp import metrics as M
from dynagen.models.srvp.experiment import SRVPConfig
from dynagen.models.srvp.model import SRVP
from dynagen.platform import cli
from dynagen.platform.configs import UsageError
from dynagen.platform.context import save_state_atomically
from tests.test_srvp_train import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SquaredDistance(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        assert a.shape == b.shape and a.dim() == 4 and a.shape[1] == 3, "LPIPS input: two (N, 3, H, W) batches"
        assert bool(a.min() >= -1.0) and bool(a.max() <= 1.0) and bool(b.min() >= -1.0) and bool(b.max() <= 1.0), "LPIPS input: [-1, 1]"
        return (a - b).pow(2).mean((1, 2, 3)).view(-1, 1, 1, 1)


class PooledProjection(torch.nn.Module):
    def __init__(self, n_frames: int, dim: int = 4):
        super().__init__()
        self.n_frames = n_frames  # the embedding looks at the first n_frames frames only
        self.register_buffer("weight", torch.randn(n_frames * 3 * 7 * 7, dim, generator=torch.Generator().manual_seed(0)))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        assert clips.dim() == 5 and clips.shape[2] == 224 and clips.shape[3] == 224 and clips.shape[4] == 3, "I3D input: (B, T, 224, 224, 3)"
        assert bool(clips.min() >= -1.0) and bool(clips.max() <= 1.0), "I3D input: [-1, 1]"
        b = clips.shape[0]
        frames = clips[:, : self.n_frames].permute(0, 1, 4, 2, 3).reshape(b * self.n_frames, 3, 224, 224)
        return torch.nn.functional.avg_pool2d(frames, 32).reshape(b, -1) @ self.weight


def save_scripted(module: torch.nn.Module, path) -> str:
    torch.jit.script(module).save(str(path))
    return str(path)


def test_lpips_gets_rgb_in_minus_one_one_and_self_distance_is_zero(tmp_path):
    net = M.load_scripted(save_scripted(SquaredDistance(), tmp_path / "lpips.pt"), "lpips")
    generator = torch.Generator().manual_seed(0)
    for channels in (1, 3):  # grey frames are repeated to RGB
        x, y = (torch.rand(3, 4, channels, 16, 16, generator=generator) for _ in range(2))
        assert torch.equal(M.frame_lpips(net, x, x), torch.zeros(3, 4))
        # ((2x - 1) - (2y - 1))^2 = 4 (x - y)^2, averaged per frame: (T, B)
        torch.testing.assert_close(M.frame_lpips(net, x, y), 4 * (x - y).pow(2).mean((2, 3, 4)))


def test_frechet_distance_closed_forms():
    features = np.random.default_rng(0).normal(size=(60, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 2.0, 0.5], [0.0, 0.0, 0.7]])
    shift = np.array([0.5, -1.0, 2.0])
    assert abs(M.frechet_distance(features, features)) < 1e-9
    # equal covariances: only the means differ
    assert M.frechet_distance(features, features + shift) == pytest.approx((shift**2).sum(), rel=1e-9)
    # f vs 2f: |mu|^2 + tr(C + 4C - 2 sqrt(4 C^2)) = |mu|^2 + tr(C)
    expected = (features.mean(0) ** 2).sum() + np.trace(np.cov(features, rowvar=False))
    assert M.frechet_distance(features, 2 * features) == pytest.approx(expected, rel=1e-7)


def test_video_embeddings_chunks_pad_and_shift(tmp_path):
    net = M.load_scripted(save_scripted(PooledProjection(n_frames=5), tmp_path / "i3d.pt"), "fvd")
    videos = 0.5 * torch.rand(5, 20, 1, 16, 16, generator=torch.Generator().manual_seed(1))  # (T, B, C, H, W)
    embeddings = M.video_embeddings(net, videos)  # chunks of 16: the second one is 4 videos + 12 of padding
    assert embeddings.shape == (20, 4)
    # float32: one video at a time sums the same terms in another order (the conv algorithm depends on the batch),
    # 1e-5 off on some processors (measured 1.2e-5 absolute, 3.4e-5 relative): bounded at 2e-4 of the scale.
    scale = float(np.abs(embeddings).max())
    np.testing.assert_allclose(embeddings, M.video_embeddings(net, videos, chunk=1), rtol=2e-4, atol=2e-4 * scale)
    assert abs(M.frechet_distance(embeddings, embeddings)) < 1e-9
    # bilinear resizing and average pooling keep constants: +c on every pixel is +2c W^T 1 on every embedding
    c = 0.25
    shifted = M.video_embeddings(net, videos + c)
    expected = float(((2 * c * net.weight.sum(0).double()) ** 2).sum())
    assert M.frechet_distance(embeddings, shifted) == pytest.approx(expected, rel=1e-4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An (untrained) tiny SRVP checkpoint with its config, as `dynagen evaluate` reads it."""
    run_dir = tmp_path_factory.mktemp("srvp-eval")
    config = SRVPConfig(**TINY)
    torch.manual_seed(0)
    save_state_atomically({"model": SRVP.from_config(config).state_dict(), "_step": 0, "_config": config.model_dump()},
                          run_dir / "checkpoint")
    return config, run_dir


def _evaluate(run_dir, out_dir, *options: str) -> int:
    args = ["evaluate", "srvp", "--checkpoint", str(run_dir), "--samples", "2", "--option", "n_test=20", "--out", str(out_dir)]
    for option in options:
        args += ["--option", option]
    return cli.main(args)


def test_cli_evaluate_reports_lpips_and_fvd(checkpoint, tmp_path):
    config, run_dir = checkpoint
    lpips = save_scripted(SquaredDistance(), tmp_path / "lpips.pt")
    every_frame = save_scripted(PooledProjection(config.nt_gen), tmp_path / "i3d.pt")
    assert _evaluate(run_dir, tmp_path / "eval", f"lpips={lpips}", f"fvd={every_frame}") == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_test"] == 20  # two evaluation batches: 16 clips, then 4 (an FVD chunk padded with 12)
    for key in ("lpips/model", "lpips/model_ci95", "fvd/model"):
        assert np.isfinite(metrics[key]), key
    assert metrics["lpips/model"] > 0 and metrics["fvd/model"] > 0  # an untrained model does not predict the truth

    # docs/srvp.md §4: the hypothesis videos are the ground-truth conditioning frames followed by a sample, so an embedding of
    # the conditioning frames alone cannot tell them from the reference (ground-truth) videos.
    conditioning = save_scripted(PooledProjection(config.nt_cond), tmp_path / "i3d_cond.pt")
    assert _evaluate(run_dir, tmp_path / "eval_cond", f"fvd={conditioning}") == 0
    metrics_cond = json.loads((tmp_path / "eval_cond" / "metrics.json").read_text())
    assert abs(metrics_cond["fvd/model"]) < 1e-6 * metrics["fvd/model"] and "lpips/model" not in metrics_cond


def test_cli_bad_network_files_are_one_line_errors(checkpoint, tmp_path, capsys):
    _, run_dir = checkpoint
    torch.save(SquaredDistance().state_dict(), tmp_path / "state_dict.pt")  # a pickle, not TorchScript
    (tmp_path / "folder.pt").mkdir()
    cases = [
        (f"lpips={tmp_path / 'missing.pt'}", f"lpips: no such file: {tmp_path / 'missing.pt'}; allowed: a file written by torch.jit.save"),
        (f"fvd={tmp_path / 'folder.pt'}", f"fvd: no such file: {tmp_path / 'folder.pt'}"),
        (f"fvd={tmp_path / 'state_dict.pt'}", f"fvd: {tmp_path / 'state_dict.pt'} is not a TorchScript file; allowed: "),
    ]
    for option, message in cases:
        assert _evaluate(run_dir, tmp_path / "eval", option) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dynagen: error: {message}") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_networks_returning_the_wrong_shape_are_named():
    videos = torch.rand(2, 3, 1, 8, 8)  # (T, B, C, H, W): 6 frame pairs, 3 videos
    with pytest.raises(UsageError, match=r"^lpips: the network returned shape \(6, 5\) for 6 frame pairs; allowed: "):
        M.frame_lpips(lambda a, b: torch.zeros(len(a), 5), videos, videos)  # e.g. per-layer distances
    with pytest.raises(UsageError, match=r"^fvd: the network returned shape \(16,\) for 16 videos; allowed: \(N, D\)"):
        M.video_embeddings(lambda clips: clips.mean((1, 2, 3, 4)), videos)
