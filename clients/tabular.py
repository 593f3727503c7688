"""A client's work on a data set its device declares: statistics, encoded rows, evaluation, and the
model trained on its own rows alone (what federation is compared with).

The rows never leave the device: what goes out is :func:`flcore.shared.tabular.local_stats`
before round 1 and, each round, the model and the evaluation means.
"""

from __future__ import annotations

import numpy as np
import torch

from clients import trainer
from flcore.domain.data import DataTask
from flcore.shared import tabular
from fllocal import tables


class TabularTask:
    """One job's view of a declared data set: its rows, split into training and held-out ones."""

    def __init__(self, source: tables.Source, reply: dict):
        self.source = source
        self.data = reply["data"]
        self.schema = reply["schema"]
        self.seed = int(reply["seed"])
        self.table: tables.Table | None = None
        self._encoded: tuple | None = None
        self.refresh()

    def refresh(self) -> None:
        """Read the rows again if the files changed since (a retraining learns from the new rows)."""
        table = tables.read(self.source)
        if table is not self.table:
            self.table = table
            self.train_idx, self.eval_idx = tables.split(table, self.seed, float(self.data["eval_fraction"]))
            self._encoded = None

    @property
    def loss(self) -> str:
        return DataTask.of(self.data).loss_name

    def stats(self) -> dict:
        """What this device tells the statistics step: sums and category counts of its training rows."""
        return tabular.local_stats(self.table.take(self.train_idx), self.schema)

    def tensors(self, encoding: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training and held-out rows encoded as the job encodes them (rows without a target left out)."""
        self.refresh()
        if self._encoded is None or self._encoded[0] != encoding:  # each reply carries its own copy
            self._encoded = (encoding, *self._encode(encoding, self.train_idx), *self._encode(encoding, self.eval_idx))
        return self._encoded[1:]

    def _encode(self, encoding: dict, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        part = self.table.take(index)
        x = tabular.encode_features(encoding, part, len(index))
        y, keep = tabular.encode_target(encoding, part[encoding["target"]["name"]])
        return torch.from_numpy(x[keep]), torch.from_numpy(y[keep])

    def evaluate(self, model: torch.nn.Module, encoding: dict, x: torch.Tensor, y: torch.Tensor, prefix: str) -> dict:
        """The figures this device reports for ``model`` on its held-out rows (means over rows, which the
        function combines across devices; see :func:`flcore.shared.tabular.derived`)."""
        if not len(y):  # no held-out rows (eval_fraction 0): nothing to report
            return {}
        out = trainer.outputs(model, x)
        got: dict[str, float] = {f"{prefix}loss": float(trainer.LOSSES[self.loss](out, y))}
        out_np, y_np = out.numpy(), y.numpy()
        if encoding["target"]["task"] == "regression":
            got.update(tabular.regression_metrics(encoding, out_np, y_np, prefix))
        else:
            per_class = prefix == "eval_"  # exact combined macro-F1 for the received model's evaluation
            got.update(tabular.classification_metrics(tabular.outputs(encoding), out_np, y_np, prefix, per_class))
        return got
