"""ECS container settings of the dev task runner, and the Docker calls that run them.

The first part is pure: it computes the container to run from a task definition and RunTask
overrides, without AWS or Docker calls, so the ECS rules can be unit-tested alone. The rules
follow the ECS API reference for `ContainerDefinition`, `ContainerOverride` and
`TaskOverride`: an override can change the command, environment and memory of a container,
never its image, entry point or working directory.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

SECRETS_MANAGER_ARN_PREFIX = "arn:aws:secretsmanager:"
SSM_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:ssm:[^:]*:[^:]*:parameter/(?P<path>.+)$")
# A Secrets Manager secret ARN has 7 colon-separated fields. ECS allows 3 more after it
# (json-key, version-stage and version-id), each of which may be empty.
SECRET_ARN_FIELDS = 7
SECRET_REFERENCE_MAX_FIELDS = SECRET_ARN_FIELDS + 3

DEFAULT_REGISTRY = "docker.io"
LOOPBACK_HOSTS = frozenset({"localhost", "::1"})


class TaskDefinitionError(ValueError):
    """A task definition or its overrides cannot be turned into a container to run."""


@dataclass(frozen=True)
class SecretReference:
    """Source of one ECS container secret, parsed from `secrets[].valueFrom`."""

    kind: str  # "secretsmanager" or "ssm"
    secret_id: str  # secret ARN, or SSM parameter name
    json_key: str | None = None
    version_stage: str | None = None
    version_id: str | None = None


@dataclass(frozen=True)
class VolumeMount:
    """A host folder mounted into the container (ECS `volumes[].host` plus `mountPoints`)."""

    source_path: str
    container_path: str
    read_only: bool


@dataclass(frozen=True)
class ContainerSpec:
    """The effective settings of the one container that the runner starts for a task."""

    name: str
    image: str
    command: list[str] | None
    entry_point: list[str] | None
    environment: dict[str, str]
    secrets: dict[str, SecretReference]
    memory_mib: int | None
    working_directory: str | None
    user: str | None
    stop_timeout_seconds: int | None
    mounts: list[VolumeMount] = field(default_factory=list)
    ignored_container_names: list[str] = field(default_factory=list)
    unsupported_settings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImageReference:
    """A parsed Docker image reference such as `127.0.0.1:5000/team/flow:tag@sha256:...`."""

    registry: str
    repository: str  # includes the registry host when the reference names one
    tag: str | None
    digest: str | None

    @property
    def pull_ref(self) -> str:
        """Return the digest to pull if there is one, because it names exact content, else the tag."""
        return self.digest or self.tag or "latest"


def select_container(task_definition: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return the container definition the runner starts.

    The choice is the first essential container named in the container overrides, else the
    first essential container, else the first container. `essential` defaults to true in ECS.
    """
    definitions: list[dict[str, Any]] = task_definition.get("containerDefinitions") or []
    if not definitions:
        raise TaskDefinitionError(f"task definition {task_definition.get('taskDefinitionArn')} has no containers")
    essential = [d for d in definitions if d.get("essential", True)]
    by_name = {d.get("name"): d for d in essential}
    for container_override in overrides.get("containerOverrides") or []:
        named = by_name.get(container_override.get("name"))
        if named is not None:
            return named
    return essential[0] if essential else definitions[0]


def find_container_override(overrides: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the container override for `name`, or an empty one."""
    for container_override in overrides.get("containerOverrides") or []:
        if container_override.get("name") == name:
            return dict(container_override)
    return {}


def merge_environment(
    definition_environment: list[dict[str, str]] | None,
    override_environment: list[dict[str, str]] | None,
) -> dict[str, str]:
    """Merge name/value lists as ECS does: an override replaces a definition entry by name."""
    merged: dict[str, str] = {}
    for entry in list(definition_environment or []) + list(override_environment or []):
        merged[entry["name"]] = entry.get("value", "")
    return merged


def parse_secret_reference(value_from: str) -> SecretReference:
    """Parse an ECS `valueFrom`: a Secrets Manager ARN, or an SSM parameter ARN or name.

    A Secrets Manager ARN may carry `:json-key:version-stage:version-id` after the secret
    ARN, each part optional, for example `arn:...:secret:db-AbCdEf:password::`.
    """
    if not value_from:
        raise TaskDefinitionError("secret valueFrom is empty")

    if value_from.startswith(SECRETS_MANAGER_ARN_PREFIX):
        fields = value_from.split(":")
        if len(fields) < SECRET_ARN_FIELDS or len(fields) > SECRET_REFERENCE_MAX_FIELDS:
            raise TaskDefinitionError(
                f"invalid Secrets Manager reference {value_from!r}: expected "
                "arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:json-key:version-stage:version-id]"
            )
        extra = fields[SECRET_ARN_FIELDS:] + [""] * (SECRET_REFERENCE_MAX_FIELDS - len(fields))
        return SecretReference(
            kind="secretsmanager",
            secret_id=":".join(fields[:SECRET_ARN_FIELDS]),
            json_key=extra[0] or None,
            version_stage=extra[1] or None,
            version_id=extra[2] or None,
        )

    ssm_match = SSM_ARN_PATTERN.match(value_from)
    if ssm_match:
        return SecretReference(kind="ssm", secret_id=ssm_parameter_name(ssm_match["path"]))
    if value_from.startswith("arn:"):
        raise TaskDefinitionError(
            f"unsupported secret reference {value_from!r}: expected a Secrets Manager "
            "secret ARN, or an SSM parameter ARN or name"
        )
    return SecretReference(kind="ssm", secret_id=value_from)


def ssm_parameter_name(arn_path: str) -> str:
    """Return the parameter name for the part of an SSM ARN after `parameter/`.

    A hierarchical name such as `/team/db` appears in the ARN without its leading slash.
    """
    # NOTE: this assumes that a name containing a slash starts with one, as the names in
    # an SSM parameter hierarchy do.
    return "/" + arn_path if "/" in arn_path else arn_path


def parse_memory_mib(value: Any) -> int | None:
    """Parse an ECS memory value ("512", 512, "1 GB", "2GB") into MiB, or None if unset."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip().upper().replace(" ", "")
    if text.endswith("GB"):
        return int(float(text[:-2]) * 1024)
    text = text.removesuffix("MB")
    try:
        return int(text)
    except ValueError as error:
        raise TaskDefinitionError(f"invalid memory value {value!r}: expected MiB") from error


def effective_memory_mib(
    task_definition: dict[str, Any],
    overrides: dict[str, Any],
    container: dict[str, Any],
    container_override: dict[str, Any],
) -> int | None:
    """Return the hard memory limit in MiB for the container.

    Order: the container override, the container definition's hard limit `memory`, the
    task override, the task definition. ECS enforces the container's `memory` as a hard
    limit and a Fargate task's memory as the limit of the whole task.
    """
    for candidate in (
        container_override.get("memory"),
        container.get("memory"),
        overrides.get("memory"),
        task_definition.get("memory"),
    ):
        memory = parse_memory_mib(candidate)
        if memory:
            return memory
    return None


def host_mounts(task_definition: dict[str, Any], container: dict[str, Any]) -> list[VolumeMount]:
    """Return the container's mount points that refer to host-path volumes.

    Volumes of other kinds (Docker volumes, EFS) are not supported by the runner and are
    reported through `unsupported_settings`.
    """
    host_paths = {
        volume["name"]: volume["host"]["sourcePath"]
        for volume in task_definition.get("volumes") or []
        if (volume.get("host") or {}).get("sourcePath")
    }
    mounts: list[VolumeMount] = []
    for mount_point in container.get("mountPoints") or []:
        source = host_paths.get(mount_point.get("sourceVolume", ""))
        if source is None:
            continue
        mounts.append(
            VolumeMount(
                source_path=source,
                container_path=mount_point["containerPath"],
                read_only=bool(mount_point.get("readOnly", False)),
            )
        )
    return mounts


def list_unsupported_settings(
    task_definition: dict[str, Any],
    container: dict[str, Any],
    container_override: dict[str, Any],
) -> list[str]:
    """Name the settings in use that the runner ignores, so it can log them."""
    unsupported: list[str] = []
    if container.get("environmentFiles") or container_override.get("environmentFiles"):
        unsupported.append("environmentFiles")
    if container.get("dependsOn"):
        unsupported.append("dependsOn")
    host_volume_names = {
        volume["name"]
        for volume in task_definition.get("volumes") or []
        if (volume.get("host") or {}).get("sourcePath")
    }
    for mount_point in container.get("mountPoints") or []:
        if mount_point.get("sourceVolume") not in host_volume_names:
            unsupported.append(f"mountPoints[{mount_point.get('sourceVolume')}]")
    if container.get("volumesFrom"):
        unsupported.append("volumesFrom")
    return unsupported


def build_container_spec(task_definition: dict[str, Any], overrides: dict[str, Any] | None) -> ContainerSpec:
    """Compute the container to run from a task definition and RunTask overrides."""
    overrides = overrides or {}
    container = select_container(task_definition, overrides)
    name = container["name"]
    container_override = find_container_override(overrides, name)
    image = container.get("image")
    if not image:
        raise TaskDefinitionError(f"container {name!r} has no image")

    secrets = {
        secret["name"]: parse_secret_reference(secret.get("valueFrom", "")) for secret in container.get("secrets") or []
    }
    others = [d["name"] for d in task_definition["containerDefinitions"] if d is not container]
    return ContainerSpec(
        name=name,
        image=image,
        command=container_override.get("command") or container.get("command") or None,
        entry_point=container.get("entryPoint") or None,
        environment=merge_environment(container.get("environment"), container_override.get("environment")),
        secrets=secrets,
        memory_mib=effective_memory_mib(task_definition, overrides, container, container_override),
        working_directory=container.get("workingDirectory") or None,
        user=container.get("user") or None,
        stop_timeout_seconds=container.get("stopTimeout"),
        mounts=host_mounts(task_definition, container),
        ignored_container_names=others,
        unsupported_settings=list_unsupported_settings(task_definition, container, container_override),
    )


def parse_image_reference(image: str) -> ImageReference:
    """Split an image reference into registry, repository, tag and digest.

    The first path component is a registry host when it contains "." or ":" or is
    "localhost", which is the rule the Docker engine applies.
    """
    remainder, _, digest = image.partition("@")
    last_slash = remainder.rfind("/")
    last_colon = remainder.rfind(":")
    tag: str | None = None
    if last_colon > last_slash:
        remainder, tag = remainder[:last_colon], remainder[last_colon + 1 :]
    first, slash, _ = remainder.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry = first
    else:
        registry = DEFAULT_REGISTRY
    if not remainder or (tag is not None and not tag):
        raise TaskDefinitionError(f"invalid image reference {image!r}")
    return ImageReference(registry=registry, repository=remainder, tag=tag, digest=digest or None)


def is_loopback_registry(registry: str) -> bool:
    """Return whether a registry host (with optional port) is on the loopback interface."""
    if registry.startswith("["):
        host = registry[1 : registry.find("]")]
    else:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return host in LOOPBACK_HOSTS or host.startswith("127.")


# Docker engine operations. Unlike the functions above, these talk to the engine at
# DOCKER_HOST through docker-py's low-level API client.

CONTAINER_NAME_INVALID_CHARACTERS = re.compile(r"[^a-zA-Z0-9_.-]")
DIGEST_STATUS_PATTERN = re.compile(r"Digest: (sha256:[0-9a-f]{64})")


class ImagePullError(RuntimeError):
    """The image could not be pulled (or found locally, for a non-loopback registry)."""


@dataclass(frozen=True)
class PulledImage:
    """An image present in the engine, with the registry digest it was pulled by."""

    image_id: str
    digest: str | None


def find_repo_digest(repo_digests: list[str], repository: str) -> str | None:
    """Return the digest in `RepoDigests` (entries `repo@sha256:...`) for the repository."""
    for entry in repo_digests:
        name, _, digest = entry.partition("@")
        if name == repository and digest:
            return digest
    return None


def pull_image(api: docker.APIClient, reference: ImageReference, auth_config: dict[str, str] | None) -> PulledImage:
    """Pull the image and return its local ID and registry digest.

    Raise ImagePullError with the engine's message when the pull fails.
    """
    pulled_digest: str | None = None
    try:
        for progress in api.pull(
            reference.repository,
            tag=reference.pull_ref,
            stream=True,
            decode=True,
            auth_config=auth_config,
        ):
            if "error" in progress:
                raise ImagePullError(str(progress["error"]))
            match = DIGEST_STATUS_PATTERN.search(str(progress.get("status", "")))
            if match:
                pulled_digest = match.group(1)
        inspected = api.inspect_image(pulled_reference(reference))
    except docker.errors.APIError as error:
        raise ImagePullError(str(error.explanation or error)) from error

    digest = (
        pulled_digest or reference.digest or find_repo_digest(inspected.get("RepoDigests") or [], reference.repository)
    )
    return PulledImage(image_id=inspected["Id"], digest=digest)


def find_local_image(api: docker.APIClient, reference: ImageReference) -> PulledImage:
    """Return an image already present in the engine, or raise ImagePullError."""
    try:
        inspected = api.inspect_image(pulled_reference(reference))
    except docker.errors.ImageNotFound as error:
        raise ImagePullError(
            f"image {pulled_reference(reference)} is not in the local Docker engine, and "
            f"registry {reference.registry} is not on 127.0.0.1, so the dev task runner "
            "does not pull it; push the image to the local registry"
        ) from error
    digest = reference.digest or find_repo_digest(inspected.get("RepoDigests") or [], reference.repository)
    return PulledImage(image_id=inspected["Id"], digest=digest)


def pulled_reference(reference: ImageReference) -> str:
    """Return the local name of a pulled image: `repo@digest` or `repo:tag`."""
    if reference.digest:
        return f"{reference.repository}@{reference.digest}"
    return f"{reference.repository}:{reference.tag or 'latest'}"


def container_name_for(family: str, revision: int | str, container: str, task_id: str) -> str:
    """Return a Docker container name in the ECS agent's style, `ecs-FAMILY-REV-NAME-ID`."""
    name = f"ecs-{family}-{revision}-{container}-{task_id}"
    return CONTAINER_NAME_INVALID_CHARACTERS.sub("-", name)


def create_container(
    api: docker.APIClient,
    spec: ContainerSpec,
    image_id: str,
    environment: dict[str, str],
    name: str,
    labels: dict[str, str],
) -> str:
    """Create the container with host networking and return its ID.

    The environment travels in the JSON body of the create request. The memory limit is
    hard and allows no swap, as on Fargate, which gives containers no swap.
    """
    memory = f"{spec.memory_mib}m" if spec.memory_mib else None
    host_config = api.create_host_config(
        network_mode="host",
        mem_limit=memory,
        memswap_limit=memory,
        binds=[
            f"{mount.source_path}:{mount.container_path}:{'ro' if mount.read_only else 'rw'}" for mount in spec.mounts
        ],
    )
    created = api.create_container(
        image=image_id,
        command=spec.command,
        entrypoint=spec.entry_point,
        environment=environment,
        working_dir=spec.working_directory,
        user=spec.user or "",
        labels=labels,
        name=name,
        host_config=host_config,
        detach=True,
    )
    return str(created["Id"])


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Yield complete text lines from a stream of byte chunks, then any unterminated rest."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        yield from (line.rstrip("\r") for line in lines)
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending.rstrip("\r")


def stream_container_output(api: docker.APIClient, container_id: str, emit_line: Callable[[str], None]) -> None:
    """Pass each stdout and stderr line of the container to `emit_line` until it exits."""
    chunks = api.logs(container_id, stdout=True, stderr=True, stream=True, follow=True)
    for line in split_lines(chunks):
        emit_line(line)


def wait_for_exit(api: docker.APIClient, container_id: str) -> tuple[int, bool]:
    """Wait for the container to exit and return its exit code and whether it was OOM-killed."""
    result = api.wait(container_id)
    state = api.inspect_container(container_id).get("State") or {}
    return int(result["StatusCode"]), bool(state.get("OOMKilled"))


def find_containers_by_label(api: docker.APIClient, label: str, value: str) -> list[str]:
    """Return the IDs of all containers, running or not, with the label set to the value."""
    found = api.containers(all=True, filters={"label": f"{label}={value}"})
    return [str(container["Id"]) for container in found]
