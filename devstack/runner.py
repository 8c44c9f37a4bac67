"""Dev-only ECS task runner: runs the tasks that the AWS emulator accepts but never starts.

The emulator (moto in server mode) records RunTask calls without starting containers. This
runner polls it for tasks with desired status RUNNING and runs each new task's essential
container on the local Docker engine, as ECS would. It pulls the image with a registry token
from ECR GetAuthorizationToken. The command and environment come from the task definition
and overrides, and secrets from Secrets Manager or SSM. The container gets host networking
and its memory limit. When the container exits, the runner stops the task in the emulator with the exit code in
the stop reason, publishes "ECS Task State Change" events with EventBridge PutEvents, and
appends a record to `<state>/runner/tasks.jsonl`.

It refuses to start unless AWS_ENDPOINT_URL points at a loopback address, so it can never
stop tasks in a real AWS account. Run it with `python -m devstack.runner`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import docker
import docker.errors
import requests.exceptions

from devstack import runner_containers as containers
from devstack import runner_events as events

LOGGER = logging.getLogger("devstack.runner")
OUTPUT_LOGGER = logging.getLogger("devstack.runner.output")

# The local stack's state folder: `.stack` at the root of this checkout.
DEFAULT_STATE_DIR = Path(__file__).resolve().parents[1] / ".stack"
DEFAULT_POLL_INTERVAL_SECONDS = 1.0
# Placeholder credentials for the emulator, used when the environment sets none.
EMULATOR_ACCESS_KEY = "testing"
# Backoff for retried AWS calls: 1, 2, 4, ... seconds, capped.
MAX_BACKOFF_SECONDS = 30.0
TASK_CALL_MAX_ATTEMPTS = 6
DESCRIBE_TASKS_BATCH = 100
# ECS waits 30 s between SIGTERM and SIGKILL when a container sets no stopTimeout.
DEFAULT_STOP_TIMEOUT_SECONDS = 30
SHUTDOWN_GRACE_SECONDS = 30.0
MIN_MASKED_SECRET_LENGTH = 4

LABEL_TASK_ARN = "com.amazonaws.ecs.task-arn"
LABEL_CLUSTER = "com.amazonaws.ecs.cluster"
LABEL_CONTAINER_NAME = "com.amazonaws.ecs.container-name"
LABEL_FAMILY = "com.amazonaws.ecs.task-definition-family"
LABEL_REVISION = "com.amazonaws.ecs.task-definition-version"
LABEL_RUNNER = "devstack.runner"

TRANSIENT_AWS_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)

Result = TypeVar("Result")


class SettingsError(ValueError):
    """A runner setting is missing or invalid."""


class TaskStartError(RuntimeError):
    """A task could not start. `kind` is the ECS error name that prefixes the stop reason."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class RunnerSettings:
    """Settings of the runner, read from the environment."""

    endpoint_url: str
    region: str
    state_dir: Path
    poll_interval_seconds: float
    clusters: frozenset[str]  # cluster names or ARNs to serve, or empty to serve all
    access_key_id: str
    secret_access_key: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> RunnerSettings:
        """Read and validate the settings, or raise SettingsError naming the variable."""
        endpoint_url = environ.get("AWS_ENDPOINT_URL", "")
        if not endpoint_url:
            raise SettingsError("AWS_ENDPOINT_URL is missing: set it to the AWS emulator, e.g. http://127.0.0.1:5001")
        host = urllib.parse.urlsplit(endpoint_url).hostname or ""
        if not (host == "localhost" or host == "::1" or host.startswith("127.")):
            raise SettingsError(
                f"AWS_ENDPOINT_URL={endpoint_url!r} is not a loopback address: the dev task "
                "runner stops tasks and must only talk to the local AWS emulator"
            )
        interval_text = environ.get("DEVSTACK_RUNNER_POLL_INTERVAL", "")
        try:
            interval = float(interval_text) if interval_text else DEFAULT_POLL_INTERVAL_SECONDS
        except ValueError as error:
            raise SettingsError(
                f"DEVSTACK_RUNNER_POLL_INTERVAL={interval_text!r} is invalid: expected seconds"
            ) from error
        if interval <= 0:
            raise SettingsError("DEVSTACK_RUNNER_POLL_INTERVAL must be greater than 0 seconds")
        clusters = environ.get("DEVSTACK_RUNNER_CLUSTERS", "")
        return cls(
            endpoint_url=endpoint_url,
            region=environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or "us-east-1",
            state_dir=Path(environ.get("DEVSTACK_STATE_DIR") or DEFAULT_STATE_DIR),
            poll_interval_seconds=interval,
            clusters=frozenset(name.strip() for name in clusters.split(",") if name.strip()),
            access_key_id=environ.get("AWS_ACCESS_KEY_ID") or EMULATOR_ACCESS_KEY,
            secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or EMULATOR_ACCESS_KEY,
        )

    def serves_cluster(self, cluster_arn: str) -> bool:
        """Return whether the runner serves the cluster with this ARN."""
        if not self.clusters:
            return True
        return cluster_arn in self.clusters or cluster_arn.rsplit("/", 1)[-1] in self.clusters


@dataclass(frozen=True)
class AwsClients:
    """boto3 clients for the emulator. botocore clients are safe to share across threads."""

    ecs: Any
    ecr: Any
    events: Any
    secretsmanager: Any
    ssm: Any

    @classmethod
    def connect(cls, settings: RunnerSettings) -> AwsClients:
        """Create the clients. Retries are left to `call_aws`, which logs each one.

        The credentials are always explicit, so boto3 never searches its credential chain
        (which would query the EC2 instance metadata endpoint). The emulator accepts any.
        """
        session = boto3.session.Session(
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
        )
        config = botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        )

        def client(service: str) -> Any:
            return session.client(service, endpoint_url=settings.endpoint_url, config=config)

        return cls(
            ecs=client("ecs"),
            ecr=client("ecr"),
            events=client("events"),
            secretsmanager=client("secretsmanager"),
            ssm=client("ssm"),
        )


def is_transient_aws_error(error: BaseException) -> bool:
    """Return whether an AWS call may succeed when retried (no connection, or a 5xx reply)."""
    if isinstance(error, TRANSIENT_AWS_ERRORS):
        return True
    if isinstance(error, botocore.exceptions.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status) >= 500
    return False


def backoff_seconds(attempt: int) -> float:
    """Return the delay before retry number `attempt` (1-based)."""
    return float(min(MAX_BACKOFF_SECONDS, 2 ** (attempt - 1)))


def call_aws(
    description: str,
    operation: Callable[[], Result],
    interrupt: threading.Event,
    max_attempts: int | None = None,
) -> Result:
    """Run an AWS call, retrying transient errors with a bounded backoff and logging each.

    Retries stop after `max_attempts` (None means no limit) or once `interrupt` is set.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            result = operation()
        except Exception as error:
            out_of_attempts = max_attempts is not None and attempt >= max_attempts
            if not is_transient_aws_error(error) or out_of_attempts or interrupt.is_set():
                raise
            delay = backoff_seconds(attempt)
            LOGGER.warning(
                "%s failed (attempt %d), retrying in %.0f s: %s",
                description,
                attempt,
                delay,
                error,
            )
            if interrupt.wait(delay):
                raise
            continue
        if attempt > 1:
            LOGGER.info("%s succeeded after %d attempts", description, attempt)
        return result


class StateStore:
    """Files under `<state>/runner/`: handled task ARNs and one JSON record per finished task.

    Each append is one write under an exclusive file lock, so lines from concurrent task
    threads (or a second runner process) never interleave.
    """

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "runner"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.handled_path = self.directory / "handled_tasks.txt"
        self.records_path = self.directory / "tasks.jsonl"
        self._lock = threading.Lock()

    def load_handled(self) -> set[str]:
        """Return the task ARNs that any runner using this state folder has taken on."""
        if not self.handled_path.exists():
            return set()
        return {line.strip() for line in self.handled_path.read_text().splitlines() if line.strip()}

    def load_finished(self) -> set[str]:
        """Return the task ARNs that have a record in tasks.jsonl."""
        if not self.records_path.exists():
            return set()
        finished: set[str] = set()
        for line in self.records_path.read_text().splitlines():
            try:
                finished.add(json.loads(line)["task_arn"])
            except (ValueError, KeyError, TypeError):
                LOGGER.warning("Skipping an invalid line in %s: %.80s", self.records_path, line)
        return finished

    def mark_handled(self, task_arn: str) -> None:
        """Persist that the task was taken on, so a restarted runner does not run it again."""
        self._append(self.handled_path, task_arn + "\n")

    def append_record(self, record: dict[str, Any]) -> None:
        """Append one finished-task record as a JSON line."""
        self._append(self.records_path, json.dumps(record, sort_keys=True) + "\n")

    def _append(self, path: Path, text: str) -> None:
        with self._lock, open(path, "a", encoding="utf-8") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            try:
                file.write(text)
                file.flush()
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)


class SecretMasker:
    """Replaces known secret values in container output with `****`."""

    def __init__(self, values: Iterable[str]) -> None:
        fragments: set[str] = set()
        for value in values:
            fragments.add(value)
            fragments.update(value.splitlines())
        # Longest first, so a secret that contains another is masked whole.
        self._fragments = sorted(
            (fragment for fragment in fragments if len(fragment) >= MIN_MASKED_SECRET_LENGTH),
            key=len,
            reverse=True,
        )

    def mask(self, line: str) -> str:
        """Return the line with every known secret value replaced."""
        for fragment in self._fragments:
            line = line.replace(fragment, "****")
        return line


def short_task_id(task_arn: str) -> str:
    """Return the first 8 characters of the task ID, used to prefix log lines."""
    return task_arn.rsplit("/", 1)[-1][:8]


def task_arn_cluster(task_arn: str) -> str | None:
    """Return the cluster name in a long-format task ARN, or None for the short format."""
    parts = task_arn.split(":", 5)[-1].split("/")
    return parts[1] if len(parts) == 3 else None


def utc_now() -> dt.datetime:
    """Return the current time in UTC."""
    return dt.datetime.now(dt.UTC)


def decode_ecr_token(authorization_token: str) -> dict[str, str]:
    """Decode an ECR authorization token (base64 of `user:password`) into a Docker auth config."""
    username, _, password = base64.b64decode(authorization_token).decode().partition(":")
    return {"username": username, "password": password}


class TaskExecution:
    """Runs one ECS task to its end in its own thread, then reports it to the emulator."""

    def __init__(
        self,
        task: dict[str, Any],
        aws: AwsClients,
        api: docker.APIClient,
        store: StateStore,
        shutdown: threading.Event,
    ) -> None:
        self.task = task
        self.task_arn: str = task["taskArn"]
        self.short_id = short_task_id(self.task_arn)
        self.aws = aws
        self.api = api
        self.store = store
        self.shutdown = shutdown
        self.never_interrupted = threading.Event()
        created_at = task.get("createdAt")
        # NOTE: moto 5.2.5 returns no createdAt, so the time the runner first saw the task
        # is used instead.
        self.state = events.TaskRunState(created_at=created_at if isinstance(created_at, dt.datetime) else utc_now())
        self.task_definition: dict[str, Any] = {}
        self.spec: containers.ContainerSpec | None = None
        self.environment: dict[str, str] = {}
        self.container_id: str | None = None
        self.stopped_by_runner = False
        self.thread = threading.Thread(target=self.run, name=f"task-{self.short_id}", daemon=True)

    @property
    def container_name(self) -> str:
        if self.spec:
            return self.spec.name
        described = self.task.get("containers") or [{}]
        return str(described[0].get("name", ""))

    @property
    def image(self) -> str:
        if self.spec:
            return self.spec.image
        described = self.task.get("containers") or [{}]
        return str(described[0].get("image", ""))

    def run(self) -> None:
        """Run the task, and log and report every failure instead of raising it."""
        try:
            self._run()
        except Exception:
            LOGGER.exception("Task %s failed in the runner itself", self.task_arn)
            if self.state.last_status == "STOPPED":
                return
            self.state.error = "the dev task runner failed; see its log"
            if self.state.started_at is None:
                self.report_stopped(
                    events.STOP_CODE_TASK_FAILED_TO_START,
                    events.failed_to_start_reason(
                        events.RESOURCE_INITIALIZATION_ERROR,
                        "internal error in the dev task runner",
                    ),
                )
            else:
                self.report_stopped(
                    events.STOP_CODE_ESSENTIAL_CONTAINER_EXITED,
                    events.essential_container_exited_reason(self.container_name, None),
                )

    def _run(self) -> None:
        try:
            self._prepare()
            image = self._pull()
            if self.shutdown.is_set():
                self.stopped_by_runner = True
                raise TaskStartError(
                    events.RESOURCE_INITIALIZATION_ERROR,
                    "the dev task runner shut down before the container started",
                )
            self._start_container(image)
        except TaskStartError as error:
            self._fail_to_start(error)
            return
        if self.shutdown.is_set():
            # Shutdown began while the container was being created, so `request_stop`
            # may have found no container to stop.
            self.request_stop()
        try:
            self._publish_event()
            self._follow_container()
        finally:
            self._remove_container()
        self._finish_exited()

    def _prepare(self) -> None:
        """Describe the task definition, compute the container and resolve its secrets."""
        definition_arn = self.task["taskDefinitionArn"]
        try:
            self.task_definition = call_aws(
                f"DescribeTaskDefinition {definition_arn}",
                lambda: self.aws.ecs.describe_task_definition(taskDefinition=definition_arn),
                self.never_interrupted,
                TASK_CALL_MAX_ATTEMPTS,
            )["taskDefinition"]
            self.spec = containers.build_container_spec(self.task_definition, self.task.get("overrides"))
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
        ) as error:
            raise TaskStartError(
                events.RESOURCE_INITIALIZATION_ERROR,
                f"failed to describe task definition {definition_arn}: {error}",
            ) from error
        except containers.TaskDefinitionError as error:
            raise TaskStartError(events.RESOURCE_INITIALIZATION_ERROR, str(error)) from error

        self._log_ignored_settings(self.spec)
        self.environment = dict(self.spec.environment)
        for name, reference in self.spec.secrets.items():
            if name in self.environment:
                LOGGER.warning(
                    "Task %s: secret %s replaces the environment variable of the same name",
                    self.task_arn,
                    name,
                )
            self.environment[name] = self._resolve_secret(name, reference)

    def _log_ignored_settings(self, spec: containers.ContainerSpec) -> None:
        if spec.ignored_container_names:
            LOGGER.warning(
                "Task %s: runs only container %r; not running %s",
                self.task_arn,
                spec.name,
                ", ".join(spec.ignored_container_names),
            )
        if spec.unsupported_settings:
            LOGGER.warning(
                "Task %s: ignoring unsupported container settings: %s",
                self.task_arn,
                ", ".join(spec.unsupported_settings),
            )

    def _resolve_secret(self, name: str, reference: containers.SecretReference) -> str:
        try:
            if reference.kind == "ssm":
                return self._read_ssm_parameter(reference)
            return self._read_secrets_manager_secret(reference)
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
        ) as error:
            service = "SSM" if reference.kind == "ssm" else "Secrets Manager"
            raise TaskStartError(
                events.RESOURCE_INITIALIZATION_ERROR,
                f"unable to pull secrets or registry auth: unable to retrieve secret {name} "
                f"({reference.secret_id}) from {service}: {error}",
            ) from error

    def _read_ssm_parameter(self, reference: containers.SecretReference) -> str:
        response = call_aws(
            f"GetParameter {reference.secret_id}",
            lambda: self.aws.ssm.get_parameter(Name=reference.secret_id, WithDecryption=True),
            self.never_interrupted,
            TASK_CALL_MAX_ATTEMPTS,
        )
        return str(response["Parameter"]["Value"])

    def _read_secrets_manager_secret(self, reference: containers.SecretReference) -> str:
        request: dict[str, str] = {"SecretId": reference.secret_id}
        if reference.version_stage:
            request["VersionStage"] = reference.version_stage
        if reference.version_id:
            request["VersionId"] = reference.version_id
        response = call_aws(
            f"GetSecretValue {reference.secret_id}",
            lambda: self.aws.secretsmanager.get_secret_value(**request),
            self.never_interrupted,
            TASK_CALL_MAX_ATTEMPTS,
        )
        secret_string = response.get("SecretString")
        if secret_string is None:
            raise TaskStartError(
                events.RESOURCE_INITIALIZATION_ERROR,
                f"secret {reference.secret_id} has no SecretString; binary secrets are not supported",
            )
        if reference.json_key is None:
            return str(secret_string)
        return self._extract_json_key(reference, secret_string)

    def _extract_json_key(self, reference: containers.SecretReference, secret: str) -> str:
        # The messages name the secret and key only: the secret text must never reach a log.
        try:
            document = json.loads(secret)
        except ValueError:
            document = None
        if not isinstance(document, dict) or reference.json_key not in document:
            raise TaskStartError(
                events.RESOURCE_INITIALIZATION_ERROR,
                f"secret {reference.secret_id} is not a JSON object with key {reference.json_key!r}",
            )
        value = document[reference.json_key]
        return value if isinstance(value, str) else json.dumps(value)

    def _registry_auth(self, registry: str) -> dict[str, str]:
        """Return Docker auth for the registry from the emulator's ECR token.

        The token's `proxyEndpoint` names a public ECR host, so it is ignored: the auth is
        sent only to the registry named in the image reference, which is on loopback.
        """
        try:
            response = call_aws(
                "ECR GetAuthorizationToken",
                self.aws.ecr.get_authorization_token,
                self.never_interrupted,
                TASK_CALL_MAX_ATTEMPTS,
            )
            token = response["authorizationData"][0]["authorizationToken"]
            auth = decode_ecr_token(token)
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
        ) as error:
            raise TaskStartError(
                events.RESOURCE_INITIALIZATION_ERROR,
                f"unable to pull secrets or registry auth: ECR GetAuthorizationToken failed: {error}",
            ) from error
        except (KeyError, IndexError, ValueError) as error:
            raise TaskStartError(
                events.RESOURCE_INITIALIZATION_ERROR,
                "unable to pull secrets or registry auth: invalid ECR authorization token",
            ) from error
        auth["serveraddress"] = registry
        return auth

    def _pull(self) -> containers.PulledImage:
        assert self.spec is not None
        image = self.spec.image
        try:
            reference = containers.parse_image_reference(image)
        except containers.TaskDefinitionError as error:
            raise TaskStartError(events.CANNOT_PULL_CONTAINER_ERROR, str(error)) from error

        self.state.pull_started_at = utc_now()
        try:
            if containers.is_loopback_registry(reference.registry):
                auth = self._registry_auth(reference.registry)
                pulled = containers.pull_image(self.api, reference, auth)
            else:
                LOGGER.warning(
                    "Task %s: registry %s is not on loopback; using the local image %s",
                    self.task_arn,
                    reference.registry,
                    image,
                )
                pulled = containers.find_local_image(self.api, reference)
        except containers.ImagePullError as error:
            raise TaskStartError(
                events.CANNOT_PULL_CONTAINER_ERROR,
                f"pull image {image} failed: {error}",
            ) from error
        except docker.errors.DockerException as error:
            raise TaskStartError(
                events.CANNOT_PULL_CONTAINER_ERROR,
                f"pull image {image} failed: {error}",
            ) from error
        self.state.pull_stopped_at = utc_now()
        self.state.image_digest = pulled.digest
        return pulled

    def _start_container(self, image: containers.PulledImage) -> None:
        assert self.spec is not None
        family = str(self.task_definition.get("family", "task"))
        revision = self.task_definition.get("revision", 0)
        task_id = self.task_arn.rsplit("/", 1)[-1]
        labels = {
            LABEL_TASK_ARN: self.task_arn,
            LABEL_CLUSTER: str(self.task.get("clusterArn", "")),
            LABEL_CONTAINER_NAME: self.spec.name,
            LABEL_FAMILY: family,
            LABEL_REVISION: str(revision),
            LABEL_RUNNER: "true",
        }
        name = containers.container_name_for(family, revision, self.spec.name, task_id)
        try:
            self.container_id = containers.create_container(
                self.api, self.spec, image.image_id, self.environment, name, labels
            )
            self.api.start(self.container_id)
        except docker.errors.DockerException as error:
            self._remove_container()
            message = getattr(error, "explanation", None) or str(error)
            raise TaskStartError(events.CANNOT_START_CONTAINER_ERROR, str(message)) from error
        self.state.started_at = utc_now()
        self.state.last_status = "RUNNING"
        self.state.runtime_id = self.container_id
        LOGGER.info(
            "Started task %s container %r image %s digest %s memory %s MiB",
            self.task_arn,
            self.spec.name,
            self.spec.image,
            image.digest,
            self.spec.memory_mib,
        )

    def _follow_container(self) -> None:
        assert self.container_id is not None
        masker = SecretMasker(self.environment[name] for name in (self.spec.secrets if self.spec else {}))

        def emit(line: str) -> None:
            OUTPUT_LOGGER.info("[%s] %s", self.short_id, masker.mask(line))

        try:
            containers.stream_container_output(self.api, self.container_id, emit)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            LOGGER.exception("Task %s: reading the container output failed", self.task_arn)
        exit_code, oom_killed = containers.wait_for_exit(self.api, self.container_id)
        self.state.exit_code = exit_code
        self.state.oom_killed = oom_killed
        self.state.stopped_at = utc_now()
        LOGGER.info(
            "Task %s container %r exited with code %d%s",
            self.task_arn,
            self.container_name,
            exit_code,
            " (killed for exceeding its memory limit)" if oom_killed else "",
        )

    def _remove_container(self) -> None:
        if self.container_id is None:
            return
        try:
            self.api.remove_container(self.container_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException:
            LOGGER.exception(
                "Task %s: removing container %s failed",
                self.task_arn,
                self.container_id,
            )

    def request_stop(self) -> None:
        """Ask the container to stop (SIGTERM, then SIGKILL after its stop timeout)."""
        self.stopped_by_runner = True
        container_id = self.container_id
        if container_id is None:
            return
        timeout = DEFAULT_STOP_TIMEOUT_SECONDS
        if self.spec and self.spec.stop_timeout_seconds:
            timeout = self.spec.stop_timeout_seconds
        LOGGER.info("Stopping task %s container (timeout %d s)", self.task_arn, timeout)
        try:
            self.api.stop(container_id, timeout=timeout)
        except docker.errors.DockerException as error:
            LOGGER.warning("Task %s: stopping the container failed: %s", self.task_arn, error)

    def _fail_to_start(self, error: TaskStartError) -> None:
        reason = events.failed_to_start_reason(error.kind, str(error))
        self.state.error = reason
        LOGGER.error("Task %s failed to start: %s", self.task_arn, reason)
        stop_code = events.STOP_CODE_TASK_FAILED_TO_START
        if self.stopped_by_runner:
            stop_code = events.STOP_CODE_USER_INITIATED
        self.report_stopped(stop_code, reason)

    def _finish_exited(self) -> None:
        exit_code = self.state.exit_code
        if self.stopped_by_runner:
            reason = events.shutdown_stop_reason(self.container_name, exit_code)
            self.report_stopped(events.STOP_CODE_USER_INITIATED, reason)
        else:
            reason = events.essential_container_exited_reason(self.container_name, exit_code)
            self.report_stopped(events.STOP_CODE_ESSENTIAL_CONTAINER_EXITED, reason)

    def report_stopped(self, stop_code: str, reason: str) -> None:
        """Stop the task in the emulator, publish the STOPPED event and write the record."""
        self.state.last_status = "STOPPED"
        self.state.stop_code = stop_code
        self.state.stopped_reason = reason
        self.state.stopped_at = self.state.stopped_at or utc_now()
        cluster = self.task.get("clusterArn", "")
        try:
            call_aws(
                f"StopTask {self.task_arn}",
                lambda: self.aws.ecs.stop_task(cluster=cluster, task=self.task_arn, reason=reason),
                self.never_interrupted,
                TASK_CALL_MAX_ATTEMPTS,
            )
            LOGGER.info("Stopped task %s: %s", self.task_arn, reason)
        except Exception:
            LOGGER.exception("Task %s: StopTask failed", self.task_arn)
        self._publish_event()
        record = events.build_task_record(self.task, self.image, self.environment, self.state)
        try:
            self.store.append_record(record)
        except OSError:
            LOGGER.exception("Task %s: writing its record failed", self.task_arn)

    def _publish_event(self) -> None:
        self.state.version += 1
        detail = events.build_task_state_change_detail(
            self.task, self.task_definition, self.container_name, self.image, self.state
        )
        entry = events.build_put_events_entry(detail, utc_now())
        try:
            response = call_aws(
                f"PutEvents {self.state.last_status} for {self.task_arn}",
                lambda: self.aws.events.put_events(Entries=[entry]),
                self.never_interrupted,
                TASK_CALL_MAX_ATTEMPTS,
            )
        except Exception:
            LOGGER.exception(
                "Task %s: publishing the %s event failed",
                self.task_arn,
                self.state.last_status,
            )
            return
        if response.get("FailedEntryCount"):
            LOGGER.error(
                "Task %s: EventBridge rejected the %s event: %s",
                self.task_arn,
                self.state.last_status,
                response.get("Entries"),
            )
            return
        LOGGER.info("Published %s event for task %s", self.state.last_status, self.task_arn)


class TaskRunner:
    """Polls the emulator for new tasks and runs each one in its own thread."""

    def __init__(self, settings: RunnerSettings, aws: AwsClients, api: docker.APIClient) -> None:
        self.settings = settings
        self.aws = aws
        self.api = api
        self.store = StateStore(settings.state_dir)
        self.shutdown = threading.Event()
        self.handled = self.store.load_handled()
        # Tasks a previous runner took on but never finished, e.g. because it was killed.
        self.unfinished = self.handled - self.store.load_finished()
        self.executions: dict[str, TaskExecution] = {}

    def serve(self) -> None:
        """Poll until `shutdown` is set, then stop the running tasks."""
        LOGGER.info(
            "Task runner polling %s every %.1f s (clusters: %s, state: %s)",
            self.settings.endpoint_url,
            self.settings.poll_interval_seconds,
            ", ".join(sorted(self.settings.clusters)) or "all",
            self.store.directory,
        )
        while not self.shutdown.is_set():
            try:
                self.poll_once()
            except Exception:
                LOGGER.exception("Polling the AWS emulator failed; trying again")
            self.shutdown.wait(self.settings.poll_interval_seconds)
        self.stop_executions()

    def poll_once(self) -> None:
        """Start every new RUNNING task of the served clusters."""
        for cluster_arn in self._list_clusters():
            task_arns = self._list_running_tasks(cluster_arn)
            self._reap_unfinished(cluster_arn, task_arns)
            new_arns = [arn for arn in task_arns if arn not in self.handled]
            for start in range(0, len(new_arns), DESCRIBE_TASKS_BATCH):
                batch = new_arns[start : start + DESCRIBE_TASKS_BATCH]
                for task in self._describe_tasks(cluster_arn, batch):
                    if task.get("clusterArn") == cluster_arn:
                        self.start_task(task)
        self._forget_finished_executions()

    def _describe_tasks(self, cluster_arn: str, task_arns: list[str]) -> list[dict[str, Any]]:
        described = call_aws(
            f"DescribeTasks in {cluster_arn}",
            lambda: self.aws.ecs.describe_tasks(cluster=cluster_arn, tasks=task_arns),
            self.shutdown,
        )
        return list(described.get("tasks", []))

    def _list_clusters(self) -> list[str]:
        paginator = self.aws.ecs.get_paginator("list_clusters")
        pages = call_aws("ListClusters", lambda: list(paginator.paginate()), self.shutdown)
        arns = [arn for page in pages for arn in page.get("clusterArns", [])]
        return [arn for arn in arns if self.settings.serves_cluster(arn)]

    def _list_running_tasks(self, cluster_arn: str) -> list[str]:
        """Return the ARNs of the cluster's tasks with desired status RUNNING.

        moto 5.2.5 matches the cluster of ListTasks as a substring, so listing cluster
        "dev" also returns the tasks of "dev-2". Long-format task ARNs
        (`task/CLUSTER/ID`) of other clusters are dropped here; `poll_once` checks the
        `clusterArn` of each described task for the short format.
        """
        paginator = self.aws.ecs.get_paginator("list_tasks")
        pages = call_aws(
            f"ListTasks in {cluster_arn}",
            lambda: list(paginator.paginate(cluster=cluster_arn, desiredStatus="RUNNING")),
            self.shutdown,
        )
        cluster_name = cluster_arn.rsplit("/", 1)[-1]
        arns = [arn for page in pages for arn in page.get("taskArns", [])]
        return [arn for arn in arns if task_arn_cluster(arn) in (None, cluster_name)]

    def start_task(self, task: dict[str, Any]) -> None:
        """Take the task on, persist that, and run it in a new thread."""
        task_arn = task["taskArn"]
        if task_arn in self.handled:
            return
        self.handled.add(task_arn)
        self.store.mark_handled(task_arn)
        LOGGER.info(
            "New task %s (task definition %s, started by %s)",
            task_arn,
            task.get("taskDefinitionArn"),
            task.get("startedBy") or "-",
        )
        execution = TaskExecution(task, self.aws, self.api, self.store, self.shutdown)
        self.executions[task_arn] = execution
        execution.thread.start()

    def _reap_unfinished(self, cluster_arn: str, task_arns: list[str]) -> None:
        """Stop tasks that a previous runner took on but left RUNNING, and their containers."""
        for task_arn in [arn for arn in task_arns if arn in self.unfinished]:
            self.unfinished.discard(task_arn)
            LOGGER.warning(
                "Task %s was taken on by an earlier runner that did not finish it; stopping it",
                task_arn,
            )
            try:
                self._stop_unfinished(cluster_arn, task_arn)
            except Exception:
                LOGGER.exception("Task %s: stopping the unfinished task failed", task_arn)

    def _stop_unfinished(self, cluster_arn: str, task_arn: str) -> None:
        for container_id in containers.find_containers_by_label(self.api, LABEL_TASK_ARN, task_arn):
            LOGGER.info("Task %s: removing its leftover container %s", task_arn, container_id)
            self.api.remove_container(container_id, force=True)
        for task in self._describe_tasks(cluster_arn, [task_arn]):
            execution = TaskExecution(task, self.aws, self.api, self.store, self.shutdown)
            execution.state.error = "the dev task runner restarted before the task finished"
            execution.report_stopped(
                events.STOP_CODE_USER_INITIATED,
                "Task stopped because the dev task runner restarted before it finished",
            )

    def _forget_finished_executions(self) -> None:
        for task_arn in [arn for arn, run in self.executions.items() if not run.thread.is_alive()]:
            del self.executions[task_arn]

    def stop_executions(self) -> None:
        """Stop the running containers and wait until their tasks are reported."""
        running = [run for run in self.executions.values() if run.thread.is_alive()]
        if not running:
            LOGGER.info("Task runner stopped; no tasks were running")
            return
        LOGGER.info("Stopping %d running task(s)", len(running))
        stoppers = [threading.Thread(target=run.request_stop, daemon=True) for run in running]
        for stopper in stoppers:
            stopper.start()
        longest_timeout = max((run.spec.stop_timeout_seconds or 0) if run.spec else 0 for run in running)
        deadline = max(longest_timeout, DEFAULT_STOP_TIMEOUT_SECONDS) + SHUTDOWN_GRACE_SECONDS
        for run in running:
            run.thread.join(timeout=max(0.0, deadline))
        left = [run.task_arn for run in running if run.thread.is_alive()]
        if left:
            LOGGER.error("Task runner stopped with tasks still unreported: %s", ", ".join(left))
        else:
            LOGGER.info("Task runner stopped after reporting all running tasks")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.runner",
        description=(
            "Dev-only stand-in for ECS: runs the tasks recorded by the local AWS emulator on the local Docker engine."
        ),
        epilog=(
            "Environment: AWS_ENDPOINT_URL (required, loopback only), AWS_DEFAULT_REGION "
            "(default us-east-1), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (any values for "
            "the emulator), DOCKER_HOST, DEVSTACK_STATE_DIR (default .stack in this checkout), "
            "DEVSTACK_RUNNER_POLL_INTERVAL (seconds, default 1), DEVSTACK_RUNNER_CLUSTERS "
            "(comma-separated cluster names or ARNs to serve, default all)."
        ),
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser.parse_args(argv)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stdout,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "boto3", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def install_signal_handlers(shutdown: threading.Event) -> None:
    def request_shutdown(signum: int, _frame: FrameType | None) -> None:
        LOGGER.info("Received %s; shutting down", signal.Signals(signum).name)
        shutdown.set()

    signal.signal(signal.SIGTERM, request_shutdown)
    signal.signal(signal.SIGINT, request_shutdown)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    configure_logging(arguments.log_level)
    try:
        settings = RunnerSettings.from_environment(os.environ)
    except SettingsError as error:
        LOGGER.error("Invalid settings: %s", error)
        return 2
    try:
        api = docker.from_env().api
        api.ping()
    except docker.errors.DockerException as error:
        LOGGER.error(
            "Docker engine at DOCKER_HOST=%s is not reachable: %s",
            os.environ.get("DOCKER_HOST", "(default socket)"),
            error,
        )
        return 2
    runner = TaskRunner(settings, AwsClients.connect(settings), api)
    install_signal_handlers(runner.shutdown)
    runner.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
