"""The opt-in PostgreSQL of the local stack: its settings and the Prefect server's database URL."""

from __future__ import annotations

import pytest

from devstack import postgres, services
from devstack.config import StackPaths


def test_database_defaults_to_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(postgres.DATABASE_VARIABLE, raising=False)

    assert postgres.prefect_database() == "sqlite"
    assert [s.key for s in services.services()] == ["registry", "moto", "prefect-server"]


def test_database_invalid_value_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(postgres.DATABASE_VARIABLE, "mysql")

    with pytest.raises(ValueError) as error:
        postgres.prefect_database()

    assert "DEVSTACK_PREFECT_DB='mysql' is invalid: use sqlite (the default) or postgres" in str(error.value)


def test_postgres_adds_service_and_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(postgres.DATABASE_VARIABLE, "postgres")
    monkeypatch.setenv(postgres.PORT_VARIABLE, "5433")

    keys = [s.key for s in services.services()]
    env = services.prefect_env(StackPaths(tmp_path))

    assert keys == ["postgres", "registry", "moto", "prefect-server"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == "postgresql+asyncpg://postgres@127.0.0.1:5433/postgres"


@pytest.mark.parametrize("port", ["80", "abc", "70000"])
def test_postgres_port_invalid_rejected(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv(postgres.PORT_VARIABLE, port)

    with pytest.raises(ValueError) as error:
        postgres.postgres_port()

    assert "use a port number from 1024 to 65535" in str(error.value)


def test_server_argv_listens_on_loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(postgres, "binary", lambda name: f"/usr/lib/postgresql/15/bin/{name}")

    argv = postgres.server_argv(tmp_path, 5433)

    assert "listen_addresses=127.0.0.1" in argv
    assert argv[argv.index("-p") + 1] == "5433"
