"""Commands of the local stack: up, down, status, env and workers."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack import base_image, docker_engine, workers
from devstack.config import (
    PREFECT_API_URL,
    REPO_ROOT,
    StackPaths,
    base_image_ref,
    parse_env_file,
    read_prefect_pin,
    render_env_file,
    stack_env,
)
from devstack.mounts import unmount_below
from devstack.ports import find_port_owner, port_in_use_message, port_is_free
from devstack.processes import (
    ProcessRecord,
    exit_code,
    is_alive,
    read_record,
    running_record,
    start_process,
    stop_process,
)
from devstack.services import Service, prefect_healthy, services, write_private

DOCKERD_KEY = "dockerd"
DOCKER_LABEL = "docker engine"
DOCKERD_TIMEOUT = 60.0
WORKER_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
# dockerd itself waits up to 15 s (its default shutdown-timeout) for containers to stop.
DOCKERD_STOP_TIMEOUT = 60.0
POLL_INTERVAL = 0.2


class StackError(RuntimeError):
    """Failure whose message names the fix. The CLI prints it and exits with code 1."""


@dataclass
class Part:
    """One process of the stack during `up` or `workers`: to start, already running, or external."""

    label: str
    detail: str  # address printed after the state
    healthy: Callable[[], bool]
    health_check: str
    timeout: float
    # Name of the pidfile and log file; None for an engine the stack did not start.
    key: str | None = None
    record: ProcessRecord | None = None
    launch: Callable[[], ProcessRecord] | None = None
    note: str = ""
    launched_at: float = 0.0
    ready_after: float | None = None
    error: str | None = None


def print_line(label: str, state: str, detail: str = "", note: str = "") -> None:
    line = f"{label:<16} {state:<9} {detail}"
    if note:
        line += f"  ({note})"
    print(line.rstrip(), flush=True)


@contextmanager
def stack_lock(paths: StackPaths) -> Iterator[None]:
    """Hold an exclusive lock, so two devstack commands never start or stop the same part at once."""
    paths.ensure()
    with paths.lock_file.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                "waiting for another devstack command to finish",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- planning -------------------------------------------------------------------------------


def plan_docker(paths: StackPaths) -> Part:
    """Use the stack's running dockerd, else a reachable engine, else plan to start dockerd."""
    layout = docker_engine.DockerLayout.of(paths)
    pidfile = paths.pidfile(DOCKERD_KEY)
    part = Part(
        label=DOCKER_LABEL,
        detail=layout.host,
        healthy=lambda: docker_engine.ping(layout.host),
        health_check=f"GET /_ping on {layout.host}",
        timeout=DOCKERD_TIMEOUT,
        key=DOCKERD_KEY,
    )
    part.record = running_record(pidfile)
    if part.record is not None:
        part.note = "already running"
        return part

    candidate = docker_engine.external_candidate(layout.host)
    if candidate is not None and docker_engine.ping(candidate):
        return Part(
            label=DOCKER_LABEL,
            detail=candidate,
            healthy=lambda: docker_engine.ping(candidate),
            health_check=f"GET /_ping on {candidate}",
            timeout=DOCKERD_TIMEOUT,
            note="external engine, not started by the stack",
        )

    def launch() -> ProcessRecord:
        argv = docker_engine.prepare_dockerd(paths)
        return start_process(
            argv,
            pidfile,
            paths.log(DOCKERD_KEY),
            docker_engine.dockerd_env(),
            REPO_ROOT,
        )

    part.launch = launch
    return part


def plan_service(paths: StackPaths, service: Service) -> Part:
    pidfile = paths.pidfile(service.key)
    part = Part(
        label=service.label,
        detail=service.url,
        healthy=service.healthy,
        health_check=service.health_check,
        timeout=service.timeout,
        key=service.key,
    )
    part.record = running_record(pidfile)
    if part.record is not None:
        part.note = "already running"
        return part

    def launch() -> ProcessRecord:
        service.prepare(paths)
        env = {**os.environ, **service.env(paths)}
        return start_process(service.argv(paths), pidfile, paths.log(service.key), env, REPO_ROOT)

    part.launch = launch
    return part


def port_conflicts(plan: list[tuple[Part, Service]]) -> list[str]:
    """Return one message per service that must start but whose port another process holds."""
    messages = []
    for part, service in plan:
        if part.launch is not None and not port_is_free(service.port):
            messages.append(port_in_use_message(service.port, service.label, find_port_owner(service.port)))
    return messages


# --- starting and waiting -------------------------------------------------------------------


def launch_parts(parts: list[Part]) -> None:
    for part in parts:
        if part.launch is None:
            continue
        part.launched_at = time.monotonic()
        part.record = part.launch()
    # Parts that were already running are timed from now.
    for part in parts:
        if part.launch is None:
            part.launched_at = time.monotonic()


def wait_until_healthy(parts: list[Part], paths: StackPaths) -> None:
    """Poll all parts at the same time, each until healthy, exited, or past its deadline."""
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        list(pool.map(lambda part: poll_part(part, paths), parts))


def poll_part(part: Part, paths: StackPaths) -> None:
    while not check_part(part, paths):
        time.sleep(POLL_INTERVAL)


def check_part(part: Part, paths: StackPaths) -> bool:
    """Update `part` after one health check, and return True once it is healthy or failed."""
    if part.healthy():
        part.ready_after = time.monotonic() - part.launched_at
        return True
    log = paths.log(part.key) if part.key else None
    if part.record is not None and not is_alive(part.record):
        code = exit_code(part.record)
        outcome = f"exited with code {code}" if code is not None else "exited"
        part.error = f"{part.label} {outcome} before it became healthy: read {log}"
        return True
    if time.monotonic() - part.launched_at > part.timeout:
        where = f": read {log}" if log else ""
        part.error = f"{part.label} not healthy after {part.timeout:.0f} s ({part.health_check}){where}"
        return True
    return False


def report_parts(parts: list[Part]) -> None:
    for part in parts:
        if part.error is not None:
            print_line(part.label, "failed", part.detail)
            continue
        note = part.note
        if part.launch is not None and part.ready_after is not None:
            note = f"started in {part.ready_after:.1f} s"
        print_line(part.label, "running", part.detail, note)


def raise_failures(parts: list[Part]) -> None:
    errors = [part.error for part in parts if part.error]
    if errors:
        raise StackError("\n".join(errors))


# --- up -------------------------------------------------------------------------------------


def up(paths: StackPaths, with_base_image: bool = True) -> None:
    """Start every part that is not running, wait until all are healthy, and write the env file."""
    with stack_lock(paths):
        docker_part = plan_docker(paths)
        service_plan = [(plan_service(paths, service), service) for service in services()]
        conflicts = port_conflicts(service_plan)
        if conflicts:
            raise StackError("\n".join(conflicts))

        parts = [docker_part, *(part for part, _ in service_plan)]
        launch_parts(parts)
        wait_until_healthy(parts, paths)
        report_parts(parts)
        raise_failures(parts)

        prefect_version = read_prefect_pin()
        env = stack_env(paths, docker_part.detail, base_image_ref(prefect_version))
        write_private(paths.env_file, render_env_file(env))
        if with_base_image:
            ensure_base_image(paths, docker_part.detail, prefect_version)
        print_line(
            "env file",
            "written",
            str(paths.env_file),
            'eval "$(python -m devstack env)"',
        )


def ensure_base_image(paths: StackPaths, docker_host: str, prefect_version: str) -> None:
    import docker

    started = time.monotonic()
    client = docker.APIClient(base_url=docker_host, version="auto", timeout=900)
    try:
        result = base_image.ensure_base_image(client, paths, prefect_version)
    except (base_image.BuildError, docker.errors.DockerException) as error:
        print_line("base image", "failed", base_image_ref(prefect_version))
        raise StackError(f"base image: {error} (log: {paths.log(base_image.LOG_PART)})") from error
    finally:
        client.close()
    if result.built:
        steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.steps.items())
        note = f"built in {time.monotonic() - started:.1f} s: {steps}"
    else:
        note = "already built"
    print_line("base image", "ready", result.ref, note)


# --- down -----------------------------------------------------------------------------------


def down(paths: StackPaths) -> None:
    """Stop the workers, then the services and dockerd. Files in the state folder stay."""
    with stack_lock(paths):
        worker_labels = {key: key.replace("-", " ") for key in workers.all_worker_keys()}
        service_labels = {service.key: service.label for service in services()}
        service_labels[DOCKERD_KEY] = DOCKER_LABEL
        stop_all(paths, worker_labels)
        stop_all(paths, service_labels)


def stop_all(paths: StackPaths, labels: dict[str, str]) -> None:
    """Stop the processes of `labels` at the same time and print one line each."""

    def stop(key: str) -> tuple[str, int | None, float]:
        record = read_record(paths.pidfile(key))
        started = time.monotonic()
        timeout = DOCKERD_STOP_TIMEOUT if key == DOCKERD_KEY else STOP_TIMEOUT
        stopped = stop_process(paths.pidfile(key), timeout)
        own_host = docker_engine.DockerLayout.of(paths).host
        if key == DOCKERD_KEY and not docker_engine.ping(own_host):
            # dockerd 20.10 leaves the bind mount exec/netns/default behind when it exits.
            unmount_below(paths.docker)
        pid = record.pid if record is not None and stopped else None
        return key, pid, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=len(labels)) as pool:
        results = list(pool.map(stop, labels))
    for key, pid, seconds in results:
        if pid is None:
            print_line(labels[key], "stopped", "was not running")
        else:
            print_line(labels[key], "stopped", f"pid {pid}", f"in {seconds:.1f} s")


# --- status ---------------------------------------------------------------------------------


def status(paths: StackPaths) -> bool:
    """Print one line per part, and return True when the engine and all services are healthy."""
    healthy = docker_status(paths)
    for service in services():
        healthy = service_status(paths, service) and healthy
    base_image_status(paths)
    for key in reversed(workers.all_worker_keys()):
        record = running_record(paths.pidfile(key))
        label = key.replace("-", " ")
        if record is None:
            print_line(label, "stopped")
        else:
            print_line(label, "running", f"pid {record.pid}")
    env_state = "written" if paths.env_file.is_file() else "missing"
    print_line("env file", env_state, str(paths.env_file))
    return healthy


def docker_status(paths: StackPaths) -> bool:
    layout = docker_engine.DockerLayout.of(paths)
    record = running_record(paths.pidfile(DOCKERD_KEY))
    if record is not None:
        healthy = docker_engine.ping(layout.host)
        print_line(
            DOCKER_LABEL,
            "running" if healthy else "unhealthy",
            layout.host,
            f"pid {record.pid}",
        )
        return healthy
    candidate = docker_engine.external_candidate(layout.host)
    if candidate is not None and docker_engine.ping(candidate):
        print_line(
            DOCKER_LABEL,
            "running",
            candidate,
            "external engine, not started by the stack",
        )
        return True
    print_line(DOCKER_LABEL, "stopped")
    return False


def service_status(paths: StackPaths, service: Service) -> bool:
    record = running_record(paths.pidfile(service.key))
    if record is not None:
        healthy = service.healthy()
        print_line(
            service.label,
            "running" if healthy else "unhealthy",
            service.url,
            f"pid {record.pid}",
        )
        return healthy
    if not port_is_free(service.port):
        owner = find_port_owner(service.port)
        by = f"pid {owner.pid} {owner.command}" if owner else "another process"
        print_line(service.label, "stopped", f"port {service.port} is held by {by}")
        return False
    print_line(service.label, "stopped")
    return False


def base_image_status(paths: StackPaths) -> None:
    import docker

    ref = base_image_ref(read_prefect_pin())
    env = read_env(paths)
    docker_host = env.get("DOCKER_HOST") if env else None
    if not docker_host or not docker_engine.ping(docker_host):
        print_line("base image", "unknown", ref, "no Docker engine to ask")
        return
    client = docker.APIClient(base_url=docker_host, version="auto", timeout=10)
    try:
        label = base_image.image_label(client, ref, base_image.INPUTS_LABEL)
    finally:
        client.close()
    print_line("base image", "ready" if label else "missing", ref)


# --- env ------------------------------------------------------------------------------------


def read_env(paths: StackPaths) -> dict[str, str] | None:
    if not paths.env_file.is_file():
        return None
    return parse_env_file(paths.env_file.read_text())


def env_text(paths: StackPaths) -> str:
    if not paths.env_file.is_file():
        raise StackError(f"{paths.env_file} not found: run `python -m devstack up` first")
    return paths.env_file.read_text()


# --- workers --------------------------------------------------------------------------------


def start_workers(paths: StackPaths, runner_only: bool = False) -> None:
    """Start the Prefect workers and the task runner, and wait until the API lists the workers.

    With `runner_only`, start the task runner alone: tests start their own Prefect workers on
    their own pools, while one runner serves every cluster of the emulator.
    """
    with stack_lock(paths):
        env = read_env(paths)
        if env is None or not prefect_healthy():
            raise StackError(
                f"the Prefect server at {PREFECT_API_URL} is not running: run `python -m devstack up` first"
            )
        plan = workers.worker_plan()
        if runner_only:
            plan = [worker for worker in plan if worker.prefect_name is None]
        if not workers.runner_available():
            print(
                f"warning: module {workers.RUNNER_MODULE} not found, so the task runner is not started",
                file=sys.stderr,
            )
        parts = [plan_worker(paths, worker, workers.worker_env(env)) for worker in plan]
        check_pools(plan, parts)

        launch_parts(parts)
        wait_until_healthy(parts, paths)
        for part, worker in zip(parts, plan, strict=True):
            if worker.prefect_name is None:
                check_runner(part, paths.log(worker.key))
        report_parts(parts)
        raise_failures(parts)


def check_runner(part: Part, log: Path) -> None:
    """Judge the task runner, which has no readiness signal, by whether it is still alive.

    This check runs after the Prefect workers registered, a few seconds after the start, so a
    runner that fails on import or on its settings has exited by then.
    """
    if part.record is not None and not is_alive(part.record):
        part.error = f"{part.label} exited during start: read {log}"
    elif part.launch is not None:
        part.ready_after = None
        part.note = "alive; it has no health check"


def check_pools(plan: list[workers.Worker], parts: list[Part]) -> None:
    """Fail before any start when a pool is missing, so no worker creates a pool."""
    missing = [
        workers.missing_pool_message(worker.pool)
        for worker, part in zip(plan, parts, strict=True)
        if worker.pool is not None and part.launch is not None and not workers.pool_exists(worker.pool)
    ]
    if missing:
        raise StackError("\n".join(dict.fromkeys(missing)))


def plan_worker(paths: StackPaths, worker: workers.Worker, env: dict[str, str]) -> Part:
    pidfile = paths.pidfile(worker.key)
    record = running_record(pidfile)
    since = record.started_at if record is not None else time.time()

    def healthy() -> bool:
        if worker.pool is None or worker.prefect_name is None:
            return part.record is not None and is_alive(part.record)
        return workers.worker_seen(worker.pool, worker.prefect_name, since)

    detail = f"pool {worker.pool}" if worker.pool else f"python -m {workers.RUNNER_MODULE}"
    part = Part(
        label=worker.label,
        detail=detail,
        healthy=healthy,
        health_check=f"worker {worker.prefect_name} listed by the work pool's workers/filter endpoint",
        timeout=WORKER_TIMEOUT,
        key=worker.key,
        record=record,
        note="already running" if record is not None else "",
    )
    if record is None:
        part.launch = lambda: start_process(worker.argv, pidfile, paths.log(worker.key), env, REPO_ROOT)
    return part
