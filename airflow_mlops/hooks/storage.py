"""Hook that gives operators local and S3 storage, with S3 credentials from an Airflow ``aws`` connection."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_mlops.data.storage import Storage, is_s3
from airflow_mlops.exceptions import ConnectionSetupError
from airflow_mlops.utils.urls import split_credentials

# Extras of the Amazon provider's ``aws`` connection that this hook cannot honour; silently ignoring them
# would talk to S3 as someone else than the connection says.
_UNSUPPORTED_EXTRAS = ("role_arn", "assume_role_method")


class StorageHook(BaseHook):
    """
    Local files and S3 (or any S3-compatible store) through one :class:`~airflow_mlops.data.storage.Storage`.

    The S3 client is built from an Airflow connection of type ``aws``, read the way the Amazon provider reads
    it: login = access key id, password = secret access key; extras ``endpoint_url`` (or
    ``service_config.s3.endpoint_url``), ``region_name``, ``aws_session_token``, ``profile_name``,
    ``verify`` (false, or a CA bundle path) and ``config_kwargs`` (botocore ``Config`` arguments, for
    example ``{"s3": {"addressing_style": "path"}}``). Role assumption (``role_arn``) is not supported, nor
    credentials in ``endpoint_url`` (``http://key:secret@host`` is refused). Without a login, boto3's default
    credential chain (environment, instance or pod role) supplies the credentials. Secrets are never logged.

    :param aws_conn_id: The Airflow ``aws`` connection to use; None uses boto3's defaults entirely
        (credential chain, ``AWS_REGION``, ``AWS_ENDPOINT_URL_S3``).
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "Amazon Web Services (MLOps storage)"

    def __init__(self, aws_conn_id: str | None = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    @cached_property
    def _settings(self) -> dict[str, Any]:
        """Client settings from the connection (holds secrets: never log or return it)."""
        if self.aws_conn_id is None:
            return {}
        try:
            conn = self.get_connection(self.aws_conn_id)
        except AirflowNotFoundException as err:
            raise ConnectionSetupError(
                f"AWS connection {self.aws_conn_id!r} is not defined. Create a connection of type 'aws' "
                '(login = access key id, password = secret access key, extra {"endpoint_url": ...} for an '
                "S3-compatible store), or pass aws_conn_id=None to use boto3's default credential chain."
            ) from err
        extra = conn.extra_dejson
        if not isinstance(extra, dict):
            raise ConnectionSetupError(f"AWS connection {self.aws_conn_id!r}: extra must be a JSON object")
        unsupported = sorted(name for name in _UNSUPPORTED_EXTRAS if extra.get(name))
        if unsupported:
            raise ConnectionSetupError(
                f"AWS connection {self.aws_conn_id!r} sets {', '.join(unsupported)}, which airflow-mlops "
                "storage does not support: give the credentials directly (login/password) or through the "
                "environment (instance or pod role)."
            )
        service_s3 = (extra.get("service_config") or {}).get("s3") or {}
        config_kwargs = extra.get("config_kwargs") or {}
        if not isinstance(config_kwargs, dict):
            raise ConnectionSetupError(
                f"AWS connection {self.aws_conn_id!r}: extra 'config_kwargs' must be a JSON object"
            )
        endpoint_url = service_s3.get("endpoint_url") or extra.get("endpoint_url") or None
        if endpoint_url:
            self._refuse_credentials_in(str(endpoint_url))
        return {
            "aws_access_key_id": conn.login or extra.get("aws_access_key_id") or None,
            "aws_secret_access_key": conn.password or extra.get("aws_secret_access_key") or None,
            "aws_session_token": extra.get("aws_session_token") or None,
            "region_name": extra.get("region_name") or service_s3.get("region_name") or None,
            "endpoint_url": endpoint_url,
            "profile_name": extra.get("profile_name") or None,
            "verify": extra.get("verify"),
            "config_kwargs": config_kwargs,
        }

    def _refuse_credentials_in(self, endpoint_url: str) -> None:
        """Refuse (and mask) user-info in ``endpoint_url``: S3 never authenticates with it, and URLs are shown."""
        from airflow.sdk.log import mask_secret

        try:
            split = split_credentials(endpoint_url)
        except ValueError as err:
            raise ConnectionSetupError(f"AWS connection {self.aws_conn_id!r}: endpoint_url: {err}") from None
        if split.password:
            mask_secret(split.password)
        if split.username or split.password:
            raise ConnectionSetupError(
                f"AWS connection {self.aws_conn_id!r}: endpoint_url {split.url!r} carries credentials "
                "(user:password@), which S3 does not read and which would reach logs and trainers. Give the "
                "access key id as login and the secret access key as password, and endpoint_url as "
                "scheme://host[:port] only."
            )

    def get_client(self) -> Any:
        """A new boto3 S3 client built from the connection."""
        import boto3

        if self.aws_conn_id is None:
            return Storage().s3
        settings = self._settings
        session = boto3.session.Session(
            aws_access_key_id=settings["aws_access_key_id"],
            aws_secret_access_key=settings["aws_secret_access_key"],
            aws_session_token=settings["aws_session_token"],
            region_name=settings["region_name"],
            profile_name=settings["profile_name"],
        )
        client_kwargs: dict[str, Any] = {}
        if settings["endpoint_url"]:
            client_kwargs["endpoint_url"] = settings["endpoint_url"]
        if settings["verify"] is not None:
            client_kwargs["verify"] = settings["verify"]
        if settings["config_kwargs"]:
            from botocore.config import Config

            try:
                client_kwargs["config"] = Config(**settings["config_kwargs"])
            except TypeError as err:
                raise ConnectionSetupError(
                    f"AWS connection {self.aws_conn_id!r}: extra 'config_kwargs' is not valid for botocore "
                    f"Config: {err}"
                ) from err
        self.log.info("Building S3 client: %s", self.describe())
        return session.client("s3", **client_kwargs)

    def get_conn(self) -> Storage:
        """A :class:`~airflow_mlops.data.storage.Storage` whose S3 client comes from the connection."""
        if self.aws_conn_id is None:
            return Storage()
        return Storage(s3_client=self.get_client())

    @cached_property
    def storage(self) -> Storage:
        """The storage of :meth:`get_conn`, built once per hook."""
        return self.get_conn()

    def storage_for(self, *uris: str) -> Storage:
        """Storage able to reach *uris*: the connection's when one is on S3; local-only work needs none."""
        return self.storage if any(is_s3(uri) for uri in uris) else Storage()

    def describe(self) -> str:
        """Short, secret-free description for logs."""
        if self.aws_conn_id is None:
            return json.dumps({"conn_id": None, "credentials": "boto3 default chain"})
        settings = self._settings
        return json.dumps(
            {
                "conn_id": self.aws_conn_id,
                "endpoint_url": settings["endpoint_url"],
                "region_name": settings["region_name"],
                "credentials": "connection" if settings["aws_access_key_id"] else "boto3 default chain",
            }
        )

    def test_connection(self) -> tuple[bool, str]:
        """Test the connection by listing buckets."""
        try:
            self.get_client().list_buckets()
        except Exception as err:
            return False, f"Cannot list S3 buckets with connection {self.aws_conn_id!r}: {err}"
        return True, f"Connected to S3 with connection {self.aws_conn_id!r}"
