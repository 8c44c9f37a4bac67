"""Flow "deploy-flow": build-and-push-image, then register-deployment, for one flow folder.

Start it from the Prefect UI, with `prefect deployment run 'deploy-flow/default' --param
flow=<folder>`, or locally with `python -m meta_flows.deploy <folder>`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as prefect_runtime_flow_run
from pydantic import BaseModel

from meta_flows.build_image import ImageResult, build_and_push_image, render_image_markdown
from meta_flows.deploy_lock import deploy_lock
from meta_flows.deployments import AppliedDeployment
from meta_flows.errors import MetaFlowsError
from meta_flows.images.progress import format_bytes
from meta_flows.preflight import check_deploy_inputs, require_prefect_api
from meta_flows.project import validate_flow_folder
from meta_flows.register import register_deployment, render_deployment_markdown
from meta_flows.settings import load_settings
from meta_flows.smoke import DEFAULT_TIMEOUT_SECONDS, SmokeResult, flow_run_url, smoke_run


class DeployResult(BaseModel):
    """The image and the deployment of one deploy, and its smoke run when one was asked for."""

    image: ImageResult
    deployment: AppliedDeployment
    smoke: SmokeResult | None = None
    flow_run_url: str | None = None


@flow(name="deploy-flow")
def deploy_flow(
    flow: str,
    smoke_parameters: dict[str, Any] | None = None,
    smoke_timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> DeployResult:
    """Build and push the image of flows/<flow>, then register its deployment on the ECS pool.

    Args:
        flow: Folder of flows/ to deploy, e.g. hello.
        smoke_parameters: Set it (`{}` for the deployment's defaults) to run the deployment once
            after the deploy and wait for it; unset means no smoke run.
        smoke_timeout: Seconds to wait for the smoke run to finish.
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
    flow_run_id = prefect_runtime_flow_run.get_id()
    result = DeployResult(
        image=image, deployment=deployment, flow_run_url=flow_run_url(UUID(flow_run_id)) if flow_run_id else None
    )
    create_markdown_artifact(
        key=f"deploy-{flow.replace('_', '-')}",
        markdown=render_deploy_markdown(result),
        description=f"Deploy of flow {flow}: image and deployment changes",
    )
    if smoke_parameters is not None and deployment.id is not None:
        result.smoke = smoke_run(
            deployment_id=deployment.id, parameters=smoke_parameters, timeout_seconds=smoke_timeout
        )
    return result


def render_deploy_markdown(result: DeployResult) -> str:
    """Render the summary artifact of a deploy-flow run: the image, then the deployment and its changes."""
    image = render_image_markdown(result.image, result.image.base_image, result.image.platform).split("\n", 1)[1]
    deployment = render_deployment_markdown(result.deployment, result.image.uri).split("\n", 1)[1]
    return "\n".join(
        [
            f"# Deploy of `{result.image.flow}`",
            "",
            f"## Image{image}",
            "",
            f"## Deployment `{result.deployment.full_name}`{deployment}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meta_flows.deploy",
        description="Build, push and register one flow of flows/ on the ECS work pool.",
    )
    parser.add_argument("flow", help="folder of flows/ to deploy")
    parser.add_argument(
        "--smoke",
        metavar="JSON",
        help="run the deployment once after the deploy with these parameters (JSON object, {} for defaults)",
    )
    parser.add_argument(
        "--smoke-timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="seconds to wait for the smoke run"
    )
    args = parser.parse_args(argv)
    smoke_parameters = parse_smoke_parameters(parser, args.smoke)
    try:
        # Bad input fails here, before a flow run exists on the server.
        settings = load_settings()
        require_prefect_api()
        check_deploy_inputs(settings, args.flow)
        result = deploy_flow(flow=args.flow, smoke_parameters=smoke_parameters, smoke_timeout=args.smoke_timeout)
    except MetaFlowsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"image:      {result.image.uri}")
    print(f"digest:     {result.image.digest}")
    outcome = "built and pushed" if result.image.pushed else "already in the registry: not built, not pushed"
    print(f"outcome:    {outcome}")
    if result.image.pushed:
        print(
            f"pushed:     {result.image.layers_pushed} layers, {format_bytes(result.image.bytes_pushed)} "
            f"({result.image.layers_reused} layers already in the registry)"
        )
    print(f"deployment: {result.deployment.full_name} ({result.deployment.action})")
    print(f"id:         {result.deployment.id}")
    print(f"link:       {result.deployment.url}")
    print(f"run:        {result.flow_run_url}")
    if result.smoke is not None:
        print(f"smoke run:  {result.smoke.state} in {result.smoke.seconds} s {result.smoke.url}")
    return 0


def parse_smoke_parameters(parser: argparse.ArgumentParser, text: str | None) -> dict[str, Any] | None:
    """Parse --smoke as a JSON object; exit with a usage error otherwise."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f'--smoke must be a JSON object, e.g. \'{{"name": "test"}}\': {exc}')
    if not isinstance(value, dict):
        parser.error("--smoke must be a JSON object, e.g. '{}' for the deployment's default parameters")
    return value


if __name__ == "__main__":
    sys.exit(main())
