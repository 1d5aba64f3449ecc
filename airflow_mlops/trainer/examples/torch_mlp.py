"""
Demo trainer: a tabular MLP classifier in PyTorch that follows the training contract.

Runs as one process (``python -m airflow_mlops.trainer.examples.torch_mlp``) or as several under ``torchrun``
(one per GPU, on one or many nodes; ``KubernetesRuntime(gpus=..., num_nodes=...)`` starts it that way),
with DistributedDataParallel over NCCL on GPUs and gloo on CPUs. On a GPU it trains under bf16 autocast and
feeds batches from pinned host memory; without one it trains on the CPU.

It saves a checkpoint (model, optimizer, step) under ``MLOPS_CHECKPOINT_URI`` every ``checkpoint_every``
steps and when it gets a preemption notice (SIGTERM), then exits with code 143; a retry of the task resumes
from the last checkpoint and ends at the same step count, with the same data order, as a run that was never
interrupted.

Hyper-parameters (``MLOPS_PARAMS``):

- ``target``: label column (default ``"label"``); ``features``: feature columns (default every other
  numeric column);
- ``hidden``: hidden layer widths (default ``[64, 32]``); ``epochs`` (default 20); ``batch_size`` (default 32,
  per process); ``lr`` (default 0.003); ``weight_decay`` (default 0.0001); ``seed`` (default 0);
- ``checkpoint_every``: steps between checkpoints (default 50); ``loader_workers``: data loader worker
  processes (default 0; they use ``/dev/shm``);
- ``step_delay``: seconds to sleep after each step (default 0; slows the demo down to watch preemption).

Rank 0 logs the parameters, per-epoch loss and validation metrics (``accuracy``, ``f1``, ``roc_auc`` for two
classes) and the model (an MLflow pyfunc that returns class labels, see :mod:`torch_mlp_model`) to the run,
and writes the result.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.data.snapshots import read_snapshot
from airflow_mlops.trainer.contract import DROPPED_FEATURES, TARGET, TrainingContext, dropped_features
from airflow_mlops.trainer.lifecycle import PreemptionGuard, enable_system_metrics, process_rank

if TYPE_CHECKING:
    import pandas as pd
    import torch

log = logging.getLogger("airflow_mlops.trainer")

CHECKPOINT = "torch_mlp.pt"
MODEL_CODE = Path(__file__).with_name("torch_mlp_model.py")


def feature_columns(frame: pd.DataFrame, params: dict[str, Any], target: str) -> list[str]:
    """The feature columns: ``params['features']``, else every numeric column but the label."""
    if target not in frame.columns:
        raise ValueError(
            f"Label column {target!r} is not in the training data (columns: {list(frame.columns)}); "
            "set the 'target' hyper-parameter"
        )
    if params.get("features"):
        return [str(c) for c in params["features"]]
    columns = list(frame.drop(columns=[target]).select_dtypes(include="number").columns)
    if not columns:
        raise ValueError(f"The training data has no numeric feature column besides the label {target!r}")
    return columns


def build_model(n_features: int, hidden: list[int], n_classes: int) -> torch.nn.Module:
    """A multi-layer perceptron with *hidden* layer sizes."""
    import torch

    layers: list[torch.nn.Module] = []
    width = n_features
    for size in hidden:
        layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
        width = size
    layers.append(torch.nn.Linear(width, n_classes))
    return torch.nn.Sequential(*layers)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> dict[str, float]:
    """Accuracy, macro F1 and (two classes) ROC AUC, computed with torch alone."""
    import torch

    predicted = logits.argmax(dim=1)
    metrics = {"accuracy": float((predicted == labels).float().mean())}
    f1s = []
    for cls in range(n_classes):
        tp = float(((predicted == cls) & (labels == cls)).sum())
        fp = float(((predicted == cls) & (labels != cls)).sum())
        fn = float(((predicted != cls) & (labels == cls)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    metrics["f1"] = f1s[1] if n_classes == 2 else sum(f1s) / n_classes
    if n_classes == 2 and 0 < int(labels.sum()) < len(labels):
        score = torch.softmax(logits.float(), dim=1)[:, 1]
        ranks = score.argsort().argsort().double() + 1  # Mann-Whitney U (ties broken by order)
        positives = labels == 1
        n_pos, n_neg = int(positives.sum()), int((~positives).sum())
        metrics["roc_auc"] = float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return metrics


def save_state(ctx: TrainingContext, state: dict[str, Any]) -> None:
    """Save the training state as the checkpoint of this task instance."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    ctx.save_checkpoint(buffer.getvalue(), CHECKPOINT)


def load_state(ctx: TrainingContext) -> dict[str, Any] | None:
    """The training state of the last checkpoint, or None before the first one."""
    import torch

    data = ctx.load_checkpoint(CHECKPOINT)
    return None if data is None else torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def train(ctx: TrainingContext) -> dict[str, Any] | None:
    """Train (distributed when started by torchrun); rank 0 logs to MLflow and returns the result."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    rank, local_rank, world_size = process_rank()
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    main = rank == 0

    params = ctx.params
    target = params.get("target", "label")
    hidden = [int(h) for h in params.get("hidden", [64, 32])]
    epochs = int(params.get("epochs", 20))
    batch_size = int(params.get("batch_size", 32))
    seed = int(params.get("seed", 0))
    checkpoint_every = max(1, int(params.get("checkpoint_every", 50)))
    step_delay = float(params.get("step_delay", 0.0))
    torch.manual_seed(seed)

    frame = read_snapshot(ctx.train_data)
    features = feature_columns(frame, params, target)
    classes = sorted(frame[target].unique().tolist())
    index = {label: i for i, label in enumerate(classes)}
    x_train = torch.tensor(frame[features].to_numpy(dtype="float32"))
    y_train = torch.tensor(frame[target].map(index).to_numpy(dtype="int64"))
    mean, std = x_train.mean(dim=0), x_train.std(dim=0).clamp_min(1e-6)
    x_train = (x_train - mean) / std
    if ctx.valid_data:
        valid = read_snapshot(ctx.valid_data)
        x_valid = (torch.tensor(valid[features].to_numpy(dtype="float32")) - mean) / std
        y_valid = torch.tensor(valid[target].map(index).to_numpy(dtype="int64"))
    else:
        x_valid, y_valid = x_train, y_train

    dataset = TensorDataset(x_train, y_train)
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, pin_memory=cuda,
        num_workers=int(params.get("loader_workers", 0)),
    )  # fmt: skip
    steps_per_epoch = len(loader)
    total_steps = epochs * steps_per_epoch

    model = build_model(len(features), hidden, len(classes)).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(params.get("lr", 0.003)),
        weight_decay=float(params.get("weight_decay", 1e-4)),
    )
    step = 0
    state = load_state(ctx)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log.info(
            "Resuming from checkpoint %s at step %d of %d", ctx.checkpoint_path(CHECKPOINT), step, total_steps
        )
    resumed_from = step
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if cuda else None) if (
        world_size > 1
    ) else model  # fmt: skip
    log.info(
        "rank %d/%d on %s: %d rows, %d features, %d steps per epoch, %d epochs",
        rank, world_size, device, len(dataset), len(features), steps_per_epoch, epochs,
    )  # fmt: skip

    def checkpoint() -> None:
        if main:
            save_state(ctx, {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()})
        if world_size > 1:
            dist.barrier()

    run = _start_mlflow_run(ctx, params, features, world_size) if main else None
    loss_sum, loss_count = 0.0, 0

    def stopped() -> None:  # the last checkpoint was just written; the run ends until a retry resumes it
        if run is not None:
            import mlflow

            mlflow.end_run("KILLED")

    with PreemptionGuard(on_preempt=stopped) as guard:
        while step < total_steps:
            epoch, skip = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch)  # the same data order on every try
            ddp.train()
            for i, (xb, yb) in enumerate(loader):
                if i < skip:
                    continue
                xb = xb.to(device, non_blocking=cuda)
                yb = yb.to(device, non_blocking=cuda)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                    loss = torch.nn.functional.cross_entropy(ddp(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum, loss_count = loss_sum + float(loss.detach()), loss_count + 1
                stop = torch.tensor([1.0 if guard.requested else 0.0], device=device)
                if world_size > 1:
                    dist.all_reduce(stop, op=dist.ReduceOp.MAX)  # every rank stops at the same step
                if stop.item():
                    guard.request()
                if step % checkpoint_every == 0 or guard.requested:
                    checkpoint()
                guard.exit_if_requested()
                if step_delay:
                    time.sleep(step_delay)
            if run is not None:
                import mlflow

                mlflow.log_metric("train_loss", loss_sum / max(loss_count, 1), step=epoch + 1)
            loss_sum, loss_count = 0.0, 0
    checkpoint()

    result = None
    if main:
        model.eval()
        with torch.no_grad():
            logits = model(x_valid.to(device)).float().cpu()
        metrics = classification_metrics(logits, y_valid, len(classes))
        result = _log_model(ctx, model, features, classes, mean, std, hidden, metrics, frame)
        result.update({"steps": step, "resumed_from_step": resumed_from, "world_size": world_size})
        # Columns left out (not selected, or not numeric) are named, or the training operator refuses the model.
        result.update({TARGET: target, DROPPED_FEATURES: dropped_features(frame, features, target)})
        ctx.write_result(result)
        log.info("Validation metrics: %s", metrics)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _start_mlflow_run(
    ctx: TrainingContext, params: dict[str, Any], features: list[str], world_size: int
) -> Any:
    import mlflow

    enable_system_metrics()
    run = mlflow.start_run(run_id=ctx.run_id)
    mlflow.log_params(
        {
            "trainer": "torch_mlp",
            "hidden": json.dumps(params.get("hidden", [64, 32])),
            "epochs": params.get("epochs", 20),
            "batch_size": params.get("batch_size", 32),
            "lr": params.get("lr", 0.003),
            "world_size": world_size,
            "features": ",".join(features)[:6000],
        }
    )
    return run


def _log_model(
    ctx: TrainingContext,
    model: torch.nn.Module,
    features: list[str],
    classes: list[Any],
    mean: torch.Tensor,
    std: torch.Tensor,
    hidden: list[int],
    metrics: dict[str, float],
    frame: pd.DataFrame,
) -> dict[str, Any]:
    import mlflow
    import torch

    mlflow.log_metrics(metrics)
    spec = {
        "features": features,
        "classes": [c.item() if hasattr(c, "item") else c for c in classes],
        "hidden": hidden,
        "mean": mean.tolist(),
        "std": std.tolist(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp, "weights.pt")
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, weights)
        spec_path = Path(tmp, "spec.json")
        spec_path.write_text(json.dumps(spec))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"weights": str(weights), "spec": str(spec_path)},
            input_example=frame[features].head(5),
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"mlflow=={mlflow.__version__}",
                "pandas",
            ],
        )
    mlflow.end_run()
    return {"run_id": ctx.run_id, "model_uri": info.model_uri, "model_id": info.model_id, "metrics": metrics}


def main() -> int:
    """Train from the contract in the environment (one process of a torchrun group); the exit code."""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(levelname)s rank{os.environ.get('RANK', '0')} %(name)s: %(message)s",
        stream=sys.stdout,
    )
    train(TrainingContext.from_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
