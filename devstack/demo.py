"""The demo on the local stack: deploy both example flows through deploy-flow, run each once.

`make demo` runs bootstrap and starts the workers first. Each deploy is a run of the
"deploy-flow/default" deployment, picked up by the deployer pool's process worker, exactly as a
user starting it from the UI or with `prefect deployment run` would. Exits non-zero unless every
flow run ends Completed.
"""

from __future__ import annotations

import sys
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import get_current_settings

from meta_flows.project import find_flow_spec, list_flow_folders, read_flow_source
from meta_flows.settings import load_settings

DEPLOY_TIMEOUT_SECONDS = 900
RUN_TIMEOUT_SECONDS = 300


def flow_run_url(flow_run_id: UUID) -> str:
    settings = get_current_settings()
    base = settings.ui_url or str(settings.api.url or "").removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def run_and_wait(name: str, parameters: dict[str, object], timeout: int) -> FlowRun:
    """Start a run of deployment `name` and wait for a final state; raise when it times out."""
    flow_run = run_deployment(name, parameters=parameters, timeout=timeout)
    if flow_run.state is None or not flow_run.state.is_final():
        raise TimeoutError(
            f"flow run {flow_run.id} of {name} not finished after {timeout} s: {flow_run_url(flow_run.id)}"
        )
    return flow_run


def main() -> int:
    settings = load_settings()
    folders = list_flow_folders(settings.project_root)
    finished: list[tuple[str, FlowRun]] = []

    for folder in folders:
        print(f"deploy-flow {folder} ...", flush=True)
        deploy_run = run_and_wait("deploy-flow/default", {"flow": folder}, DEPLOY_TIMEOUT_SECONDS)
        finished.append((f"deploy-flow ({folder})", deploy_run))
        if deploy_run.state is None or not deploy_run.state.is_completed():
            continue

        spec = find_flow_spec(settings.project_root, folder)
        deployment = f"{read_flow_source(settings.project_root, spec).flow_name}/{spec.name}"
        print(f"run {deployment} ...", flush=True)
        finished.append((deployment, run_and_wait(deployment, {}, RUN_TIMEOUT_SECONDS)))

    with get_client(sync_client=True) as client:
        print()
        for label, flow_run in finished:
            state = client.read_flow_run(flow_run.id).state
            state_name = state.name if state else "unknown"
            print(f"{label:<28} {state_name:<10} {flow_run_url(flow_run.id)}")

    all_completed = all(run.state is not None and run.state.is_completed() for _, run in finished)
    return 0 if all_completed and finished else 1


if __name__ == "__main__":
    sys.exit(main())
