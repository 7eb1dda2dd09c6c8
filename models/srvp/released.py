"""``dynagen import srvp DIR``: the original SRVP code's released models as dynagen runs.

A released model is a directory (layout in models/srvp/README.md, "Released models"): ``config.json``, the
original training script's options as a flat JSON object, and ``model.pt`` (and, for KTH and Human3.6M,
``model_best.pt``), a plain ``state_dict`` saved with ``torch.save(model.state_dict(), ...)``. It is read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers: a file holding a
pickled ``nn.Module`` is refused, never unpickled.

dynagen's SRVP has the original's parameter layout (same modules, shapes and order) under its own names;
:data:`RENAMES` maps one onto the other. Every check is strict: an unknown option or value, a missing option
without a default, a missing, unexpected or mis-shaped tensor end in one ``UsageError`` naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from dynagen.models.manifest import file_sha256
from dynagen.platform.configs import UsageError, validate

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.pt"

# Defaults of the original options when a key is absent (the original's args.py); None: no default, required.
ORIGINAL_DEFAULTS: dict[str, Any] = {
    "seed": None, "save_path": None, "torch_amp": False, "apex_amp": False, "amp_opt_lvl": "O1",
    "keep_batchnorm_fp32": None, "apex_verbose": False, "local_rank": 0, "device": None, "n_workers": 4,
    "nhx": 128, "ny": None, "nz": None, "n_euler_steps": 1, "nt_inf": None, "obs_scale": 1.0, "archi": "dcgan",
    "skipco": False, "nf": 64, "nh_res": 512, "nlayers_res": 4, "nh_inf": 256, "nlayers_inf": 3, "res_gain": 1.41,
    "beta_y": 1.0, "beta_z": 1.0, "l2_res": 1.0, "batch_size": 128, "lr": 3e-4, "lr_scheduling_burnin": 1_000_000,
    "lr_scheduling_n_iter": 100_000, "dataset": None, "data_dir": None, "seq_len": None, "ndigits": 2,
    "max_speed": 4, "deterministic": False, "subsampling": 8, "nx": 64, "nc": None, "val_interval": 20_000,
    "chkpt_interval": None, "batch_size_test": 16, "n_iter_test": 25, "nt_cond": None, "n_samples_test": 100,
    "seq_len_test": None,
}
REQUIRED = ("ny", "nz", "nt_inf", "dataset", "seq_len", "nc", "nt_cond")
# Options of the original's run-time machinery (paths, devices, Apex, DDP rank, checkpoint interval): they do not
# change the model or its training; they are kept in the checkpoint's provenance only.
RUNTIME_ONLY = ("save_path", "amp_opt_lvl", "keep_batchnorm_fp32", "apex_verbose", "local_rank", "device",
                "chkpt_interval")
SAME_NAME = ("seed", "nhx", "ny", "nz", "n_euler_steps", "nt_inf", "obs_scale", "skipco", "nf", "nh_res",
             "nlayers_res", "nh_inf", "nlayers_inf", "res_gain", "beta_y", "beta_z", "l2_res", "batch_size", "lr",
             "lr_scheduling_burnin", "lr_scheduling_n_iter", "data_dir", "seq_len", "ndigits", "max_speed",
             "subsampling", "nx", "val_interval", "batch_size_test", "n_iter_test", "nt_cond", "n_samples_test")
BOOLEAN = ("torch_amp", "apex_amp", "skipco", "deterministic")

# The original's dataset option (with its deterministic flag) -> dynagen's dataset.
DATASETS = {("smmnist", False): "smmnist", ("smmnist", True): "mmnist", ("kth", False): "kth",
            ("human", False): "human", ("bair", False): "bair"}
# The paper's test protocol per dataset (docs/srvp.md §4 table, README test commands): frames (conditioning + predicted)
# and samples per test sequence. An imported run evaluates with it by default.
PAPER_PROTOCOL = {"smmnist": dict(nt_gen=25, n_samples=100), "mmnist": dict(nt_gen=100, n_samples=1),
                  "kth": dict(nt_gen=40, n_samples=100), "human": dict(nt_gen=53, n_samples=100),
                  "bair": dict(nt_gen=30, n_samples=100)}

# The original's module names -> dynagen's (models/srvp/networks.py, model.py), applied in order to every key.
# Its MLPs wrap ``Sequential(Sequential(Linear), Sequential(ReLU, Linear), ...)`` in ``.module``; dynagen's MLP is
# one flat ``Sequential(Linear, ReLU, Linear, ...)``, so the i-th linear layer is at index 2i.
RENAMES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.conv\.", "encoder.blocks."),
    (r"^encoder\.last_conv\.", "encoder.last."),
    (r"^decoder\.first_upconv\.", "decoder.first."),
    (r"^decoder\.conv\.", "decoder.blocks."),
    (r"^(q_y|p_z|dynamics)\.module\.(\d+)\.\d+\.", lambda m: f"{m[1]}.{2 * int(m[2])}."),
)


def dynagen_name(original: str) -> str:
    """The dynagen name of one of the original's state_dict keys (unchanged for w_proj, w_inf, inf_z, q_z)."""
    for pattern, replacement in RENAMES:
        original = re.sub(pattern, replacement, original)
    return original


def _bad(field: str, problem: str, allowed: str) -> UsageError:
    return UsageError(f"{field}: {problem}; allowed: {allowed}")


def read_options(directory: Path) -> dict[str, Any]:
    """``config.json`` with the original's defaults filled in; unknown or missing options are errors."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise _bad("source", f"no {CONFIG_FILE} in {directory}", f"a released model directory ({CONFIG_FILE}, {WEIGHTS_FILE})")
    try:
        options = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _bad(CONFIG_FILE, f"not valid JSON ({error})", "a flat JSON object of the original's options") from None
    if not isinstance(options, dict):
        raise _bad(CONFIG_FILE, f"holds a {type(options).__name__}", "a flat JSON object of the original's options")
    unknown = sorted(set(options) - set(ORIGINAL_DEFAULTS))
    if unknown:
        raise _bad(f"{CONFIG_FILE}.{unknown[0]}", "unknown option", ", ".join(ORIGINAL_DEFAULTS))
    missing = [key for key in REQUIRED if options.get(key) is None]
    if missing:
        raise _bad(f"{CONFIG_FILE}.{missing[0]}", "missing (the original has no default)", "a value in config.json")
    for key in BOOLEAN:
        if key in options and not isinstance(options[key], bool):
            raise _bad(f"{CONFIG_FILE}.{key}", f"got {options[key]!r}", "true, false")
    return {**ORIGINAL_DEFAULTS, **options}


def to_config(options: Mapping[str, Any]):
    """The ``SRVPConfig`` of the original's options; training and validation options carry over one to one."""
    from dynagen.models.srvp.experiment import SRVPConfig

    key = (options["dataset"], options["deterministic"])
    if key not in DATASETS:
        allowed = "smmnist, kth, human, bair; deterministic: true only with smmnist"
        raise _bad(f"{CONFIG_FILE}.dataset", f"got {options['dataset']!r} with deterministic {options['deterministic']}", allowed)
    dataset = DATASETS[key]
    values = {name: options[name] for name in SAME_NAME if options[name] is not None}
    values.update(
        dataset=dataset, architecture=options["archi"], amp=options["torch_amp"] or options["apex_amp"],
        num_workers=options["n_workers"], steps=options["lr_scheduling_burnin"] + options["lr_scheduling_n_iter"],
        # the original validates on clips of the training length unless seq_len_test is given
        seq_len_test=options["seq_len_test"] or options["seq_len"], **PAPER_PROTOCOL[dataset],
    )
    try:
        config = validate(SRVPConfig, values)
    except UsageError as error:
        raise UsageError(f"{CONFIG_FILE}: {error}") from None
    if options["nc"] != config.nc:
        raise _bad(f"{CONFIG_FILE}.nc", f"got {options['nc']} for dataset {options['dataset']!r}", str(config.nc))
    return config


def load_weights(path: Path) -> dict[str, Any]:
    """A plain state_dict read with ``weights_only=True``: anything that would need unpickling code is refused."""
    import pickle

    import torch

    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _bad("weights", f"{path.name} cannot be loaded with weights_only=True ({first[:160]})",
                   "a plain state_dict saved with torch.save(model.state_dict(), path); re-save a pickled module so") from None
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise _bad("weights", f"{path.name} holds a {type(weights).__name__}, not a mapping of names to tensors",
                   "a plain state_dict saved with torch.save(model.state_dict(), path)")
    return dict(weights)


def map_state_dict(weights: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """The original's tensors under dynagen's names; ``expected``: the target model's state_dict (names, shapes)."""
    mapped: dict[str, Any] = {}
    for original, tensor in weights.items():
        name = dynagen_name(original)
        if name not in expected:
            raise _bad(f"weights.{original}", "unexpected tensor for this config.json",
                       "the names of the original's state_dict for this architecture (models/srvp/README.md)")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise _bad(f"weights.{original}", f"shape {list(tensor.shape)} does not match config.json",
                       str(list(expected[name].shape)))
        mapped[name] = tensor
    missing = [name for name in expected if name not in mapped]
    if missing:
        raise _bad("weights", f"{len(missing)} tensor(s) missing, the first under dynagen's name {missing[0]!r}",
                   f"a complete state_dict ({len(expected)} tensors for this config.json; found {len(mapped)})")
    return {name: mapped[name] for name in expected}  # dynagen's order


def import_released(source: Path, weights: str | None = None):
    """``(SRVPConfig, checkpoint state)`` of a released model directory, in the schema `dynagen train` writes.

    ``weights``: a file name inside ``source`` (default model.pt; model_best.pt for the paper's KTH and
    Human3.6M numbers). The release has no optimizer state: the checkpoint carries a fresh Adam and schedule,
    with ``_step`` at the end of the original's training (burn-in + decay).
    """
    from dynagen.models.srvp.loss import make_optimizer
    from dynagen.models.srvp.model import SRVP

    source = Path(source)
    if not source.is_dir():
        raise _bad("source", f"no such directory: {source}", "a released model directory")
    config = to_config(read_options(source))
    name = weights or WEIGHTS_FILE
    path = (source / name).resolve()
    if path.parent != source.resolve():
        raise _bad("weights", f"{name!r} is not a file name inside {source}", "model.pt, model_best.pt")
    if not path.is_file():
        present = sorted(p.name for p in source.glob("*.pt")) or ["(no .pt file)"]
        raise _bad("weights", f"no {name} in {source}", ", ".join(present))
    model = SRVP.from_config(config)
    state_dict = map_state_dict(load_weights(path), model.state_dict())
    model.load_state_dict(state_dict)
    optimizer, scheduler = make_optimizer(model.parameters(), config.lr, config.lr_scheduling_n_iter)
    provenance = {"source": str(source.resolve()), "weights": path.name, "weights_sha256": file_sha256(path),
                  "config_json": json.loads((source / CONFIG_FILE).read_text())}
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": {}, "config": config.model_dump(), "data": f"imported from {source}", "_step": config.steps,
             "imported_from": provenance}
    return config, state
