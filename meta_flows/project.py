"""prefect.yaml and flows/: the declarations the meta-flows read, validated before any action.

prefect.yaml keeps Prefect's own shape: a `deployments` list whose entries carry `name`,
`entrypoint`, `description`, `parameters`, `schedules`, `tags` and `work_pool.job_variables`.
Entries whose entrypoint lies in `meta_flows/` are the meta-flows' own deployments, applied on
the deployer pool. Entries under `flows/<folder>/` are the flows deployed to ECS, one per folder.
"""

from __future__ import annotations

import ast
import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meta_flows.errors import FlowSpecError

FLOW_FOLDER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PREFECT_YAML = "prefect.yaml"


class DeploymentSpec(BaseModel):
    """One `deployments` entry of prefect.yaml."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    entrypoint: str
    description: str | None = None
    version: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[dict[str, Any]] | None = None
    tags: list[str] = Field(default_factory=list)
    work_pool: dict[str, Any] = Field(default_factory=dict)

    @property
    def job_variables(self) -> dict[str, Any]:
        return dict(self.work_pool.get("job_variables") or {})

    @property
    def entrypoint_path(self) -> str:
        return self.entrypoint.rpartition(":")[0]

    @property
    def function_name(self) -> str:
        return self.entrypoint.rpartition(":")[2]


class FlowSource(BaseModel):
    """Flow name and function of a flow file, read from its syntax tree without importing it."""

    flow_name: str
    function_name: str


@functools.lru_cache(maxsize=8)
def parse_yaml(text: str) -> Any:
    """Parse YAML text, with libyaml when PyYAML has it. The result is shared, so copy it before changing it.

    deploy-all-flows reads prefect.yaml twice per flow, and a pure-Python parse of a file with
    many entries costs milliseconds of CPU each time, so each text is parsed once.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def yaml_error(text: str, error: yaml.YAMLError) -> yaml.YAMLError:
    """Return the error of the pure-Python parser for `text`, which shows the failing line; else `error`.

    libyaml's messages leave out the source line and some details, so a file that fails is
    parsed again, once, for the message.
    """
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as detailed:
        return detailed
    return error


def load_deployment_specs(project_root: Path) -> list[DeploymentSpec]:
    """Read and validate every deployment entry of prefect.yaml."""
    path = project_root / PREFECT_YAML
    try:
        document = copy.deepcopy(parse_yaml(path.read_text()))
    except FileNotFoundError as exc:
        raise FlowSpecError(f"{path} not found: set META_FLOWS_PROJECT_ROOT to the checkout") from exc
    except yaml.YAMLError as exc:
        raise FlowSpecError(f"{path} is not valid YAML: {yaml_error(path.read_text(), exc)}") from exc

    entries = (document or {}).get("deployments") or []
    specs = []
    for index, entry in enumerate(entries):
        try:
            spec = DeploymentSpec.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise FlowSpecError(f"{path}: deployments[{index}] is invalid: {problems}") from None
        if ":" not in spec.entrypoint:
            raise FlowSpecError(
                f"{path}: deployments[{index}] entrypoint {spec.entrypoint!r} must read <path to file>:<flow function>"
            )
        specs.append(spec)
    return specs


def validate_flow_folder(project_root: Path, folder: str) -> Path:
    """Check that `folder` names a folder of flows/ and nothing else; return its path."""
    if not FLOW_FOLDER_PATTERN.match(folder):
        raise FlowSpecError(
            f"flow {folder!r} is not a flow folder name: use lower-case letters, digits, '-' and "
            "'_' (it becomes part of the ECR repository name)"
        )
    path = project_root / "flows" / folder
    if not path.is_dir():
        available = ", ".join(list_flow_folders(project_root)) or "none"
        raise FlowSpecError(f"flow folder flows/{folder} not found; available flows: {available}")
    return path


def list_flow_folders(project_root: Path) -> list[str]:
    """Return the folders of flows/ that hold a flow."""
    flows = project_root / "flows"
    if not flows.is_dir():
        return []
    return sorted(p.name for p in flows.iterdir() if p.is_dir() and FLOW_FOLDER_PATTERN.match(p.name))


def find_flow_spec(project_root: Path, folder: str) -> DeploymentSpec:
    """Return the prefect.yaml entry of the flow in flows/<folder>/."""
    validate_flow_folder(project_root, folder)
    prefix = f"flows/{folder}/"
    matches = [s for s in load_deployment_specs(project_root) if s.entrypoint.startswith(prefix)]
    if not matches:
        raise FlowSpecError(
            f"prefect.yaml has no deployment whose entrypoint is in {prefix}: add an entry with "
            f"entrypoint: {prefix}<file>.py:<flow function>"
        )
    if len(matches) > 1:
        names = ", ".join(s.name for s in matches)
        raise FlowSpecError(f"prefect.yaml has several deployments for {prefix} ({names}): keep one")
    return matches[0]


def meta_flow_specs(project_root: Path) -> list[DeploymentSpec]:
    """Return the prefect.yaml entries of the meta-flows' own deployments."""
    return [s for s in load_deployment_specs(project_root) if s.entrypoint.startswith("meta_flows/")]


def read_flow_source(project_root: Path, spec: DeploymentSpec) -> FlowSource:
    """Find the flow function and its flow name by parsing the file, without importing it."""
    path = project_root / spec.entrypoint_path
    try:
        source = path.read_text()
    except FileNotFoundError as exc:
        raise FlowSpecError(f"entrypoint file {spec.entrypoint_path} not found") from exc
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise FlowSpecError(
            f"{spec.entrypoint_path} line {exc.lineno}: syntax error: {exc.msg}; fix the flow file"
        ) from exc

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == spec.function_name:
            return FlowSource(flow_name=_flow_name_of(node), function_name=node.name)
    raise FlowSpecError(
        f"{spec.entrypoint_path} has no function {spec.function_name!r}: fix the entrypoint in "
        "prefect.yaml or the function name"
    )


def _flow_name_of(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
        if name != "flow":
            continue
        if isinstance(decorator, ast.Call):
            for keyword in decorator.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
        # Prefect's default flow name is the function name with '_' replaced by '-'.
        return function.name.replace("_", "-")
    raise FlowSpecError(f"function {function.name!r} is not decorated with @flow")
