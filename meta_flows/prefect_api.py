"""Checks of the Prefect API, made before anything is written to it."""

from __future__ import annotations

from prefect.client.orchestration import SyncPrefectClient
from prefect.settings import get_current_settings

from meta_flows.errors import PrefectApiError


def require_api_url() -> str:
    """Return PREFECT_API_URL, or raise PrefectApiError when it is unset.

    Call it before creating a client: unset, Prefect starts a throwaway server on its own, and
    every write would be lost with it.
    """
    url = get_current_settings().api.url
    if not url:
        raise PrefectApiError(
            "PREFECT_API_URL is not set: set it to the Prefect server's API, e.g. "
            "http://127.0.0.1:4200/api, or to the Prefect Cloud workspace URL"
        )
    return str(url)


def check_prefect_api(client: SyncPrefectClient) -> None:
    """Raise PrefectApiError naming PREFECT_API_URL when the API fails its health check."""
    url = require_api_url()
    failure = client.api_healthcheck()
    if failure is not None:
        raise PrefectApiError(
            f"Prefect API not reachable at PREFECT_API_URL={url} ({failure}): start the server or "
            "set PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud)"
        )
