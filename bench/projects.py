"""Generated projects: the same small flows laid out for the meta-flows and for `prefect deploy`.

Both layouts build equivalent images: the same base image, then the requirements in one layer,
`pip install` in the next, and the code last. Only the tagging and the deploy path differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from meta_flows.images.dockerfile import render_dockerfile


@dataclass(frozen=True)
class Project:
    """A generated project folder and the flow folders in it."""

    root: Path
    flows: list[str]


def flow_source(flow_name: str, marker: str) -> str:
    """Return a small flow file; `marker` makes its content, and so its layers, unique."""
    return "\n".join(
        [
            "from prefect import flow",
            "",
            f"# {marker}",
            f'@flow(name="{flow_name}")',
            'def main(greeting: str = "hello") -> str:',
            "    return greeting",
            "",
        ]
    )


def write_flow(folder: Path, flow_name: str, marker: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.py").write_text(flow_source(flow_name, marker))
    # A comment in the requirements gives each cold run new requirement layers as well.
    (folder / "requirements.txt").write_text(f"# {marker}\n")


def deployment_entry(folder: str) -> dict[str, object]:
    return {"name": "default", "entrypoint": f"flows/{folder}/flow.py:main", "tags": ["bench"]}


def write_ours(root: Path, flows: dict[str, str], marker: str) -> Project:
    """Write a meta-flows project: flows/<folder>/ plus prefect.yaml; `flows` maps folder to flow name."""
    for folder, flow_name in flows.items():
        write_flow(root / "flows" / folder, flow_name, marker)
    root.mkdir(parents=True, exist_ok=True)
    (root / "flows").mkdir(exist_ok=True)
    document = {"name": "bench-ours", "deployments": [deployment_entry(f) for f in flows]}
    (root / "prefect.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return Project(root=root, flows=list(flows))


def standard_dockerfile(base_image: str, folder: str) -> str:
    """Return our Dockerfile with its COPY sources moved to the project-root context."""
    return render_dockerfile(base_image, folder, False).replace("app/", f"flows/{folder}/")


def standard_entry(folder: str, registry: str, prefix: str, pool: str, credentials_block: str) -> dict[str, object]:
    """Return a prefect.yaml deployment with prefect-docker's build and push steps."""
    return {
        "name": "default",
        "entrypoint": f"flows/{folder}/flow.py:main",
        "tags": ["bench"],
        "build": [
            {
                "prefect_docker.deployments.steps.build_docker_image": {
                    "id": "build-image",
                    "requires": "prefect-docker",
                    "image_name": f"{registry}/{prefix}/{folder}",
                    "dockerfile": f"flows/{folder}/Dockerfile",
                    # prefect-docker pulls the base image by default. The base image is local,
                    # and no public registry may be contacted.
                    "pull": False,
                    "network_mode": "host",
                }
            }
        ],
        "push": [
            {
                "prefect_docker.deployments.steps.push_docker_image": {
                    "requires": "prefect-docker",
                    "image_name": "{{ build-image.image_name }}",
                    "tag": "{{ build-image.tag }}",
                    "credentials": "{{ prefect.blocks.docker-registry-credentials." + credentials_block + " }}",
                }
            }
        ],
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": f"/opt/prefect/flows/{folder}"}}],
        "work_pool": {"name": pool, "job_variables": {"image": "{{ build-image.image }}"}},
    }


def write_standard(
    root: Path,
    flows: dict[str, str],
    marker: str,
    *,
    base_image: str,
    registry: str,
    prefix: str,
    pool: str,
    credentials_block: str,
) -> Project:
    """Write the same flows as a `prefect deploy` project with one Dockerfile per flow."""
    for folder, flow_name in flows.items():
        write_flow(root / "flows" / folder, flow_name, marker)
        (root / "flows" / folder / "Dockerfile").write_text(standard_dockerfile(base_image, folder))
    entries = [standard_entry(f, registry, prefix, pool, credentials_block) for f in flows]
    document = {"name": "bench-standard", "prefect-version": "3.9.1", "deployments": entries}
    (root / "prefect.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return Project(root=root, flows=list(flows))


def touch_code(project: Project, marker: str) -> None:
    """Change the code of every flow, and nothing else, as a code-only change does."""
    for folder in project.flows:
        path = project.root / "flows" / folder / "flow.py"
        path.write_text(path.read_text() + f"# {marker}\n")
