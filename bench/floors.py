"""The two floors, each run as its own process and timed from its start.

- `subflows`: an empty flow run shaped like deploy-flow (a flow with two subflows).
- `tasks N C`: an empty flow run shaped like deploy-all-flows (an async flow whose thread runs
  N tasks, C at a time).
- `build-push FOLDER IMAGE`: a plain build and push of a flow folder's image through the same
  Docker engine API the meta-flows use, with no Prefect and no registry look-up.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.context import SyncClientContext
from prefect.task_runners import ThreadPoolTaskRunner


@flow(name="bench-floor-step")
def empty_step() -> None:
    return None


@flow(name="bench-floor-subflows")
def empty_subflows() -> None:
    empty_step()
    empty_step()


@task(name="bench-floor-task")
def empty_task(index: int) -> int:
    return index


@flow(name="bench-floor-tasks")
async def empty_tasks(count: int, concurrency: int) -> None:
    """Shaped like deploy-all-flows: an async flow whose body runs in a thread, in one sync client context."""
    await asyncio.to_thread(run_empty_tasks, count, concurrency)


def run_empty_tasks(count: int, concurrency: int) -> None:
    runner: Any
    with SyncClientContext.get_or_create(), ThreadPoolTaskRunner(max_workers=concurrency) as runner:
        futures = [runner.submit(empty_task, parameters={"index": i}) for i in range(count)]
        for future in futures:
            future.result()


def build_and_push(folder: Path, image: str) -> None:
    from meta_flows.aws import ecr
    from meta_flows.images import engine
    from meta_flows.images.context import assemble_context
    from meta_flows.settings import load_settings

    settings = load_settings()
    client = engine.connect_engine()
    base = engine.resolve_base_image(client, settings.base_image)
    context = assemble_context(folder, base.pinned_ref, base.pinned_ref, settings.platform, None)
    repository, _, tag = image.rpartition(":")
    engine.build_image(client, context.to_tar(), image, context.build_args, {}, lambda line: None)
    engine.push_image(client, repository, tag, ecr.get_registry_login(settings.aws_region), lambda line: None)


def main(argv: list[str]) -> int:
    if argv[:1] == ["subflows"]:
        empty_subflows()
    elif argv[:1] == ["tasks"] and len(argv) == 3:
        asyncio.run(empty_tasks(int(argv[1]), int(argv[2])))
    elif argv[:1] == ["build-push"] and len(argv) == 3:
        build_and_push(Path(argv[1]), argv[2])
    else:
        print("usage: python -m bench.floors subflows | tasks N C | build-push FOLDER IMAGE", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
