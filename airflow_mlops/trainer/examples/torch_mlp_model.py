"""
MLflow "model from code" of the :mod:`torch_mlp` demo trainer: loads its weights, predicts class labels.

MLflow copies this file into the logged model and runs it when the model is loaded, so serving the model
needs only torch, pandas and mlflow, not this package. ``predict`` takes a DataFrame with the feature
columns the model was trained on (other columns are ignored) and returns one class label per row.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class TabularMLPModel(PythonModel):
    """A standardizing MLP classifier rebuilt from the ``spec`` and ``weights`` artifacts."""

    def load_context(self, context: Any) -> None:
        import torch

        with open(context.artifacts["spec"]) as fh:
            spec = json.load(fh)
        layers: list[torch.nn.Module] = []
        width = len(spec["features"])
        for hidden in spec["hidden"]:
            layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, len(spec["classes"])))
        self.net = torch.nn.Sequential(*layers)
        self.net.load_state_dict(
            torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        )
        self.net.eval()
        self.features = spec["features"]
        self.classes = spec["classes"]
        self.mean = torch.tensor(spec["mean"], dtype=torch.float32)
        self.std = torch.tensor(spec["std"], dtype=torch.float32)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import numpy as np
        import torch

        values = model_input[self.features].to_numpy(dtype=np.float32)
        with torch.no_grad():
            logits = self.net((torch.from_numpy(values) - self.mean) / self.std)
        return np.asarray(self.classes)[logits.argmax(dim=1).numpy()]


mlflow.models.set_model(TabularMLPModel())
