"""Hook that gives operators local and S3 storage, with S3 access through the Amazon provider's ``S3Hook``."""

from __future__ import annotations

import json
import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from airflow_mlops.data.storage import Storage, mask_environment_endpoints, scheme, split_conn
from airflow_mlops.exceptions import ConnectionSetupError, StorageUnavailableError
from airflow_mlops.utils.urls import split_credentials
from airflow_mlops.version_compat import AirflowNotFoundException

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

AMAZON_EXTRA_HINT = "pip install 'airflow-provider-mlops[amazon]'"

_GCS = ("gs", "gcs")
_AZURE = ("abfs", "abfss", "az")
#: The variables gcsfs and adlfs read their default credentials and endpoints from, by scheme.
STORE_VARIABLES = {
    **dict.fromkeys(_GCS, ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")),
    **dict.fromkeys(
        _AZURE,
        (
            "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ANON", "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_TENANT_ID",
            "AZURE_STORAGE_CLIENT_SECRET",
        ),
    ),
}  # fmt: skip
#: Those of :data:`STORE_VARIABLES` that hold a credential.
STORE_SECRET_VARIABLES = frozenset(
    {
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_CLIENT_SECRET",
    }
)


def store_environment(uris: Iterable[str]) -> dict[str, str]:
    """
    What a trainer, which reads object stores without Airflow, needs for the GCS and Azure stores of *uris*.

    A URI naming an Airflow connection (``abfs://conn_id@container/...``) gives that connection's credentials
    as the store library's standard variables: an Azure Data Lake or WASB connection's ``connection_string``,
    else its account name and key (login, password) or SAS token; a Google Cloud connection's ``key_path``.
    A URI naming none gives the worker's own variables of that library (:data:`STORE_VARIABLES`). S3 goes
    through the ``aws`` connection (``TrainModelOperator``). Credentials are masked in Airflow's logs.

    :raises ConnectionSetupError: a Google Cloud connection keeps its key inline (``keyfile_dict``), which no
        variable can carry; give it as ``key_path`` or use the trainer's own identity.
    """
    env: dict[str, str] = {}
    for uri in uris:
        protocol = scheme(uri)
        conn_id = split_conn(uri)[0]
        if protocol not in STORE_VARIABLES:
            continue
        if conn_id is None:
            env.update({name: os.environ[name] for name in STORE_VARIABLES[protocol] if os.environ.get(name)})
        else:
            env.update(_connection_environment(protocol, conn_id))
    for name in STORE_SECRET_VARIABLES & set(env):
        mask_secret(env[name])
    return env


def _connection_environment(protocol: str, conn_id: str) -> dict[str, str]:
    """The store library's variables for the Airflow connection *conn_id* (see :func:`store_environment`)."""
    conn = BaseHook.get_connection(conn_id)
    extras = conn.extra_dejson

    def field(name: str) -> Any:
        return extras.get(name) or extras.get(f"extra__{conn.conn_type}__{name}")

    env: dict[str, str] = {}
    if protocol in _AZURE:
        if field("connection_string"):
            return {"AZURE_STORAGE_CONNECTION_STRING": field("connection_string")}
        if field("account_name") or conn.login:
            env["AZURE_STORAGE_ACCOUNT_NAME"] = str(field("account_name") or conn.login)
        if conn.password or field("account_key"):
            env["AZURE_STORAGE_ACCOUNT_KEY"] = str(conn.password or field("account_key"))
        if field("sas_token"):
            env["AZURE_STORAGE_SAS_TOKEN"] = field("sas_token")
        return env
    if field("keyfile_dict") and not field("key_path"):
        raise ConnectionSetupError(
            f"Google Cloud connection {conn_id!r} keeps its key inline (keyfile_dict): a trainer reads GCS "
            "without Airflow and needs a key file (key_path) or an identity of its own"
        )
    if field("key_path"):
        env["GOOGLE_APPLICATION_CREDENTIALS"] = field("key_path")
    if field("project"):
        env["GOOGLE_CLOUD_PROJECT"] = field("project")
    return env


class StorageHook(BaseHook):
    """
    Local files and S3 (or any S3-compatible store) through one :class:`~airflow_mlops.data.storage.Storage`.

    S3 goes through the Amazon provider (``apache-airflow-providers-amazon``, the ``amazon`` extra): the
    client is :class:`~airflow.providers.amazon.aws.hooks.s3.S3Hook`'s, so an ``aws`` connection works
    exactly as it does for the Amazon provider's own operators: keys (login/password or extras),
    ``role_arn`` with any ``assume_role_method`` (assume-role, web identity / IRSA), ``profile_name``,
    ``region_name``, ``verify``, ``config_kwargs``, and ``endpoint_url`` (or ``service_config.s3.endpoint_url``)
    for MinIO and other S3-compatible stores. Credentials in ``endpoint_url`` (``http://key:secret@host``) are
    refused. Local paths, and ``aws_conn_id=None`` (boto3's defaults), need neither the provider nor a
    connection; so does the default ``aws_default`` while it is not defined, as with the Amazon provider.
    Secrets are never logged; user-info in ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` is masked
    and kept out of error messages.

    Each S3 call of :meth:`get_conn`'s storage waits out an endpoint it cannot reach (a restart), trying again
    with backoff for *outage_timeout* seconds; then :class:`~airflow_mlops.exceptions.StorageUnavailableError`
    (retryable) names the endpoint, the object and the time waited.

    :param aws_conn_id: The Airflow ``aws`` connection to use; None uses boto3's defaults entirely
        (credential chain, ``AWS_REGION``, ``AWS_ENDPOINT_URL_S3``), and so does ``aws_default`` (the default)
        when no such connection is defined. Any other connection id that is not defined is refused.
    :param outage_timeout: Seconds to wait out an unreachable endpoint; default ``[mlops] service_outage_timeout``
        (300).
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "Amazon Web Services (MLOps storage)"

    def __init__(
        self, aws_conn_id: str | None = default_conn_name, outage_timeout: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self._outage_timeout = outage_timeout
        # boto3 reads these itself when a connection names no endpoint: their passwords must not reach the logs.
        mask_environment_endpoints()

    @property
    def outage_timeout(self) -> float:
        """Seconds S3 calls wait out an unreachable endpoint (the argument, else ``[mlops] service_outage_timeout``)."""
        if self._outage_timeout is None:
            from airflow_mlops.utils.config import service_outage_timeout

            self._outage_timeout = service_outage_timeout()
        return self._outage_timeout

    @cached_property
    def connection_id(self) -> str | None:
        """
        The connection in use: ``aws_conn_id``, or None for boto3's defaults.

        None where ``aws_conn_id`` is None, or is the default ``aws_default`` and no such connection is
        defined (the Amazon provider falls back the same way). Looked up on first use, never at parse time.
        """
        if self.aws_conn_id != self.default_conn_name:
            return self.aws_conn_id
        try:
            self.get_connection(self.aws_conn_id)
        except AirflowNotFoundException:
            self.log.info(
                "AWS connection %r is not defined: using boto3's default credentials, region and endpoint",
                self.aws_conn_id,
            )
            return None
        return self.aws_conn_id

    @cached_property
    def s3_hook(self) -> S3Hook:
        """The Amazon provider's S3 hook for ``aws_conn_id``, the connection checked first."""
        try:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        except ImportError as err:
            raise ConnectionSetupError(
                f"Reading or writing s3:// locations needs the Amazon provider: {AMAZON_EXTRA_HINT} "
                "(apache-airflow-providers-amazon). Local paths work without it."
            ) from err
        if self.connection_id is not None:
            try:
                self.get_connection(self.connection_id)
            except AirflowNotFoundException as err:
                raise ConnectionSetupError(
                    f"AWS connection {self.aws_conn_id!r} is not defined. Create a connection of type 'aws' "
                    "(as for the Amazon provider: keys, role_arn, profile_name; extra "
                    '{"endpoint_url": ...} for an S3-compatible store), or pass aws_conn_id=None to use '
                    "boto3's default credential chain."
                ) from err
        hook = S3Hook(aws_conn_id=self.connection_id)
        if self.connection_id is not None:
            try:
                endpoint_url = hook.conn_config.get_service_endpoint_url("s3")
            except (TypeError, ValueError) as err:
                raise ConnectionSetupError(
                    f"AWS connection {self.aws_conn_id!r} is not valid: {err}"
                ) from err
            if endpoint_url:
                self._refuse_credentials_in(str(endpoint_url))
        return hook

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

    @cached_property
    def _settings(self) -> dict[str, Any]:
        """
        What trainers need to reach S3 as this connection does (holds secrets: never log or return it).

        The keys are the connection's own credentials, resolved by the Amazon provider (an assumed role gives
        its temporary keys and session token); None when the connection names none, so that a trainer uses
        its own ambient identity (environment, instance or pod role).
        """
        if self.connection_id is None:
            return {}
        hook = self.s3_hook
        wrapper = hook.conn_config
        own_credentials = bool(
            wrapper.aws_access_key_id or wrapper.role_arn or wrapper.profile_name or wrapper.aws_session_token
        )
        access_key = secret_key = token = None
        if own_credentials:
            try:
                credentials = hook.get_credentials()
            except Exception as err:
                from airflow_mlops.data.storage import is_storage_error

                if not is_storage_error(err):
                    raise
                raise ConnectionSetupError(
                    f"AWS connection {self.aws_conn_id!r}: cannot get its credentials: {type(err).__name__}"
                ) from err
            access_key, secret_key, token = credentials.access_key, credentials.secret_key, credentials.token
        return {
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "aws_session_token": token,
            "region_name": wrapper.region_name,
            "endpoint_url": wrapper.get_service_endpoint_url("s3"),
            # Resolved above into keys: a trainer must not look the profile up again (it has no such file).
            "profile_name": None if own_credentials else wrapper.profile_name,
            "verify": wrapper.verify,
        }

    def get_client(self) -> Any:
        """A new boto3 S3 client built by the Amazon provider from the connection (boto3's own without one)."""
        if self.connection_id is None:
            return Storage().client
        hook = self.s3_hook
        self.log.info("Building S3 client: %s", self.describe())
        try:
            return hook.get_client_type(region_name=hook.region_name)
        except TypeError as err:
            raise ConnectionSetupError(
                f"AWS connection {self.aws_conn_id!r}: extra 'config_kwargs' is not valid for botocore Config: "
                f"{err}"
            ) from err

    def get_conn(self) -> Storage:
        """A :class:`~airflow_mlops.data.storage.Storage` whose S3 client comes from the connection."""
        return Storage(
            s3_client=None if self.connection_id is None else self.get_client(),
            outage_timeout=self.outage_timeout,
            unavailable_error=StorageUnavailableError,
            s3_client_for=self._client_of,
        )

    def _client_of(self, conn_id: str) -> Any:
        """The S3 client of an ``s3://conn_id@bucket/...`` URI's connection."""
        return StorageHook(aws_conn_id=conn_id, outage_timeout=self.outage_timeout).get_client()

    @cached_property
    def storage(self) -> Storage:
        """The storage of :meth:`get_conn`, built once per hook."""
        return self.get_conn()

    def storage_for(self, *uris: str) -> Storage:
        """
        Storage able to reach *uris*: the ``aws`` connection's when one is on S3.

        Other stores take the connection their URI names (``gs://conn_id@bucket/...``) or their library's
        defaults, and need neither the Amazon provider nor an ``aws`` connection.
        """
        if any(scheme(uri) == "s3" for uri in uris):
            return self.storage
        return Storage(
            outage_timeout=self.outage_timeout,
            unavailable_error=StorageUnavailableError,
            s3_client_for=self._client_of,
        )

    def reaches(self, uri: str) -> bool:
        """
        Whether the worker reaches *uri* itself: False for S3 without an ``aws`` connection.

        A trainer may then hold credentials of its own (a pod's service account) that the worker lacks.
        """
        return scheme(uri) != "s3" or self.connection_id is not None

    def describe(self) -> str:
        """Short, secret-free description for logs."""
        if self.connection_id is None:
            return json.dumps({"conn_id": None, "credentials": "boto3 default chain"})
        wrapper = self.s3_hook.conn_config
        if wrapper.role_arn:
            credentials = f"role {wrapper.role_arn} ({wrapper.assume_role_method or 'assume_role'})"
        elif wrapper.aws_access_key_id:
            credentials = "connection"
        elif wrapper.profile_name:
            credentials = f"profile {wrapper.profile_name}"
        else:
            credentials = "boto3 default chain"
        return json.dumps(
            {
                "conn_id": self.aws_conn_id,
                "endpoint_url": wrapper.get_service_endpoint_url("s3"),
                "region_name": wrapper.region_name,
                "credentials": credentials,
            }
        )

    def test_connection(self) -> tuple[bool, str]:
        """
        Test the connection as the Amazon provider does: STS ``GetCallerIdentity``, which needs no permission.

        Listing buckets would need ``s3:ListAllMyBuckets``, which a role limited to its own bucket lacks. The
        STS endpoint is ``service_config.sts.endpoint_url``, else the connection's ``endpoint_url``; an
        S3-compatible store without STS fails this test, though it may serve S3 calls.
        """
        try:
            if self.connection_id is None:
                import boto3

                sts = boto3.client("sts")
            else:
                hook = self.s3_hook
                sts = hook.get_session(region_name=hook.region_name).client(
                    "sts",
                    # service_config.sts.endpoint_url, else the connection's endpoint (an S3-compatible store)
                    endpoint_url=hook.conn_config.get_service_endpoint_url("sts"),
                    config=hook.config,
                    verify=hook.verify,
                )
            identity = sts.get_caller_identity()
        except Exception as err:
            return False, f"Cannot authenticate to AWS with connection {self.aws_conn_id!r}: {err}"
        who = identity.get("Arn") or "an unknown identity"
        return True, f"Connected to AWS with connection {self.aws_conn_id!r} as {who}"
