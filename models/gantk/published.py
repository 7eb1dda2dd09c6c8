"""GAN(TK)²'s reference figures and orderings (docs/gantk.md §7: the authors' quick CPU re-run; no paper table).

Protocol: eight_gaussians, infinite-width discriminator with the IPM loss (``width 0, loss ipm`` = ``inf_ipm``),
eta = 1000, t = 1, N = M = 500, energy distance ``e`` (geomloss 'energy', docs/gantk.md §5), initial e = 1.055.
``ENERGY[arch][step]`` is e after that many generator steps; ``ORDERINGS`` the claims a sweep can check, each
"a is below b" in energy at ``step``.
"""

from __future__ import annotations

from typing import Any, Mapping

PROTOCOL = dict(target="eight_gaussians", n_particles=500, n_targets=500, lr=1000.0, t=1.0)
ENERGY = {
    "relu_highbias": {100: 3e-4, 200: 1e-4, 1000: 5e-5},  # "< 5e-5" at 1000
    "relu": {100: 1.2e-3, 200: 5e-4, 1000: 1e-4},
    "rbf": {100: 4.4e-3, 200: 2.9e-3, 1000: 1.0e-3},
    "relu_nobias": {100: 6.9e-3, 200: 7.1e-3, 1000: 7.4e-3},
    "sigmoid": {100: 1.0546, 200: 1.0542, 1000: 1.0516},
}
ORDERINGS = [  # (what, a, b, step): energy of a below energy of b at step (width 0)
    ("arch", "relu_highbias", "relu", 1000), ("arch", "relu", "rbf", 1000), ("arch", "rbf", "relu_nobias", 1000),
    ("arch", "relu_nobias", "sigmoid", 1000), ("loss", "ipm", "lsgan", 100),  # inf_ipm ~3e-3 at 50, inf_lsgan 0.075 at 60
]


def protocol_differences(config: Mapping[str, Any]) -> list[str]:
    return [f"{key} {config.get(key)!r} (reference {value!r})" for key, value in PROTOCOL.items() if config.get(key) != value]


def compare(config, metrics: Mapping[str, float], manifest: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """`dynagen evaluate gan-ntk`: the final energy beside the reference of the same arch and step."""
    if config.arch not in ENERGY:
        return [{"metric": "energy/particles", "measured": metrics.get("energy/particles"), "published": None,
                 "comparable": False, "why": f"no reference figure for arch {config.arch!r}"}]
    step = (manifest or {}).get("checkpoint", {}).get("step")
    why = protocol_differences(config.model_dump())
    if (config.width, config.loss) != (0, "ipm"):
        why.append(f"width {config.width}, loss {config.loss} (reference: width 0, ipm)")
    reference_step = step if step in ENERGY[config.arch] else 1000
    if step != reference_step:
        why.append(f"step {step} (references at {', '.join(map(str, ENERGY[config.arch]))})")
    return [{"metric": f"energy/particles at step {reference_step}", "measured": metrics.get("energy/particles"),
             "published": ENERGY[config.arch][reference_step], "comparable": not why, "why": "; ".join(why) or "same protocol"}]


def paper(table, evaluations=None):
    """``dynagen results SWEEP --analysis paper``: each published ordering, held or not, on the sweep's runs (from their
    per-step energies; ``evaluations``, the trials' ``dynagen evaluate`` results, are not used)."""
    import pyarrow as pa

    frame = table.to_pandas() if hasattr(table, "to_pandas") else table
    if "status" in frame:
        frame = frame[frame["status"].isin(["running", "completed", "stopped"])]
    rows = []
    for what, a, b, step in ORDERINGS:
        column = f"config.{what}"
        at = frame[(frame.get("config.width") == 0) & (frame["kind"] == "step") & (frame["step"] == step)] \
            if {"config.width", "kind", "step", column, "energy"} <= set(frame.columns) else frame.iloc[0:0]
        if what == "loss":
            at = at[at["config.arch"] == "relu"] if "config.arch" in at else at.iloc[0:0]
        else:
            at = at[at["config.loss"] == "ipm"] if "config.loss" in at else at.iloc[0:0]
        means = {v: at.loc[at[column] == v, "energy"].mean() for v in (a, b)} if len(at) else {a: None, b: None}
        runs = {v: int((at[column] == v).sum()) if len(at) else 0 for v in (a, b)}
        present = all(runs.values())
        config = at.iloc[0].to_dict() if len(at) else {}
        why = protocol_differences({k.removeprefix("config."): v for k, v in config.items()}) if present else []
        rows.append({
            "ordering": f"energy {what}={a} < {what}={b} at step {step} (width 0)",
            "measured": f"{means[a]:.3g} vs {means[b]:.3g} ({runs[a]}+{runs[b]} runs)" if present else "-",
            "published": (f"{ENERGY[a][step]:.3g} vs {ENERGY[b][step]:.3g}" if what == "arch" else "3e-3 (50) vs 0.075 (60)"),
            "held": ("yes" if means[a] < means[b] else "NO") if present else "not in sweep",
            "comparable": "yes" if present and not why else "no",
            "why": "; ".join(why) or ("same protocol" if present else f"no width-0 runs of both at step {step}"),
        })
    return pa.Table.from_pylist(rows)
