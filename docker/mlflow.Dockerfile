# MLflow tracking server with the PostgreSQL driver and S3 (MinIO) artifact support.
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow==3.17.2" "psycopg2-binary==2.9.10" "boto3==1.40.0"
EXPOSE 5000
