# Trainer image for the scikit-learn demo trainer (airflow_mlops.trainer.examples.sklearn_classifier), for
# TrainModelOperator(runtime=KubernetesRuntime(image=...)). It holds only the training side of the package
# (airflow_mlops/trainer and airflow_mlops/data import no Airflow). Build from the repository root:
#   docker build -f docker/trainer-sklearn.Dockerfile -t registry.example.com/ml/trainer-sklearn:1.0 .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONPATH=/opt/trainer
RUN pip install "mlflow>=3.1" "pandas>=2.1" "pyarrow>=15" "boto3>=1.34" "scikit-learn>=1.4" "skops" "psutil"

COPY airflow_mlops/__init__.py /opt/trainer/airflow_mlops/__init__.py
COPY airflow_mlops/trainer /opt/trainer/airflow_mlops/trainer
COPY airflow_mlops/data /opt/trainer/airflow_mlops/data

# Non-root; /airflow/xcom is where the trainer writes its result (KubernetesPodOperator mounts a volume there).
RUN useradd --uid 1000 --create-home trainer && mkdir -p /airflow/xcom && chown trainer /airflow/xcom
USER 1000
WORKDIR /home/trainer
CMD ["python", "-m", "airflow_mlops.trainer.examples.sklearn_classifier"]
