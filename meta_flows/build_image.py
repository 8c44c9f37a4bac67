"""Flow "build-and-push-image": the image of one flow folder, built and pushed to its registry.

The tag is a content hash of everything that goes into the image, so an unchanged flow gives the
same tag, and a tag the registry already has means no build and no push.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from meta_flows.aws import ecr, sts
from meta_flows.aws.login_cache import RegistryLoginCache
from meta_flows.images import engine
from meta_flows.images.context import assemble_context
from meta_flows.images.manifests import compressed_size, read_manifest
from meta_flows.images.progress import PushProgress, format_bytes
from meta_flows.project import find_flow_spec, validate_flow_folder
from meta_flows.settings import Settings, load_settings


class ImageResult(BaseModel):
    """The image of one flow: where it is, its digest, and whether this run built or pushed it."""

    flow: str
    uri: str
    repository: str
    tag: str
    digest: str
    built: bool
    pushed: bool
    layers_pushed: int = 0
    layers_reused: int = 0
    bytes_pushed: int = 0
    seconds: float = 0.0
    platform: str = ""
    base_image: str = ""
    size_bytes: int | None = None
    build_seconds: float = 0.0
    push_seconds: float = 0.0


def registry_host_for(settings: Settings, account: str) -> str:
    """Return the configured registry host, or the account's ECR registry in the region."""
    return settings.registry_host or f"{account}.dkr.ecr.{settings.aws_region}.amazonaws.com"


@task(name="ensure-repository")
def ensure_repository_task(region: str, repository: str, keep_images: int) -> None:
    result = ecr.ensure_repository(region, repository, keep_images)
    get_run_logger().info("ECR repository %s: %s", repository, result.action)


@task(name="build-image")
def build_image_task(context_tar: bytes, image_ref: str, build_args: dict[str, str], flow_folder: str) -> str:
    logger = get_run_logger()
    client = engine.connect_engine()

    def log_line(line: str) -> None:
        # One line per Dockerfile step at info; the commands' own output at debug.
        (logger.info if line.startswith("Step ") else logger.debug)(line)

    labels = {"org.opencontainers.image.title": flow_folder, "dev.meta-flows.flow": flow_folder}
    return engine.build_image(client, context_tar, image_ref, build_args, labels, log_line)


# NO_CACHE: the login cache is no input to hash, and no cached push result may stand in for a push.
@task(name="push-image", cache_policy=NO_CACHE)
def push_image_task(logins: RegistryLoginCache, repository_ref: str, tag: str) -> engine.PushResult:
    logger = get_run_logger()
    client = engine.connect_engine()
    progress = PushProgress(logger.info)
    return engine.push_image(client, repository_ref, tag, logins.get(), logger.debug, progress.update)


@flow(name="build-and-push-image", log_prints=False)
def build_and_push_image(flow: str) -> ImageResult:
    """Build the image of flows/<flow_name> and push it, unless the registry has its tag already.

    Args:
        flow: Folder of flows/ whose image to build.
    """
    return build_and_push(flow)


@dataclass(frozen=True)
class ImageTarget:
    """Inputs every image of one deploy shares: settings, registry host and login, pinned base image."""

    settings: Settings
    host: str
    base: engine.BaseImage
    logins: RegistryLoginCache


def prepare_image_target(settings: Settings) -> ImageTarget:
    """Look up the caller's registry, its login and the base image's digest, once per deploy."""
    region = settings.aws_region
    identity = sts.get_caller_identity(region)
    base = engine.resolve_base_image(engine.connect_engine(), settings.base_image)
    logins = RegistryLoginCache(lambda: ecr.get_registry_login(region))
    return ImageTarget(settings=settings, host=registry_host_for(settings, identity.account), base=base, logins=logins)


def build_and_push(flow_name: str, target: ImageTarget | None = None, artifact: bool = True) -> ImageResult:
    """Build and push the image of one flow folder inside the current flow or task run.

    deploy-all-flows calls this from its tasks, since a subflow per flow costs about a second,
    and passes one `target` to all of them; its summary artifact replaces the per-image ones.
    """
    started = time.monotonic()
    logger = get_run_logger()
    target = target or prepare_image_target(load_settings())
    settings, host, base = target.settings, target.host, target.base
    folder = validate_flow_folder(settings.project_root, flow_name)
    find_flow_spec(settings.project_root, flow_name)

    repository = settings.repository_name(flow_name)
    context = assemble_context(folder, base.pinned_ref, base.pinned_ref, settings.platform, settings.ca_bundle)
    tag = context.content_tag()
    uri = f"{host}/{repository}:{tag}"
    logger.info("Image of %s: %s (base %s)", flow_name, uri, base.pinned_ref)

    # A tag in the registry implies its repository, so the repository is checked only before a push.
    logins = target.logins
    existing = read_manifest(uri, logins)
    if existing is not None:
        logger.info("Registry has %s already (%s): no build, no push", uri, existing.digest)
        result = ImageResult(
            flow=flow_name,
            uri=uri,
            repository=f"{host}/{repository}",
            tag=tag,
            digest=existing.digest,
            built=False,
            pushed=False,
            seconds=round(time.monotonic() - started, 2),
            platform=settings.platform,
            size_bytes=existing.size_bytes,
        )
    else:
        build_started = time.monotonic()
        build_image_task(context.to_tar(), uri, context.build_args, flow_name)
        build_seconds = round(time.monotonic() - build_started, 2)
        logger.info("Built %s in %.1f s", uri, build_seconds)
        # After the build, so a flow that fails to build leaves no repository behind.
        ensure_repository_task(settings.aws_region, repository, settings.image_keep_count)
        push_started = time.monotonic()
        pushed = push_image_task(logins, f"{host}/{repository}", tag)
        logger.info(
            "Pushed %s@%s (%d layers new, %d reused, %s)",
            uri,
            pushed.digest,
            pushed.layers_pushed,
            pushed.layers_reused,
            format_bytes(pushed.bytes_pushed),
        )
        result = ImageResult(
            flow=flow_name,
            uri=uri,
            repository=f"{host}/{repository}",
            tag=tag,
            digest=pushed.digest,
            built=True,
            pushed=True,
            layers_pushed=pushed.layers_pushed,
            layers_reused=pushed.layers_reused,
            bytes_pushed=pushed.bytes_pushed,
            seconds=round(time.monotonic() - started, 2),
            platform=settings.platform,
            build_seconds=build_seconds,
            push_seconds=round(time.monotonic() - push_started, 2),
            size_bytes=compressed_size(uri, logins),
        )
    result.base_image = base.pinned_ref
    if not artifact:
        return result
    create_markdown_artifact(
        key=f"image-{flow_name.replace('_', '-')}",
        markdown=render_image_markdown(result, base.pinned_ref, settings.platform),
        description=f"Image of flow {flow_name}",
    )
    return result


def render_image_markdown(result: ImageResult, base: str, platform: str) -> str:
    """Render the image artifact of a build-and-push-image run."""
    outcome = "built and pushed" if result.pushed else "already in the registry: not built, not pushed"
    size = format_bytes(result.size_bytes) + " compressed" if result.size_bytes is not None else "-"
    return "\n".join(
        [
            f"# Image of `{result.flow}`",
            "",
            "| field | value |",
            "|---|---|",
            f"| image | `{result.uri}` |",
            f"| digest | `{result.digest}` |",
            f"| outcome | {outcome} |",
            f"| base image | `{base}` |",
            f"| platform | {platform} |",
            f"| size | {size} |",
            f"| layers pushed / reused | {result.layers_pushed} / {result.layers_reused} |",
            f"| bytes pushed | {result.bytes_pushed} ({format_bytes(result.bytes_pushed)}) |",
            f"| build seconds | {result.build_seconds} |",
            f"| push seconds | {result.push_seconds} |",
            f"| total seconds | {result.seconds} |",
        ]
    )
