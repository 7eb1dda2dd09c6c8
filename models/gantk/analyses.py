"""Finite ↔ infinite agreement over a sweep's results (``dynagen results SWEEP --analysis agreement``).

Finite runs (``width > 0``) are matched with the infinite run (``width == 0``) that has the same value
of every other config column (activation, loss, seed, …). Per (loss, width) it reports the Spearman
rank correlation between the final metric of the finite runs and of their infinite partners (do the
activations rank the same at finite width?), the number of matched pairs, the median ratio
finite/infinite, and the mean relative Frobenius error between the empirical NTK of the finite
discriminator at initialisation and the analytic kernel (``ntk_rel_error``, ≈ width^(−1/2), docs/gantk.md §8.12).
"""

from __future__ import annotations

import numpy as np

METRICS = ("sinkhorn", "energy")


def agreement(table, evaluations=None):  # evaluations: unused (platform/analysis.py run_analysis)
    import pandas as pd
    import pyarrow as pa
    from scipy.stats import spearmanr

    frame = table.to_pandas() if hasattr(table, "to_pandas") else pd.DataFrame(table)
    if "kind" in frame:
        frame = frame[frame["kind"] == "summary"]
    if "status" in frame:
        frame = frame[frame["status"].isin(["completed", "stopped"])]
    config_columns = [c for c in frame.columns if c.startswith("config.") and c != "config.width"]
    key = [c for c in config_columns if frame[c].nunique(dropna=False) > 1] or ["config.loss"]
    key = list(dict.fromkeys(["config.loss", *key]))
    infinite = frame[frame["config.width"] == 0]
    finite = frame[frame["config.width"] > 0]
    rows = []
    for metric in [m for m in METRICS if m in frame]:
        pairs = finite.merge(infinite[[*key, metric]], on=key, suffixes=("", "/infinite"))
        for (loss, width), group in pairs.groupby(["config.loss", "config.width"]):
            a, b = group[metric].to_numpy(float), group[f"{metric}/infinite"].to_numpy(float)
            valid = np.isfinite(a) & np.isfinite(b)
            rho = spearmanr(a[valid], b[valid]).statistic if valid.sum() >= 3 else float("nan")
            ntk_error = group["ntk_rel_error"].mean() if "ntk_rel_error" in group else float("nan")
            rows.append({
                "metric": metric, "loss": loss, "width": int(width), "pairs": int(valid.sum()),
                "spearman": float(rho), "median_ratio_finite_to_infinite": float(np.median(a[valid] / b[valid]))
                if valid.any() else float("nan"),
                "ntk_rel_error": float(ntk_error),
            })
    columns = ["metric", "loss", "width", "pairs", "spearman", "median_ratio_finite_to_infinite", "ntk_rel_error"]
    return pa.Table.from_pylist(rows, schema=None) if rows else pa.table({c: [] for c in columns})
