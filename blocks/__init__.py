"""Prefect blocks of this project. AWS credentials use prefect-aws's AwsCredentials block."""

from blocks.ecs_task_settings import EcsTaskSettings

__all__ = ["EcsTaskSettings"]
