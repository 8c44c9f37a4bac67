"""Benchmark: the meta-flows against `prefect deploy` with prefect-docker, on the local stack.

Run from the checkout with the local stack up:

    set -a; source .stack/env; set +a
    .venv/bin/python -m bench.run                 # 5 runs, 20 flows, own Prefect server on PostgreSQL

Every timed step is a whole process timed from its start, as a user would run it. Each run
interleaves the two paths and the floors on freshly generated flows, and the table shows the
median of all runs. Counts come from the registry and from ECS. `--json FILE` also writes the
medians and counts as JSON (the tests read it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import requests

from bench import projects
from bench.registry_meter import PushCounts, RegistryMeter
from bench.servers import prefect_server

REPO_ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT_SECONDS = 900
API_ATTEMPTS = 8


@dataclass
class Sample:
    """One timed step: wall seconds and what the registry saw."""

    seconds: float
    pushes: PushCounts
    tags_created: int


@dataclass
class Results:
    samples: dict[str, list[Sample]] = field(default_factory=lambda: defaultdict(list))
    revisions: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, sample: Sample) -> None:
        self.samples[key].append(sample)

    def median(self, key: str) -> float:
        return statistics.median(s.seconds for s in self.samples[key])

    def total(self, key: str, attribute: str) -> int:
        """Return the sum over runs of a push count, or of tags created."""
        if attribute == "tags_created":
            return sum(s.tags_created for s in self.samples[key])
        return sum(getattr(s.pushes, attribute) for s in self.samples[key])


class Bench:
    """The benchmark's names, environment and measured steps."""

    def __init__(self, api: str, work: Path, flows: int, concurrency: int) -> None:
        self.suffix = uuid.uuid4().hex[:6]
        self.work = work
        self.flow_count = flows
        self.concurrency = concurrency
        self.prefix = f"bench-{self.suffix}"
        self.std_prefix = f"bench-{self.suffix}-std"
        self.std_pool = f"bench-{self.suffix}-std"
        self.registry_block = f"bench-{self.suffix}-registry"
        self.env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "META_FLOWS_WORK_POOL": f"bench-{self.suffix}-ecs",
            "META_FLOWS_DEPLOYER_POOL": f"bench-{self.suffix}-deployer",
            "META_FLOWS_CLUSTER": f"bench-{self.suffix}",
            "META_FLOWS_REPOSITORY_PREFIX": self.prefix,
            "META_FLOWS_CREDENTIALS_BLOCK": f"bench-{self.suffix}-aws",
            "META_FLOWS_TASK_SETTINGS_BLOCK": f"bench-{self.suffix}-ecs",
        }
        self.registry = os.environ["META_FLOWS_REGISTRY_HOST"]
        log = Path(os.environ["DEVSTACK_STATE_DIR"]) / "logs" / "registry.log"
        self.meter = RegistryMeter(self.registry, log, registry_login(), [self.prefix, self.std_prefix])
        self.results = Results()

    # --- running and measuring ---------------------------------------------------------------

    def run(self, args: list[str], cwd: Path, project_root: Path | None = None) -> float:
        """Run one command to completion; return its wall time in seconds from process start."""
        env = dict(self.env)
        if project_root is not None:
            env["META_FLOWS_PROJECT_ROOT"] = str(project_root)
        started = time.monotonic()
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_SECONDS)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise RuntimeError(f"{' '.join(args)} failed with code {result.returncode} in {cwd}:\n{tail}")
        return seconds

    def measure(self, key: str, repositories: list[str], step: Callable[[], float]) -> Sample:
        tags_before = self.meter.tag_count(repositories)
        mark = self.meter.mark()
        seconds = step()
        sample = Sample(seconds, self.meter.pushes_since(mark), self.meter.tag_count(repositories) - tags_before)
        self.results.add(key, sample)
        print(
            f"  {key:<28} {seconds:6.2f} s  pushes {sample.pushes.manifests}  tags +{sample.tags_created}", flush=True
        )
        return sample

    # --- set-up ------------------------------------------------------------------------------

    def set_up(self) -> None:
        """Bootstrap our pool, then make the standard path's pool and registry credentials block."""
        empty = self.work / "bootstrap"
        projects.write_ours(empty, {}, "bootstrap")
        self.run([sys.executable, "-m", "meta_flows.bootstrap"], REPO_ROOT, empty)
        self.run([sys.executable, "-m", "bench.standard_setup", self.std_pool, self.registry_block], REPO_ROOT)

    # --- the deploy paths ----------------------------------------------------------------------

    def ours_project(self, name: str, count: int, marker: str) -> projects.Project:
        flows = {f"{name}-{k}": f"o-{self.suffix}-{name}-{k}" for k in range(count)}
        return projects.write_ours(self.work / "ours" / name, flows, marker)

    def standard_project(self, name: str, count: int, marker: str) -> projects.Project:
        flows = {f"{name}-{k}": f"s-{self.suffix}-{name}-{k}" for k in range(count)}
        return projects.write_standard(
            self.work / "standard" / name,
            flows,
            marker,
            base_image=os.environ["META_FLOWS_BASE_IMAGE"],
            registry=self.registry,
            prefix=self.std_prefix,
            pool=self.std_pool,
            credentials_block=self.registry_block,
        )

    def deploy_ours(self, project: projects.Project) -> float:
        if len(project.flows) == 1:
            command = [sys.executable, "-m", "meta_flows.deploy", project.flows[0]]
        else:
            command = [sys.executable, "-m", "meta_flows.deploy_all", "--concurrency", str(self.concurrency)]
        return self.run(command, REPO_ROOT, project.root)

    def deploy_standard(self, project: projects.Project) -> float:
        return self.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], project.root)

    def one_path(self, path: str, run: int) -> None:
        """Cold deploy, unchanged redeploy and code-only change of one flow, then of many flows."""
        make = self.ours_project if path == "ours" else self.standard_project
        deploy = self.deploy_ours if path == "ours" else self.deploy_standard
        prefix = self.prefix if path == "ours" else self.std_prefix
        marker = f"{path} run {run} {uuid.uuid4().hex}"

        one = make(f"one{run}", 1, marker)
        repositories = [f"{prefix}/{f}" for f in one.flows]
        self.measure(f"{path}:one-cold", repositories, lambda: deploy(one))
        self.measure(f"{path}:one-unchanged", repositories, lambda: deploy(one))
        projects.touch_code(one, f"code change {uuid.uuid4().hex}")
        self.measure(f"{path}:one-code-change", repositories, lambda: deploy(one))

        many = make(f"many{run}", self.flow_count, marker)
        repositories = [f"{prefix}/{f}" for f in many.flows]
        self.measure(f"{path}:many-cold", repositories, lambda: deploy(many))
        self.measure(f"{path}:many-unchanged", repositories, lambda: deploy(many))

    def floors(self, run: int) -> None:
        """Time a plain build and push of a fresh flow image, and empty flow runs of our shapes."""
        project = self.ours_project(f"floor{run}", 1, f"floor run {run} {uuid.uuid4().hex}")
        folder = project.root / "flows" / project.flows[0]
        image = f"{self.registry}/{self.prefix}/{project.flows[0]}:floor"
        repositories = [f"{self.prefix}/{project.flows[0]}"]
        floors = [sys.executable, "-m", "bench.floors"]
        self.measure(
            "floor:build-push", repositories, lambda: self.run([*floors, "build-push", str(folder), image], REPO_ROOT)
        )
        self.measure("floor:one-shape", [], lambda: self.run([*floors, "subflows"], REPO_ROOT))
        many = ["tasks", str(self.flow_count), str(self.concurrency)]
        self.measure("floor:many-shape", [], lambda: self.run([*floors, *many], REPO_ROOT))

    # --- task definition revisions -------------------------------------------------------------

    def revisions_after_runs(self, runs: int) -> None:
        """Run each path's first deployment `runs` times, restarting the ECS worker between runs."""
        for path, pool, flow_name in (
            ("ours", self.env["META_FLOWS_WORK_POOL"], f"o-{self.suffix}-one0-0"),
            ("standard", self.std_pool, f"s-{self.suffix}-one0-0"),
        ):
            deployment = api_get(self.env, f"/deployments/name/{flow_name}/default")
            family = deployment["job_variables"].get("family") or f"prefect_{pool}_{deployment['id']}"
            for _ in range(runs):
                api_request(self.env, "POST", f"/deployments/{deployment['id']}/create_flow_run", {})
                command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "ecs"]
                self.run([*command, "--run-once", "--install-policy", "never"], REPO_ROOT)
            self.results.revisions[path] = count_revisions(family)
            print(f"  {path}: {self.results.revisions[path]} revisions of {family} after {runs} runs", flush=True)


def api_request(env: dict[str, str], method: str, path: str, body: Any = None) -> Any:
    """Call the Prefect API, retrying HTTP 503, which a busy SQLite server returns under load."""
    for attempt in range(1, API_ATTEMPTS + 1):
        reply = requests.request(method, f"{env['PREFECT_API_URL']}{path}", json=body, timeout=10)
        if reply.status_code != 503 or attempt == API_ATTEMPTS:
            reply.raise_for_status()
            return reply.json()
        time.sleep(0.5 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def api_get(env: dict[str, str], path: str) -> Any:
    return api_request(env, "GET", path)


def registry_login() -> tuple[str, str]:
    ecr = boto3.client("ecr")
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    return user, password


def count_revisions(family: str) -> int:
    """Return the number of ACTIVE revisions in exactly this task definition family."""
    ecs = boto3.client("ecs")
    arns: list[str] = []
    for page in ecs.get_paginator("list_task_definitions").paginate(familyPrefix=family, status="ACTIVE"):
        arns += page["taskDefinitionArns"]
    return sum(arn.rpartition("/")[2].rpartition(":")[0] == family for arn in arns)


def machine_description(database: str) -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    memory = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kib = int(meminfo.read_text().split()[1])
        memory = f"{total_kib / 1024 / 1024:.0f} GiB"
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory} RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}, Prefect server on {database}"
    )


def run_benchmark(arguments: argparse.Namespace, api: str) -> Results:
    with tempfile.TemporaryDirectory(prefix="meta-flows-bench-") as work:
        bench = Bench(api, Path(work), arguments.flows, arguments.concurrency)
        print(
            f"bench {bench.suffix}: {arguments.runs} runs, {arguments.flows} flows, concurrency {arguments.concurrency}"
        )
        bench.set_up()
        for run in range(arguments.runs):
            print(f"run {run + 1} of {arguments.runs}", flush=True)
            # Interleave: alternate which path goes first, so drift in the machine hits both.
            order = ["ours", "standard"] if run % 2 == 0 else ["standard", "ours"]
            for path in order:
                bench.one_path(path, run)
            bench.floors(run)
        print("task definition revisions", flush=True)
        bench.revisions_after_runs(arguments.revision_runs)
        return bench.results


def main(argv: list[str] | None = None) -> int:
    from bench.report import render_table, results_json

    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of every step; the table shows medians (default 5)")
    parser.add_argument("--flows", type=int, default=20, help="flows in the many-flows steps (default 20)")
    parser.add_argument("--concurrency", type=int, default=4, help="deploy-all-flows concurrency (default 4)")
    parser.add_argument("--revision-runs", type=int, default=10, help="flow runs for the revision count (default 10)")
    parser.add_argument(
        "--database",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="database of the benchmark's own Prefect server",
    )
    parser.add_argument("--prefect-port", type=int, default=5052, help="port of the benchmark's own Prefect server")
    parser.add_argument("--postgres-port", type=int, default=5433, help="port of the benchmark's PostgreSQL")
    parser.add_argument("--prefect-api", help="use this Prefect API instead of starting an own server")
    parser.add_argument("--json", type=Path, help="also write the medians and counts to this file")
    arguments = parser.parse_args(argv)

    if arguments.prefect_api:
        results = run_benchmark(arguments, arguments.prefect_api)
        database = "the given server"
    else:
        state = Path(tempfile.mkdtemp(prefix="meta-flows-bench-server-"))
        os.chmod(state, 0o755)  # PostgreSQL runs as its own user and must enter this folder
        with prefect_server(state, arguments.prefect_port, arguments.database, arguments.postgres_port) as api:
            results = run_benchmark(arguments, api)
        database = arguments.database
    print()
    print(render_table(results, arguments, machine_description(database)))
    if arguments.json:
        arguments.json.write_text(json.dumps(results_json(results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
