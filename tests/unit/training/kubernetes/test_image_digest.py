"""The image digest a training pod ran, read from its status whatever the container runtime, and its facet."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.training.kubernetes.images import image_digest

DIGEST = "sha256:" + "ab" * 32


def pod(image_id: str, name: str = "base") -> dict:
    return {"status": {"containerStatuses": [
        {"name": "airflow-xcom-sidecar", "imageID": "docker.io/library/alpine@sha256:" + "cd" * 32},
        {"name": name, "image": "trainer:1.0", "imageID": image_id},
    ]}}  # fmt: skip


@pytest.mark.parametrize(
    ("image_id", "expected"),
    [
        (f"registry.example.com/trainer@{DIGEST}", f"registry.example.com/trainer@{DIGEST}"),  # containerd
        (
            f"docker-pullable://registry.example.com/trainer@{DIGEST}",
            f"registry.example.com/trainer@{DIGEST}",
        ),
        (f"docker://{DIGEST}", DIGEST),  # an image built on the node: its local id
        ("", None),  # not started yet
    ],
)
def test_the_digest_of_the_trainer_container_whatever_the_runtime_reports(image_id, expected):
    assert image_digest(pod(image_id), "base") == expected


def test_no_status_no_digest():
    assert image_digest(None, "base") is None
    assert image_digest(pod(f"trainer@{DIGEST}", name="node"), "base") is None  # another container's


def test_the_model_version_facet_carries_the_image_digest():
    pytest.importorskip("airflow.providers.openlineage")
    from openlineage.client.serde import Serde

    from airflow_mlops.lineage.openlineage import model_version_facet

    provenance = {"model_name": "churn", "version": "4", "code_version": "3f2c9d1e",
                  "image_digest": f"registry.example.com/trainer@{DIGEST}"}  # fmt: skip
    facet = json.loads(Serde.to_json(model_version_facet(provenance)))
    assert (facet["codeVersion"], facet["imageDigest"]) == (
        "3f2c9d1e",
        f"registry.example.com/trainer@{DIGEST}",
    )
    assert "imageDigest" not in json.loads(
        Serde.to_json(model_version_facet({"model_name": "m", "version": "1"}))
    )
