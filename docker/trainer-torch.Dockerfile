# Trainer image for the PyTorch demo trainer (airflow_mlops.trainer.examples.torch_mlp): GPUs with CUDA,
# DDP with torchrun on one or many nodes. It holds only the training side of the package
# (airflow_mlops/trainer and airflow_mlops/data import no Airflow). Build from the repository root:
#   docker build -f docker/trainer-torch.Dockerfile -t registry.example.com/ml/trainer-torch:1.0 .
# BASE_IMAGE: an official PyTorch runtime image whose CUDA version the nodes' NVIDIA driver supports.
# For a CPU-only image: --build-arg BASE_IMAGE=python:3.11-slim --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=""

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONPATH=/opt/trainer
# torch comes with the base image; a plain Python base gets it from TORCH_INDEX_URL.
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4"; fi \
 && python -c "import torch" \
 && pip install "mlflow>=3.1" "pandas>=2.1" "pyarrow>=15" "boto3>=1.34" "psutil" "nvidia-ml-py"

COPY airflow_mlops/__init__.py /opt/trainer/airflow_mlops/__init__.py
COPY airflow_mlops/trainer /opt/trainer/airflow_mlops/trainer
COPY airflow_mlops/data /opt/trainer/airflow_mlops/data

# Non-root; /airflow/xcom is where the trainer writes its result (a volume, or the termination-message file
# of a multi-node Job's pods).
RUN useradd --uid 1000 --create-home trainer && mkdir -p /airflow/xcom && chown trainer /airflow/xcom
USER 1000
WORKDIR /home/trainer
CMD ["python", "-m", "airflow_mlops.trainer.examples.torch_mlp"]
