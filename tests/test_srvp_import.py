"""``dynagen import srvp DIR``: released-model directories of the original code, built here in its layout.

The original's names come from tests/data/srvp_released_state_dict.json (the inventory of the released state_dicts,
in the original's named_parameters() / named_buffers() order), so the renaming under test is checked against data
it was not derived from: a model's own state_dict is renamed by position in that inventory, saved as a plain
state_dict, imported through the CLI, and compared tensor by tensor and prediction by prediction.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dynagen.models.srvp.experiment import SRVPConfig
from dynagen.models.srvp.model import SRVP
from dynagen.models.srvp.released import dynagen_name
from dynagen.platform.cli import main
from dynagen.platform.context import load_state

INVENTORY = json.loads((Path(__file__).parent / "data" / "srvp_released_state_dict.json").read_text())


def original_entries(release: str) -> list[tuple[str, list[int]]]:
    return [tuple(entry) for entry in INVENTORY[release]["parameters"] + INVENTORY[release]["buffers"]]


@pytest.mark.parametrize("release", ["smmnist", "kth"])
def test_every_released_tensor_has_a_dynagen_home_of_its_shape(release, one_torch_thread):
    inventory = INVENTORY[release]
    model = SRVP(**inventory["constructor_options"], res_gain=inventory["res_gain"])
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    mapped = {dynagen_name(name): shape for name, shape in original_entries(release)}
    assert mapped == ours  # same names, same shapes, nothing left over on either side
    assert sum(p.numel() for p in model.parameters()) == inventory["total_parameters"]


# Small versions of the two released configurations (same module structure, hence the same names).
SMALL = {
    "dcgan": dict(release="smmnist", options=dict(dataset="smmnist", archi="dcgan", skipco=False, nc=1, ny=6, nz=5,
                                                   nt_inf=3, nt_cond=3, seq_len=6, nf=8, nhx=16, nh_inf=16, nh_res=16,
                                                   data_dir=None, beta_z=2.0)),
    "vgg": dict(release="kth", options=dict(dataset="kth", archi="vgg", skipco=True, nc=1, ny=6, nz=5, nt_inf=2,
                                             nt_cond=3, seq_len=6, nf=8, nhx=16, nh_inf=16, nh_res=16, res_gain=1.2,
                                             n_euler_steps=2, obs_scale=0.2, data_dir="/data/kth", seq_len_test=8)),
}


def source_model(options: dict) -> SRVP:
    torch.manual_seed(0)
    model = SRVP(nx=64, nc=options["nc"], nf=options["nf"], nhx=options["nhx"], ny=options["ny"], nz=options["nz"],
                 skipco=options["skipco"], nt_inf=options["nt_inf"], nh_inf=options["nh_inf"], nh_res=options["nh_res"],
                 archi=options["archi"], res_gain=options.get("res_gain", 1.41))
    for name, buffer in model.named_buffers():  # trained-looking BatchNorm statistics, so that buffers matter
        if name.endswith("running_mean"):
            buffer.normal_(0, 0.1)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
        else:
            buffer.fill_(1234)
    return model.eval()


def write_release(directory: Path, model: SRVP, release: str, options: dict, file: str = "model.pt") -> dict:
    """A released-model directory: config.json (original option names) and a plain state_dict under the original's
    names, matched by position with the inventory's order."""
    directory.mkdir(parents=True, exist_ok=True)
    ours = [t for _, t in model.named_parameters()] + [t for _, t in model.named_buffers()]
    names = [name for name, _ in original_entries(release)]
    assert len(names) == len(ours)
    released = {name: tensor.detach().clone() for name, tensor in zip(names, ours)}
    torch.save(released, directory / file)
    (directory / "config.json").write_text(json.dumps({"seed": 3, "lr": 3e-4, "device": "cuda", **options}))
    return released


@pytest.mark.parametrize("arch", ["dcgan", "vgg"])
def test_import_round_trip_puts_every_tensor_in_place_and_predicts_identically(arch, tmp_path, one_torch_thread):
    release, options = SMALL[arch]["release"], SMALL[arch]["options"]
    model = source_model(options)
    released = write_release(tmp_path / "release", model, release, options)
    assert main(["import", "srvp", str(tmp_path / "release"), "--name", "imported", "--storage", str(tmp_path / "runs")]) == 0

    run = tmp_path / "runs" / "imported"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["imported"]  # no staging folder left
    state = load_state(run / "checkpoint")
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "config", "_step"}
    for original, tensor in released.items():
        assert torch.equal(state["model"][dynagen_name(original)], tensor), original
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved.pop("experiment") == "srvp"
    config = SRVPConfig(**saved)
    assert (config.architecture, config.skipco, config.ny, config.nz, config.nt_inf, config.nf) == (
        arch, options["skipco"], options["ny"], options["nz"], options["nt_inf"], options["nf"])
    assert config.beta_z == options.get("beta_z", 1.0)  # absent keys take the original's default (1), not dynagen's (2)
    assert config.seed == 3 and config.steps == 1_100_000
    assert config.nt_gen == {"dcgan": 25, "vgg": 40}[arch]  # the paper's test protocol for that dataset

    imported = SRVP.from_config(config)
    imported.load_state_dict(state["model"])
    imported.eval()
    x = torch.rand(options["nt_cond"], 2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    k = config.n_euler_steps
    expected = model.predict(x, 4, k, generator=torch.Generator().manual_seed(7))
    got = imported.predict(x, 4, k, generator=torch.Generator().manual_seed(7))
    assert torch.equal(expected, got)


def test_imported_run_evaluates_and_records_its_source(tmp_path, one_torch_thread):
    options = SMALL["dcgan"]["options"]
    write_release(tmp_path / "release", source_model(options), "smmnist", options, file="model_best.pt")
    storage = tmp_path / "runs"
    assert main(["import", "srvp", str(tmp_path / "release"), "--weights", "model_best.pt", "--name", "r",
                 "--storage", str(storage)]) == 0
    assert main(["evaluate", "srvp", "--checkpoint", str(storage / "r"), "--samples", "2", "--option", "n_test=4",
                 "--set", "nt_gen=6"]) == 0
    metrics = json.loads((storage / "r" / "eval" / "metrics.json").read_text())
    assert 0 < metrics["ssim/model"] <= 1 and metrics["n_test"] == 4
    state = load_state(storage / "r" / "checkpoint")
    assert state["imported_from"]["weights"] == "model_best.pt" and len(state["imported_from"]["weights_sha256"]) == 64
    manifest = metrics["manifest"]  # what was scored and how
    assert manifest["frames"] == {"conditioning": 3, "predicted": 3, "nt_gen": 6} and manifest["samples"]["n"] == 2
    assert manifest["test_set"]["stand_in"] and manifest["test_set"]["clips"] == 4 and len(manifest["test_set"]["sha256"]) == 64
    assert manifest["euler_steps"] == {"train": 1, "test": 1} and manifest["metrics"]["ssim"]["window"] == 11
    assert manifest["metrics"]["lpips"] is None and manifest["checkpoint"]["imported_from"]["weights"] == "model_best.pt"
    assert manifest["checkpoint"]["path"].endswith("checkpoint/state.pt") and manifest["checkpoint"]["step"] == 1_100_000


def _refused(capsys, tmp_path, *extra) -> str:
    storage = tmp_path / "runs"
    code = main(["import", "srvp", str(tmp_path / "release"), "--name", "bad", "--storage", str(storage), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("dynagen: error: ")
    assert not storage.exists() or list(storage.iterdir()) == []  # nothing written, not even a staging folder
    return err


def _release(tmp_path, **changes):
    options = {**SMALL["dcgan"]["options"], **changes}
    return write_release(tmp_path / "release", source_model(SMALL["dcgan"]["options"]), "smmnist", options)


def test_refuses_unknown_option_and_unknown_value(tmp_path, capsys, one_torch_thread):
    _release(tmp_path, archi="resnet")
    err = _refused(capsys, tmp_path)
    assert "architecture: got 'resnet'" in err and err.endswith("allowed: dcgan, vgg")
    _release(tmp_path, dataset="ucf101")
    assert "config.json.dataset: got 'ucf101'" in _refused(capsys, tmp_path)
    _release(tmp_path, dataset="kth", deterministic=True)
    assert "deterministic" in _refused(capsys, tmp_path)
    _release(tmp_path, skipco="no")
    assert "config.json.skipco: got 'no'; allowed: true, false" in _refused(capsys, tmp_path)
    _release(tmp_path, frame_rate=2)
    assert "config.json.frame_rate: unknown option" in _refused(capsys, tmp_path)
    _release(tmp_path, nc=3)
    assert "config.json.nc: got 3" in _refused(capsys, tmp_path)


def test_refuses_missing_option_and_missing_files(tmp_path, capsys, one_torch_thread):
    _release(tmp_path)
    config = json.loads((tmp_path / "release" / "config.json").read_text())
    del config["ny"]
    (tmp_path / "release" / "config.json").write_text(json.dumps(config))
    assert "config.json.ny: missing" in _refused(capsys, tmp_path)
    _release(tmp_path)
    assert "weights: no model_7.pt" in _refused(capsys, tmp_path, "--weights", "model_7.pt")
    (tmp_path / "outside.pt").write_bytes((tmp_path / "release" / "model.pt").read_bytes())
    assert "not a file name inside" in _refused(capsys, tmp_path, "--weights", "../outside.pt")
    (tmp_path / "release" / "config.json").unlink()
    assert "source: no config.json" in _refused(capsys, tmp_path)


def test_refuses_wrong_names_shapes_and_missing_tensors(tmp_path, capsys, one_torch_thread):
    released = _release(tmp_path)
    path = tmp_path / "release" / "model.pt"
    renamed = dict(released)
    renamed["encoder.convs.0.0.weight"] = renamed.pop("encoder.conv.0.0.weight")
    torch.save(renamed, path)
    assert "weights.encoder.convs.0.0.weight: unexpected tensor" in _refused(capsys, tmp_path)
    torch.save({**released, "q_z.weight": torch.zeros(3, 3)}, path)
    assert "weights.q_z.weight: shape [3, 3] does not match config.json; allowed: [10, 16]" in _refused(capsys, tmp_path)
    torch.save({k: v for k, v in released.items() if k != "decoder.conv.0.1.running_var"}, path)
    assert "1 tensor(s) missing" in _refused(capsys, tmp_path)


def test_refuses_a_pickled_module_without_unpickling_it(tmp_path, capsys, one_torch_thread):
    _release(tmp_path)
    torch.save(source_model(SMALL["dcgan"]["options"]), tmp_path / "release" / "model.pt")  # a whole nn.Module
    assert "weights: model.pt cannot be loaded with weights_only=True" in _refused(capsys, tmp_path)
    (tmp_path / "release" / "model.pt").write_bytes(b"not a checkpoint")
    assert "weights: model.pt cannot be loaded" in _refused(capsys, tmp_path)
    torch.save([torch.zeros(1)], tmp_path / "release" / "model.pt")
    assert "not a mapping of names to tensors" in _refused(capsys, tmp_path)
