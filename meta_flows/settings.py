"""The one settings model of the meta-flows, read from the environment and an optional `.env`.

Every field is read from a `META_FLOWS_*` variable. The names teams already use for the
Prefect 2 agent set-up (`ecr_image`, `cluster`, `execution_role_arn`, `task_role_arn`,
`work_queue_name`, `PREFECT_AWS_ACCESS_KEY_ID`, `PREFECT_AWS_SECRET_ACCESS_KEY`) are accepted
as aliases, beside the standard `AWS_*` ones. Variable names are case-insensitive.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meta_flows.errors import SettingsError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# ECR repository names: lower-case segments separated by '/', see the CreateRepository API
# reference (pattern and the 256-character limit).
ECR_REPOSITORY_PATTERN = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
ROLE_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
CLUSTER_PATTERN = re.compile(
    r"^(?:[A-Za-z0-9_-]{1,255}|arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:cluster/[A-Za-z0-9_-]{1,255})$"
)
PREFECT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
BLOCK_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
REGION_PATTERN = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")
SECRET_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+$")
VPC_ID_PATTERN = re.compile(r"^vpc-[0-9a-f]{1,17}$")

# Valid Fargate task sizes: CPU units to the allowed memory values in MiB.
# Source: "Task CPU and memory" in the Amazon ECS developer guide (Fargate).
FARGATE_MEMORY_BY_CPU: dict[int, range] = {
    256: range(512, 2048 + 1, 512),
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
    8192: range(16384, 61440 + 1, 4096),
    16384: range(32768, 122880 + 1, 8192),
}


# Values CloudWatch Logs PutRetentionPolicy accepts for retentionInDays (API reference).
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
CONTAINER_SECRET_ARN_PATTERN = re.compile(
    r"^arn:aws[a-z-]*:(?:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+|ssm:[a-z0-9-]+:\d{12}:parameter/.+)$"
)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def describe_memory_choices(cpu: int) -> str:
    """Return the valid Fargate memory values for `cpu`, in words."""
    allowed = FARGATE_MEMORY_BY_CPU[cpu]
    if cpu == 256:
        return "512, 1024 or 2048 MiB"
    return f"{allowed.start} to {allowed[-1]} MiB in steps of {allowed.step}"


class Settings(BaseSettings):
    """Settings of the meta-flows; each field names the variable that sets it."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    aws_region: str = Field(
        validation_alias=_env("META_FLOWS_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        description="AWS region of the cluster, the repositories and the roles.",
    )
    aws_access_key_id: SecretStr | None = Field(
        default=None,
        validation_alias=_env("PREFECT_AWS_ACCESS_KEY_ID"),
        description=(
            "Static access key stored in the credentials block. Leave unset to use the default "
            "credential chain (instance or task role, SSO, AWS_PROFILE), which is preferred."
        ),
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("PREFECT_AWS_SECRET_ACCESS_KEY"),
        description="Secret key paired with PREFECT_AWS_ACCESS_KEY_ID.",
    )
    repository_prefix: str = Field(
        default="prefect-flows",
        validation_alias=_env("META_FLOWS_REPOSITORY_PREFIX", "ecr_image"),
        description=(
            "Common prefix of the ECR repositories, one per flow: <prefix>/<flow>. The seed-era "
            "ecr_image may also carry the registry host (<host>/<prefix>)."
        ),
    )
    registry_host: str | None = Field(
        default=None,
        validation_alias=_env("META_FLOWS_REGISTRY_HOST"),
        description=(
            "Registry host in image addresses. Default: <account>.dkr.ecr.<region>.amazonaws.com. "
            "Set it for a pull-through proxy or the local stack's registry."
        ),
    )
    cluster: str = Field(
        default="prefect-flows",
        validation_alias=_env("META_FLOWS_CLUSTER", "cluster"),
        description="ECS cluster name or ARN; created by bootstrap when missing.",
    )
    execution_role_arn: str | None = Field(
        default=None,
        validation_alias=_env("META_FLOWS_EXECUTION_ROLE_ARN", "execution_role_arn"),
        description=(
            "Role ECS uses to pull the image and write logs. Unset: bootstrap creates "
            "<cluster>-execution with the AWS managed execution policy."
        ),
    )
    task_role_arn: str | None = Field(
        default=None,
        validation_alias=_env("META_FLOWS_TASK_ROLE_ARN", "task_role_arn"),
        description="Role the flow's code runs as. Unset: the task has no AWS permissions.",
    )
    work_pool: str = Field(
        default="ecs-pool",
        validation_alias=_env("META_FLOWS_WORK_POOL", "work_pool_name"),
        description="Name of the Prefect work pool of type ecs that runs the flows.",
    )
    work_queue: str = Field(
        default="default",
        validation_alias=_env("META_FLOWS_WORK_QUEUE", "work_queue_name"),
        description="Work queue of the ECS pool that the flow deployments use.",
    )
    deployer_pool: str = Field(
        default="deployer",
        validation_alias=_env("META_FLOWS_DEPLOYER_POOL"),
        description="Process work pool that runs the meta-flows on a machine with Docker.",
    )
    credentials_block: str = Field(
        default="meta-flows-aws",
        validation_alias=_env("META_FLOWS_CREDENTIALS_BLOCK"),
        description="Name of the AwsCredentials block the ECS worker uses.",
    )
    task_settings_block: str = Field(
        default="meta-flows-ecs",
        validation_alias=_env("META_FLOWS_TASK_SETTINGS_BLOCK"),
        description="Name of the ECS task settings block the pool's job template is built from.",
    )
    base_image: str = Field(
        default="prefecthq/prefect:3-python3.12",
        validation_alias=_env("META_FLOWS_BASE_IMAGE"),
        description="Image the flow images start from; it must contain Prefect 3.",
    )
    platform: Literal["linux/amd64", "linux/arm64"] = Field(
        default="linux/amd64",
        validation_alias=_env("META_FLOWS_PLATFORM"),
        description="Image platform: linux/amd64 for Fargate X86_64, linux/arm64 for ARM64.",
    )
    ca_bundle: Path | None = Field(
        default=None,
        validation_alias=_env("META_FLOWS_CA_BUNDLE"),
        description=(
            "PEM bundle copied into builds so pip trusts an intercepting proxy. Set it on "
            "corporate networks; it holds public certificates only."
        ),
    )
    cpu: int = Field(
        default=1024,
        validation_alias=_env("META_FLOWS_CPU"),
        description="Fargate task CPU units (256 to 16384).",
    )
    memory: int = Field(
        default=2048,
        validation_alias=_env("META_FLOWS_MEMORY"),
        description="Fargate task memory in MiB; must pair with cpu.",
    )
    container_memory: int | None = Field(
        default=None,
        ge=6,
        validation_alias=_env("META_FLOWS_CONTAINER_MEMORY"),
        description="Hard memory limit of the flow container in MiB. Unset: the task's memory.",
    )
    subnets: list[str] = Field(
        default_factory=list,
        validation_alias=_env("META_FLOWS_SUBNETS"),
        description="Subnet ids as a JSON list. Empty: the default VPC's subnets.",
    )
    security_groups: list[str] = Field(
        default_factory=list,
        validation_alias=_env("META_FLOWS_SECURITY_GROUPS"),
        description="Security group ids as a JSON list. Empty: the VPC's default group.",
    )
    vpc_id: str | None = Field(
        default=None,
        validation_alias=_env("META_FLOWS_VPC_ID"),
        description="VPC of the tasks, whose subnets META_FLOWS_SUBNETS lists. Unset: the default VPC.",
    )
    cpu_architecture: Literal["X86_64", "ARM64"] | None = Field(
        default=None,
        validation_alias=_env("META_FLOWS_CPU_ARCHITECTURE"),
        description="Fargate CPU architecture. Unset: ARM64 for META_FLOWS_PLATFORM=linux/arm64, else X86_64.",
    )
    ephemeral_storage: int | None = Field(
        default=None,
        ge=21,
        le=200,
        validation_alias=_env("META_FLOWS_EPHEMERAL_STORAGE"),
        description="Fargate ephemeral storage of each task in GiB (21 to 200). Unset: Fargate's 20 GiB.",
    )
    container_secrets: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=_env("META_FLOWS_CONTAINER_SECRETS"),
        description=(
            "JSON object of environment variable name to Secrets Manager secret ARN or SSM parameter "
            "ARN; ECS injects each value into the flow container. The execution role may read exactly these."
        ),
    )
    prefect_api_key_secret_arn: str | None = Field(
        default=None,
        validation_alias=_env("META_FLOWS_PREFECT_API_KEY_SECRET_ARN"),
        description=(
            "Secrets Manager ARN holding the Prefect API key. The ECS worker then hands the key to "
            "tasks as this secret, never as plain environment. Required when PREFECT_API_KEY is set."
        ),
    )
    pool_env: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=_env("META_FLOWS_POOL_ENV"),
        description=(
            "JSON object of environment variables every flow container gets; a deployment's and a "
            "run's `env` job variables are merged over it, key by key."
        ),
    )
    log_group: str | None = Field(
        default=None,
        validation_alias=_env("META_FLOWS_LOG_GROUP"),
        description="CloudWatch log group of the flow containers. Unset: /prefect/<cluster>.",
    )
    log_retention_days: int = Field(
        default=30,
        validation_alias=_env("META_FLOWS_LOG_RETENTION_DAYS"),
        description="Days CloudWatch keeps the flow logs; one of the values PutRetentionPolicy accepts.",
    )
    image_keep_count: int = Field(
        default=30,
        ge=1,
        le=10000,
        validation_alias=_env("META_FLOWS_IMAGE_KEEP_COUNT"),
        description="Images each ECR repository keeps; its lifecycle policy expires older ones.",
    )
    task_role_statements: list[dict[str, Any]] = Field(
        default_factory=list,
        validation_alias=_env("META_FLOWS_TASK_ROLE_STATEMENTS"),
        description=(
            "JSON list of IAM policy statements for the task role bootstrap creates; empty gives the "
            "flow code no AWS permission."
        ),
    )
    observer_queue: str | None = Field(
        default=None,
        validation_alias=_env("META_FLOWS_OBSERVER_QUEUE"),
        description=(
            "SQS queue of ECS task state events for the worker's crash detection. Unset: "
            "<work pool>-ecs-task-events. Give the worker the same name in "
            "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME."
        ),
    )
    worker_service: bool = Field(
        default=False,
        validation_alias=_env("META_FLOWS_WORKER_SERVICE"),
        description="Deploy the ECS worker as an ECS service on the cluster (true), or run it yourself (false).",
    )
    worker_image: str = Field(
        default="prefecthq/prefect-aws:0.7.12-python3.12",
        validation_alias=_env("META_FLOWS_WORKER_IMAGE"),
        description="Image of the worker service; it must contain Prefect and prefect-aws.",
    )
    project_root: Path = Field(
        default=PROJECT_ROOT,
        validation_alias=_env("META_FLOWS_PROJECT_ROOT"),
        description="Checkout holding prefect.yaml and flows/; deploy-flow builds from it.",
    )

    @model_validator(mode="before")
    @classmethod
    def ecr_image_may_carry_registry_host(cls, data: Any) -> Any:
        """Split a seed-era `ecr_image` of the form <host>/<prefix> into its two settings."""
        if not isinstance(data, dict):
            return data
        # pydantic-settings hands over values under the first alias; callers may use field names.
        for key in ("META_FLOWS_REPOSITORY_PREFIX", "repository_prefix", "ecr_image"):
            value = data.get(key)
            if not isinstance(value, str) or "/" not in value:
                continue
            host, _, prefix = value.partition("/")
            if "." in host or ":" in host:
                data = {**data, key: prefix}
                if "registry_host" not in data:
                    data.setdefault("META_FLOWS_REGISTRY_HOST", host)
        return data

    @field_validator("aws_region")
    @classmethod
    def region_must_be_well_formed(cls, value: str) -> str:
        if not REGION_PATTERN.match(value):
            raise ValueError(f"{value!r} is not an AWS region name such as us-east-1")
        return value

    @field_validator("repository_prefix")
    @classmethod
    def repository_prefix_must_be_ecr_name(cls, value: str) -> str:
        if not ECR_REPOSITORY_PATTERN.match(value) or len(value) > 200:
            raise ValueError(
                f"{value!r} is not a valid ECR repository prefix: use lower-case letters, digits, "
                "'.', '_', '-' and '/' between segments, at most 200 characters"
            )
        return value

    @field_validator("cluster")
    @classmethod
    def cluster_must_be_name_or_arn(cls, value: str) -> str:
        if not CLUSTER_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not an ECS cluster name (letters, digits, '-' and '_', at most 255) or cluster ARN"
            )
        return value

    @field_validator("execution_role_arn", "task_role_arn")
    @classmethod
    def role_arn_must_be_well_formed(cls, value: str | None) -> str | None:
        if value is not None and not ROLE_ARN_PATTERN.match(value):
            raise ValueError(f"{value!r} is not an IAM role ARN such as arn:aws:iam::123456789012:role/name")
        return value

    @field_validator("vpc_id")
    @classmethod
    def vpc_id_must_be_well_formed(cls, value: str | None) -> str | None:
        if value is not None and not VPC_ID_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a VPC id such as vpc-0abc123")
        return value

    @field_validator("prefect_api_key_secret_arn")
    @classmethod
    def secret_arn_must_be_well_formed(cls, value: str | None) -> str | None:
        if value is not None and not SECRET_ARN_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a Secrets Manager secret ARN such as "
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:prefect-api-key-AbCdEf"
            )
        return value

    @field_validator("work_pool", "work_queue", "deployer_pool")
    @classmethod
    def prefect_name_must_be_plain(cls, value: str) -> str:
        if not PREFECT_NAME_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a valid name: start with a letter or digit, then letters, digits, "
                "spaces, '.', '_' or '-', at most 100 characters"
            )
        return value

    @field_validator("credentials_block", "task_settings_block")
    @classmethod
    def block_name_must_be_slug(cls, value: str) -> str:
        if not BLOCK_NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a valid block name: use lower-case letters, digits and '-'")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def ca_bundle_must_be_a_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{str(value)!r} is not a readable file: give the path of a PEM bundle")
        return value

    @field_validator("cpu")
    @classmethod
    def cpu_must_be_fargate_size(cls, value: int) -> int:
        if value not in FARGATE_MEMORY_BY_CPU:
            choices = ", ".join(str(cpu) for cpu in FARGATE_MEMORY_BY_CPU)
            raise ValueError(f"{value} is not a Fargate CPU size: use one of {choices}")
        return value

    @model_validator(mode="after")
    def fargate_cpu_memory_must_pair(self) -> Settings:
        if self.memory not in FARGATE_MEMORY_BY_CPU[self.cpu]:
            raise ValueError(
                f"META_FLOWS_MEMORY={self.memory} does not pair with META_FLOWS_CPU={self.cpu} on "
                f"Fargate: with {self.cpu} CPU units use {describe_memory_choices(self.cpu)}"
            )
        return self

    @model_validator(mode="after")
    def container_memory_must_fit_task(self) -> Settings:
        if self.container_memory is not None and self.container_memory > self.memory:
            raise ValueError(
                f"META_FLOWS_CONTAINER_MEMORY={self.container_memory} exceeds the task memory "
                f"META_FLOWS_MEMORY={self.memory}: lower it or raise the task memory"
            )
        return self

    @model_validator(mode="after")
    def static_keys_must_come_in_pairs(self) -> Settings:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError(
                "PREFECT_AWS_ACCESS_KEY_ID and PREFECT_AWS_SECRET_ACCESS_KEY must be set together: "
                "set both, or neither to use the default credential chain"
            )
        return self

    @field_validator("log_retention_days")
    @classmethod
    def log_retention_must_be_cloudwatch_value(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            choices = ", ".join(map(str, LOG_RETENTION_DAYS))
            raise ValueError(f"{value} is not a CloudWatch retention: use one of {choices}")
        return value

    @field_validator("container_secrets")
    @classmethod
    def container_secrets_must_be_arns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, arn in value.items():
            if not CONTAINER_SECRET_ARN_PATTERN.match(arn):
                raise ValueError(f"secret {name!r}: {arn!r} is not a Secrets Manager secret ARN or SSM parameter ARN")
        return value

    @field_validator("task_role_statements")
    @classmethod
    def task_statements_must_be_iam(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, statement in enumerate(value):
            missing = [key for key in ("Effect", "Action", "Resource") if key not in statement]
            if missing:
                raise ValueError(f"statement {index} lacks {', '.join(missing)}: give Effect, Action and Resource")
        return value

    @property
    def cluster_name(self) -> str:
        return self.cluster.rpartition("/")[2]

    @property
    def effective_log_group(self) -> str:
        return self.log_group or f"/prefect/{self.cluster_name}"

    @property
    def effective_observer_queue(self) -> str:
        return self.observer_queue or f"{re.sub(r'[^A-Za-z0-9_-]', '-', self.work_pool)}-ecs-task-events"

    @property
    def effective_cpu_architecture(self) -> Literal["X86_64", "ARM64"]:
        if self.cpu_architecture is not None:
            return self.cpu_architecture
        return "ARM64" if self.platform == "linux/arm64" else "X86_64"

    def repository_name(self, flow: str) -> str:
        """Return the ECR repository name of one flow folder."""
        return f"{self.repository_prefix}/{flow}"


def _field_of(location: str) -> str | None:
    """Map an error location (a field name or any of its variable names) to the field name."""
    for name, info in Settings.model_fields.items():
        aliases = info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else []
        if location == name or location.lower() in (str(alias).lower() for alias in aliases):
            return name
    return None


def _variables_of(field: str) -> list[str]:
    info = Settings.model_fields[field]
    if isinstance(info.validation_alias, AliasChoices):
        return [str(alias) for alias in info.validation_alias.choices]
    return [field]


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, or raise SettingsError naming every invalid or missing variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        # `from None`: pydantic's own error repeats the raw input, which may be a secret key.
        raise SettingsError(_describe_validation_error(exc)) from None


def _describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        field = _field_of(str(error["loc"][0])) if error["loc"] else None
        if field is None:
            lines.append(f"- {message}")
            continue
        variables = _variables_of(field)
        if error["type"] == "missing":
            description = Settings.model_fields[field].description
            lines.append(f"- {variables[0]} is missing: set {' or '.join(variables)} ({description})")
        else:
            lines.append(f"- {variables[0]}: {message}")
    return "invalid settings:\n" + "\n".join(lines)
