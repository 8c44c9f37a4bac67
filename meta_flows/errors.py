"""Errors the meta-flows raise on purpose; each message states what failed, why, and what to do next."""


class MetaFlowsError(Exception):
    """Base class of the errors a user is meant to read and act on."""


class SettingsError(MetaFlowsError):
    """A setting is missing or invalid; raised before any side effect."""


class FlowSpecError(MetaFlowsError):
    """A flow folder or its prefect.yaml entry is missing or invalid."""


class AwsError(MetaFlowsError):
    """An AWS call failed; the message carries the error code and guidance."""


class RegistryError(MetaFlowsError):
    """The container registry rejected or failed a request."""


class ImageBuildError(MetaFlowsError):
    """The Docker build failed; the message shows the failing build output."""


class DockerUnavailableError(MetaFlowsError):
    """The Docker engine cannot be reached."""


class PrefectApiError(MetaFlowsError):
    """The Prefect API cannot be reached or rejected a request."""


class ForeignResourceError(MetaFlowsError):
    """A resource exists that this project did not create and cannot use as it is."""


class JobTemplateError(MetaFlowsError):
    """A work pool's base job template uses a placeholder it does not define, or defines one it never uses."""
