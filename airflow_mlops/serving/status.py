"""
What a serving target reports: the :class:`Deployment` it serves and its :class:`Health`.

Apart from :mod:`airflow_mlops.serving.base` (the target interface), which DAG files load to check a literal
target's settings: these value objects are needed only once a task runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True)
class Deployment:
    """
    A model version as served by a target.

    What :meth:`DeployTarget.deploy` returns and what :meth:`DeployTarget.current` finds. JSON round-trips
    through :meth:`to_dict` / :meth:`from_dict`.

    :param model_name: Registered model name.
    :param version: Registered model version (a string, as MLflow writes it).
    :param model_uri: What the target loaded (``models:/name/3``, an ``s3://`` artifact location...).
    :param target: Kind of the target that serves it (``"local"``, ``"kserve"``, a registered kind).
    :param endpoint: Base URL clients call (predictions at ``<endpoint>/invocations``).
    :param deployed_at: When this version started serving (ISO 8601 UTC).
    :param ready: Whether the target reported it ready; False while a remote rollout is still in progress.
    :param details: Target-specific, JSON-serialisable facts (process ids, resource names, generation).
    """

    model_name: str
    version: str
    model_uri: str
    target: str
    endpoint: str
    deployed_at: str
    ready: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class Health:
    """Result of :meth:`DeployTarget.health`: whether the deployment answers, and what it said."""

    ok: bool
    message: str
