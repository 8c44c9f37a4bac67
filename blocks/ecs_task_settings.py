"""The ECS task settings block: what every flow task on the pool shares.

It replaces the Prefect 2 `ECSTask` infrastructure block. bootstrap-pool saves it and builds the
ECS work pool's base job template from it, so the values in the Prefect UI and the pool agree.
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field


class EcsTaskSettings(Block):
    """Cluster, roles, size and network of the ECS tasks that run flows."""

    _block_type_name = "ECS Task Settings"
    _block_type_slug = "meta-flows-ecs-task-settings"
    _description = "Cluster, roles, size and network of the ECS tasks that run Prefect flows."

    cluster: str = Field(description="ECS cluster name or ARN.")
    execution_role_arn: str = Field(description="Role ECS uses to pull the image and write logs.")
    task_role_arn: str | None = Field(default=None, description="Role the flow's code runs as.")
    cpu: int = Field(default=1024, description="Fargate CPU units of each task.")
    memory: int = Field(default=2048, description="Fargate memory of each task, in MiB.")
    container_memory: int | None = Field(
        default=None, description="Hard memory limit of the flow container in MiB; unset means the task's."
    )
    launch_type: Literal["FARGATE", "FARGATE_SPOT", "EC2"] = Field(default="FARGATE")
    cpu_architecture: Literal["X86_64", "ARM64"] = Field(default="X86_64")
    vpc_id: str | None = Field(default=None, description="VPC of the tasks; unset means the default VPC.")
    subnets: list[str] = Field(default_factory=list, description="Subnets; empty means the VPC's.")
    security_groups: list[str] = Field(default_factory=list)
    prefect_api_key_secret_arn: str | None = Field(
        default=None, description="Secrets Manager ARN of the Prefect API key, handed to tasks as a secret."
    )
    ephemeral_storage: int | None = Field(
        default=None, ge=21, le=200, description="Fargate ephemeral storage in GiB; unset means Fargate's 20 GiB."
    )
    container_secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variable name to Secrets Manager or SSM parameter ARN, injected by ECS.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment of every flow container; deployments and runs add to it."
    )
    log_group: str | None = Field(default=None, description="CloudWatch log group of the flow containers.")
    log_region: str | None = Field(default=None, description="Region of the log group.")
    assign_public_ip: bool = Field(
        default=True, description="Needed in public subnets without a NAT gateway, to reach ECR."
    )
