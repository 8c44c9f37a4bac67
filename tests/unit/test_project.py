"""prefect.yaml and flows/: specs, flow sources read without imports, job variables, schedules."""

from pathlib import Path
from uuid import uuid4

import pytest

from blocks.ecs_task_settings import EcsTaskSettings
from meta_flows.deployments import build_desired, normalise_schedule
from meta_flows.errors import FlowSpecError
from meta_flows.pool_template import build_base_job_template, validate_job_variables
from meta_flows.project import find_flow_spec, load_deployment_specs, read_flow_source, validate_flow_folder
from meta_flows.settings import PROJECT_ROOT

PREFECT_YAML = """
deployments:
  - name: demo
    entrypoint: flows/demo/flow.py:main
    parameters: {count: 3}
"""

FLOW_SOURCE = '''
import package_that_is_not_installed
from prefect import flow


@flow(name="demo-flow")
def main(count: int = 1, label: str = "x", ratio: float = 0.5, flags: list[str] = []) -> None:
    """Demo.

    Args:
        count: How many.
    """
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "prefect.yaml").write_text(PREFECT_YAML)
    (tmp_path / "flows" / "demo").mkdir(parents=True)
    (tmp_path / "flows" / "demo" / "flow.py").write_text(FLOW_SOURCE)
    return tmp_path


def desired_for(project: Path) -> object:
    spec = find_flow_spec(project, "demo")
    return build_desired(
        project,
        spec,
        entrypoint="flow.py:main",
        work_pool_name="pool",
        work_queue_name="default",
        working_directory="/opt/prefect/flows/demo",
        job_variables={"image": "r/x:1"},
        version="1",
    )


def test_schema_read_without_importing_flow_dependencies(project: Path) -> None:
    desired = desired_for(project)

    properties = desired.parameter_openapi_schema["properties"]  # type: ignore[attr-defined]
    assert properties["count"]["type"] == "integer"
    assert properties["count"]["description"] == "How many."
    assert properties["label"]["default"] == "x"
    assert properties["ratio"]["type"] == "number"
    assert properties["flags"]["type"] == "array"
    assert desired.flow_name == "demo-flow"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("../etc", "is not a flow folder name"),
        ("Demo", "is not a flow folder name"),
        ("missing", "flow folder flows/missing not found; available flows: demo"),
    ],
)
def test_flow_folder_invalid_names_the_problem(project: Path, folder: str, expected: str) -> None:
    with pytest.raises(FlowSpecError) as error:
        validate_flow_folder(project, folder)
    assert expected in str(error.value)


def test_flow_without_entry_shows_fix(project: Path) -> None:
    (project / "flows" / "other").mkdir()

    with pytest.raises(FlowSpecError) as error:
        find_flow_spec(project, "other")

    assert "entrypoint: flows/other/<file>.py:<flow function>" in str(error.value)


def test_entrypoint_with_missing_function_is_rejected(project: Path) -> None:
    (project / "prefect.yaml").write_text(PREFECT_YAML.replace(":main", ":absent"))
    spec = find_flow_spec(project, "demo")

    with pytest.raises(FlowSpecError) as error:
        read_flow_source(project, spec)

    assert "has no function 'absent'" in str(error.value)


def test_flow_file_with_syntax_error_names_the_line(project: Path) -> None:
    (project / "flows" / "demo" / "flow.py").write_text("from prefect import flow\n\ndef main(:\n")
    spec = find_flow_spec(project, "demo")

    with pytest.raises(FlowSpecError) as error:
        read_flow_source(project, spec)

    assert "flows/demo/flow.py line 3: syntax error" in str(error.value)


def test_unknown_parameter_in_prefect_yaml_is_rejected(project: Path) -> None:
    (project / "prefect.yaml").write_text(PREFECT_YAML.replace("count: 3", "cuont: 3"))

    with pytest.raises(FlowSpecError) as error:
        desired_for(project)

    assert "sets parameters the flow does not take: cuont" in str(error.value)


def test_invalid_prefect_yaml_shows_failing_line(project: Path) -> None:
    (project / "prefect.yaml").write_text(PREFECT_YAML.replace("name: demo", "name: demo: x"))

    with pytest.raises(FlowSpecError) as error:
        find_flow_spec(project, "demo")

    message = str(error.value)
    assert "prefect.yaml is not valid YAML: mapping values are not allowed here" in message
    assert "line 3, column 15" in message
    assert "  - name: demo: x\n" in message


def test_prefect_yaml_change_by_caller_not_cached(project: Path) -> None:
    first = load_deployment_specs(project)
    first[0].parameters["count"] = 99
    first[0].tags.append("changed")

    again = load_deployment_specs(project)

    assert again[0].parameters == {"count": 3}
    assert again[0].tags == []


def test_unknown_prefect_yaml_key_is_rejected(project: Path) -> None:
    (project / "prefect.yaml").write_text(PREFECT_YAML + "    schedule: daily\n")

    with pytest.raises(FlowSpecError) as error:
        find_flow_spec(project, "demo")

    assert "deployments[0] is invalid: schedule" in str(error.value)


@pytest.mark.parametrize(
    ("job_variables", "expected"),
    [
        ({"env.FOO": "1"}, "contain '.'"),
        ({"image": "x"}, "'image' is set by build-and-push-image"),
        ({"family": "x"}, "'family' is set by register-deployment"),
        ({"cpus": 1}, "unknown job variables ['cpus']"),
    ],
)
def test_job_variables_invalid_are_rejected(job_variables: dict[str, object], expected: str) -> None:
    template = build_base_job_template(
        EcsTaskSettings(cluster="c", execution_role_arn="arn:aws:iam::123456789012:role/e"), uuid4()
    )
    with pytest.raises(FlowSpecError) as error:
        validate_job_variables("demo", job_variables, template)
    assert expected in str(error.value)


def test_pool_template_carries_settings_as_defaults() -> None:
    credentials_id = uuid4()
    settings = EcsTaskSettings(
        cluster="flows",
        execution_role_arn="arn:aws:iam::123456789012:role/e",
        cpu=512,
        memory=1024,
        container_memory=512,
        subnets=["subnet-1"],
        security_groups=["sg-1"],
    )

    template = build_base_job_template(settings, credentials_id)

    properties = template["variables"]["properties"]
    assert properties["cluster"]["default"] == "flows"
    assert properties["cpu"]["default"] == 512
    assert properties["aws_credentials"]["default"] == {"$ref": {"block_document_id": str(credentials_id)}}
    assert properties["network_configuration"]["default"]["subnets"] == ["subnet-1"]
    container = template["job_configuration"]["task_definition"]["containerDefinitions"][0]
    assert container["memory"] == "{{ container_memory }}"


def test_schedule_cron_becomes_server_shape() -> None:
    schedule = normalise_schedule("demo", {"cron": "0 6 * * *", "active": False})

    assert schedule["schedule"]["cron"] == "0 6 * * *"
    assert schedule["active"] is False


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"cron": "not a cron"}, "schedule of 'demo' is invalid"),
        ({"every": "1h"}, "unknown keys ['every']"),
        ({"timezone": "UTC"}, "needs one of cron, interval or rrule"),
    ],
)
def test_schedule_invalid_is_rejected(config: dict[str, object], expected: str) -> None:
    with pytest.raises(FlowSpecError) as error:
        normalise_schedule("demo", config)
    assert expected in str(error.value)


def test_repository_prefect_yaml_is_valid() -> None:
    for folder in ("hello", "report"):
        spec = find_flow_spec(PROJECT_ROOT, folder)
        assert read_flow_source(PROJECT_ROOT, spec).function_name == spec.function_name
