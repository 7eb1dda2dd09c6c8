"""Optuna for sweeps whose metric is measured at some reports only (imported only when a sweep samples axes).

A model may report its sweep metric at some steps and not others: SRVP's ``val/psnr`` comes with its
validation every ``val_interval`` steps, between reports of training losses. Ray's ``OptunaSearch`` reads
the metric from every intermediate result (a KeyError on the others); this one passes on only the results
that carry it. Completed trials are unaffected: their final report always carries the metric.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class OptunaOnMeasuredReports(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)
