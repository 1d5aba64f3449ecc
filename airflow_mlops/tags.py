"""
Names of the ``mlops.`` tags written to MLflow model versions and runs.

These tags make a version's lineage answerable from MLflow alone (see docs/architecture.md).
"""

from __future__ import annotations

PREFIX = "mlops."

# Data the model was trained on.
DATA_URI = "mlops.data.uri"
DATA_SHA256 = "mlops.data.sha256"
DATA_VALID_URI = "mlops.data.valid_uri"
VALIDATION_SUCCESS = "mlops.validation.success"
VALIDATION_SUMMARY = "mlops.validation.summary"

# Where the model came from.
CODE_VERSION = "mlops.code.version"
# The image a Kubernetes training pod ran, by digest (``<repository>@sha256:<hex>``), from the pod's status.
CODE_IMAGE_DIGEST = "mlops.code.image_digest"
AIRFLOW_DAG_ID = "mlops.airflow.dag_id"
AIRFLOW_RUN_ID = "mlops.airflow.run_id"
AIRFLOW_TASK_ID = "mlops.airflow.task_id"
AIRFLOW_TRY_NUMBER = "mlops.airflow.try_number"
AIRFLOW_MAP_INDEX = "mlops.airflow.map_index"
MLFLOW_RUN_ID = "mlops.mlflow.run_id"
TRAINING_RESULT = "mlops.training.result"

# Evaluation gate.
EVALUATION_SUMMARY = "mlops.evaluation.summary"
GATE_DECISION = "mlops.gate.decision"
GATE_REASON = "mlops.gate.reason"
# The package's signature of the gate decision and reason (airflow_mlops.signing), written last.
GATE_SIGNATURE = "mlops.gate.signature"

# Human approval.
APPROVAL_DECISION = "mlops.approval.decision"
APPROVAL_APPROVER = "mlops.approval.approver"
APPROVAL_TIME = "mlops.approval.time"
APPROVAL_COMMENT = "mlops.approval.comment"
# The task instance (dag/run/task/map index) that recorded the decision: its retry does not ask again.
APPROVAL_TASK = "mlops.approval.task"
# The package's signature of the five approval tags above (airflow_mlops.signing), written last.
APPROVAL_SIGNATURE = "mlops.approval.signature"
# Unsigned hint, written just before a request is made: {"task": <task instance key>, "try": <n>}. It only makes
# that task instance look for an answer Airflow already holds before it asks; it never decides the answer.
APPROVAL_ASKED = "mlops.approval.asked"

# Promotion.
PROMOTED_AT = "mlops.promotion.time"
PREVIOUS_CHAMPION = "mlops.promotion.previous_champion"

# Infra validation (the candidate served from a sandbox before promotion).
INFRA_VALIDATION_PASSED = "mlops.infra_validation.passed"
INFRA_VALIDATION_SUMMARY = "mlops.infra_validation.summary"

# Deployment and rollback. DEPLOYMENTS is both a registered-model tag (recent entries of every version,
# newest last) and a model-version tag (every entry about that version); DEPLOYMENT_TARGET is a
# registered-model tag holding the JSON config of the target the model was last deployed to.
DEPLOYMENTS = "mlops.deployments"
DEPLOYMENT_TARGET = "mlops.deployment.target"
ROLLBACK_REASON = "mlops.rollback.reason"
# The durable record of the model's last release (serving.record): a small pointer on the registered model
# and the full record on the version released.
RELEASE = "mlops.release"

# Registry aliases.
CHAMPION = "champion"
CHALLENGER = "challenger"
