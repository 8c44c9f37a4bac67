"""Known AWS error codes mapped to what the user should do, in one place."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from meta_flows.aws.retries import ECS_FAMILY_CONTENTION_MESSAGE, MAX_ATTEMPTS, NETWORK_ERRORS, THROTTLING_CODES
from meta_flows.errors import AwsError

RETRIED_GUIDANCE = (
    f"still failing after {MAX_ATTEMPTS} attempts with backoff: wait a minute and run again; "
    "nothing done so far is lost, and a rerun skips what is in place"
)

GUIDANCE: dict[str, str] = {
    "AccessDenied": "the caller lacks this permission: grant it in the caller's IAM policy",
    "AccessDeniedException": "the caller lacks this permission: grant it in the caller's IAM policy",
    "UnrecognizedClientException": "the access key is not valid: check the credentials in use",
    "InvalidClientTokenId": "the access key is not valid: check the credentials in use",
    "ExpiredToken": "the session token expired: refresh the credentials (aws sso login, or re-assume the role)",
    "ExpiredTokenException": "the session token expired: refresh the credentials",
    "ClusterNotFoundException": "the cluster does not exist in this region: check META_FLOWS_CLUSTER and AWS_REGION",
    "RepositoryNotFoundException": "the repository does not exist: run `python -m meta_flows.bootstrap`",
    "InvalidParameterException": "AWS rejected a parameter: check the value named in the message",
    "LimitExceededException": "an account quota is reached: raise it in Service Quotas or remove unused resources",
    "NoSuchEntity": "the IAM entity does not exist: check the role ARN settings",
}


def describe_client_error(action: str, exc: ClientError) -> AwsError:
    """Turn a botocore ClientError into an AwsError that carries the code and guidance."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", "")).strip()
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    contention = code == "ClientException" and ECS_FAMILY_CONTENTION_MESSAGE in message
    if code in THROTTLING_CODES or status >= 500 or contention:
        guidance = RETRIED_GUIDANCE
    else:
        guidance = GUIDANCE.get(code, "see the AWS error message above")
    return AwsError(f"{action} failed with {code}: {message} ({guidance})")


def describe_aws_failure(action: str, exc: Exception) -> AwsError:
    """Turn any botocore failure into an AwsError with guidance."""
    if isinstance(exc, ClientError):
        return describe_client_error(action, exc)
    if isinstance(exc, NoCredentialsError):
        return AwsError(
            f"{action} failed: no AWS credentials found. Set AWS_PROFILE, run on a machine with a role, "
            "or set PREFECT_AWS_ACCESS_KEY_ID and PREFECT_AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, NETWORK_ERRORS):
        return AwsError(f"{action} failed: {exc}; {RETRIED_GUIDANCE}. Check AWS_ENDPOINT_URL and the network")
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{action} failed: {exc}. Check AWS_REGION, AWS_ENDPOINT_URL and the network")
    raise TypeError(f"not an AWS failure: {type(exc).__name__}")
