"""Planning a work pool against what the server holds, with a stub in place of the Prefect client."""

from types import SimpleNamespace
from typing import Any

import pytest

from meta_flows.errors import ForeignResourceError
from meta_flows.pools import MANAGED_MARKER
from meta_flows.prefect_plan import plan_pool


class StubClient:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def read_work_pool(self, name: str) -> Any:
        return self.pool


@pytest.mark.parametrize("description", ["a team's own pool", f"Runs flows. {MANAGED_MARKER}"])
def test_pool_of_wrong_type_is_rejected(description: str) -> None:
    pool = SimpleNamespace(type="process", description=description, base_job_template={})

    with pytest.raises(ForeignResourceError) as error:
        plan_pool(StubClient(pool), "ecs-pool", "ecs", dict, "Runs flows.")  # type: ignore[arg-type]

    assert "work pool 'ecs-pool' has type 'process', not 'ecs': choose another pool name" in str(error.value)


def test_foreign_pool_of_right_type_is_used_as_is() -> None:
    pool = SimpleNamespace(type="ecs", description="a team's own pool", base_job_template={"x": 1})

    step = plan_pool(StubClient(pool), "ecs-pool", "ecs", dict, "Runs flows.")  # type: ignore[arg-type]

    assert step.action == "foreign"
