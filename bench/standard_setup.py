"""Set up the standard path: its ECS pool and the registry credentials block its push step reads.

The pool's template is our pool's template with `match_latest_revision_in_family` back at
prefect-aws's default (off), so the two paths differ only in how they tag and register.
Usage: `python -m bench.standard_setup POOL CREDENTIALS_BLOCK` with the meta-flows' settings.
"""

from __future__ import annotations

import copy
import sys

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect_docker.credentials import DockerRegistryCredentials

from meta_flows.aws import ecr
from meta_flows.settings import load_settings


def main(argv: list[str]) -> int:
    pool_name, block_name = argv
    settings = load_settings()
    with get_client(sync_client=True) as client:
        template = copy.deepcopy(client.read_work_pool(settings.work_pool).base_job_template)
        template["variables"]["properties"]["match_latest_revision_in_family"]["default"] = False
        client.create_work_pool(WorkPoolCreate(name=pool_name, type="ecs", base_job_template=template), overwrite=True)
    login = ecr.get_registry_login(settings.aws_region)
    DockerRegistryCredentials(
        username=login.username, password=login.password, registry_url=settings.registry_host or ""
    ).save(block_name, overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
