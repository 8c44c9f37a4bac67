"""Flow "deploy-flow": build-and-push-image, then register-deployment, for one flow folder.

Start it from the Prefect UI, with `prefect deployment run 'deploy-flow/default' --param
flow=<folder>`, or locally with `python -m meta_flows.deploy <folder>`.
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger
from pydantic import BaseModel

from meta_flows.build_image import ImageResult, build_and_push_image
from meta_flows.deploy_lock import deploy_lock
from meta_flows.deployments import AppliedDeployment
from meta_flows.errors import MetaFlowsError
from meta_flows.preflight import check_deploy_inputs, require_prefect_api
from meta_flows.project import validate_flow_folder
from meta_flows.register import register_deployment
from meta_flows.settings import load_settings


class DeployResult(BaseModel):
    """The image and the deployment of one deploy."""

    image: ImageResult
    deployment: AppliedDeployment


@flow(name="deploy-flow")
def deploy_flow(flow: str) -> DeployResult:
    """Build and push the image of flows/<flow>, then register its deployment on the ECS pool.

    Args:
        flow: Folder of flows/ to deploy, e.g. hello.
    """
    logger = get_run_logger()
    settings = load_settings()
    validate_flow_folder(settings.project_root, flow)
    check_deploy_inputs(settings, flow)

    # Runs of the same flow wait for each other; the second finds the image in place.
    with deploy_lock(settings.repository_name(flow)):
        image = build_and_push_image(flow=flow)
        deployment = register_deployment(flow=flow, image=image.uri)
    logger.info(
        "Deployed %s: image %s, deployment %s (%s) %s",
        flow,
        image.uri,
        deployment.full_name,
        deployment.id,
        deployment.url,
    )
    return DeployResult(image=image, deployment=deployment)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meta_flows.deploy",
        description="Build, push and register one flow of flows/ on the ECS work pool.",
    )
    parser.add_argument("flow", help="folder of flows/ to deploy")
    args = parser.parse_args(argv)
    try:
        # Bad input fails here, before a flow run exists on the server.
        settings = load_settings()
        require_prefect_api()
        check_deploy_inputs(settings, args.flow)
        result = deploy_flow(flow=args.flow)
    except MetaFlowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"image:      {result.image.uri}")
    print(f"digest:     {result.image.digest}")
    outcome = "built and pushed" if result.image.pushed else "already in the registry: not built, not pushed"
    print(f"outcome:    {outcome}")
    print(f"deployment: {result.deployment.full_name} ({result.deployment.action})")
    print(f"id:         {result.deployment.id}")
    print(f"link:       {result.deployment.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
