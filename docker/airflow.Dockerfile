# Airflow 3 with airflow-provider-mlops installed from this repository.
# Installing the provider must not move Airflow or any of its pins: the constraint below makes pip refuse.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml README.md LICENSE NOTICE /opt/airflow-mlops/
COPY --chown=airflow:root airflow_mlops /opt/airflow-mlops/airflow_mlops
RUN echo "apache-airflow==3.3.2" > /tmp/keep-airflow.txt \
 && pip install --no-cache-dir -c /tmp/keep-airflow.txt "/opt/airflow-mlops[demo,amazon]"
