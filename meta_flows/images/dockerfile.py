"""The Dockerfile of a flow image, when the flow folder brings none of its own."""

from __future__ import annotations

# Paths inside the build context that the product writes; the flow's files go under APP_DIR so
# that `COPY` of the code never picks up the CA bundle or the Dockerfile.
APP_DIR = "app"
CA_BUNDLE_PATH = ".meta-flows/ca-bundle.crt"
IMAGE_CA_BUNDLE = "/usr/local/share/meta-flows/ca-bundle.crt"
FLOWS_HOME = "/opt/prefect/flows"


def flow_workdir(folder: str) -> str:
    """Return the folder the flow's code lives in inside the image."""
    return f"{FLOWS_HOME}/{folder}"


def render_dockerfile(base_image: str, folder: str, with_ca_bundle: bool) -> str:
    """Render a Dockerfile that installs the requirements in one layer and the code in the next.

    The requirements layer comes first, so a code-only change rebuilds one thin layer.
    """
    lines = [f"FROM {base_image}"]
    if with_ca_bundle:
        # Public certificates only: pip inside the build trusts an intercepting proxy with them.
        lines += [
            f"COPY {CA_BUNDLE_PATH} {IMAGE_CA_BUNDLE}",
            f"ENV PIP_CERT={IMAGE_CA_BUNDLE} SSL_CERT_FILE={IMAGE_CA_BUNDLE} REQUESTS_CA_BUNDLE={IMAGE_CA_BUNDLE}",
        ]
    lines += [
        "ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1",
        f"WORKDIR {flow_workdir(folder)}",
        f"COPY {APP_DIR}/requirements.txt /tmp/meta-flows/requirements.txt",
        "RUN python -m pip install -r /tmp/meta-flows/requirements.txt",
        f"COPY {APP_DIR}/ ./",
    ]
    return "\n".join(lines) + "\n"
