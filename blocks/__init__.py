"""Prefect blocks of this project. AWS credentials use prefect-aws's AwsCredentials block."""

from blocks.deployment_history import DeploymentHistory
from blocks.ecs_task_settings import EcsTaskSettings

__all__ = ["DeploymentHistory", "EcsTaskSettings"]
