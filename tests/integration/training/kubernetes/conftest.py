"""The API-server stand-in and the data the Kubernetes training tests share."""

from __future__ import annotations

import pytest

from tests.conftest import set_connection
from tests.support.kubernetes import KubePodStub
from tests.support.kubernetes_training import CONN_ID
from tests.support.training import write_snapshot


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    """The stand-in, reached through the ``kubernetes_training_stub`` connection (namespace ``ml``)."""
    with KubePodStub() as stub:
        config = stub.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
        set_connection(
            CONN_ID, conn_type="kubernetes", extra={"kube_config_path": str(config), "namespace": "ml"}
        )
        yield stub


@pytest.fixture
def stub(kube):
    """The stand-in with no pods scripted and nothing recorded; the test's objects must all be valid."""
    kube.script_pods()
    for recorded in (kube.created, kube.deleted, kube.rejected, kube.secrets, kube.queues, kube.admitted):
        recorded.clear()
    yield kube
    assert kube.rejected == [], "the API server stand-in refused an invalid object"


@pytest.fixture
def snapshot(data_root) -> str:
    return write_snapshot(data_root)


@pytest.fixture
def experiment(request) -> str:
    return f"k8s-{request.node.name}"
