"""Declarative schedules: which writes a redeploy makes, given prefect.yaml and the server's schedules."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import pytest

from meta_flows.deployments import normalise_schedules
from meta_flows.errors import FlowSpecError
from meta_flows.schedules import plan_schedules


@dataclass
class FakeCron:
    cron: str

    def model_dump_json(self) -> str:
        return json.dumps({"cron": self.cron, "timezone": "UTC", "day_or": True})


@dataclass
class ServerSchedule:
    cron: str
    active: bool
    slug: str | None
    id: UUID = field(default_factory=uuid4)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def schedule(self) -> FakeCron:
        return FakeCron(self.cron)


def desired(*configs: dict[str, Any]) -> list[dict[str, Any]]:
    schedules = normalise_schedules("daily", list(configs))
    assert schedules is not None
    return schedules


def test_absent_schedules_leave_server_alone() -> None:
    assert plan_schedules(None, [ServerSchedule("0 6 * * *", True, "schedule-1")]) == []


def test_empty_list_deletes_every_schedule() -> None:
    existing = [ServerSchedule("0 6 * * *", True, "a"), ServerSchedule("0 7 * * *", False, None)]

    operations = plan_schedules(desired(), existing)

    assert [op.action for op in operations] == ["delete", "delete"]
    assert {op.schedule_id for op in operations} == {existing[0].id, existing[1].id}


def test_paused_in_ui_stays_paused_without_active() -> None:
    existing = [ServerSchedule("0 6 * * *", False, "schedule-1")]

    assert plan_schedules(desired({"cron": "0 6 * * *"}), existing) == []


def test_explicit_active_overrides_ui_pause() -> None:
    existing = [ServerSchedule("0 6 * * *", False, "schedule-1")]

    operations = plan_schedules(desired({"cron": "0 6 * * *", "active": True}), existing)

    assert len(operations) == 1
    assert operations[0].action == "update"
    assert operations[0].active is True
    assert operations[0].schedule_id == existing[0].id


def test_changed_cron_updates_in_place_keeping_pause() -> None:
    existing = [ServerSchedule("0 6 * * *", False, "schedule-1")]

    operations = plan_schedules(desired({"cron": "30 6 * * *"}), existing)

    assert [op.action for op in operations] == ["update"]
    assert operations[0].schedule_id == existing[0].id
    assert operations[0].active is False
    assert operations[0].schedule == {"cron": "30 6 * * *", "timezone": "UTC", "day_or": True}


def test_new_schedule_without_active_starts_active() -> None:
    operations = plan_schedules(desired({"cron": "0 6 * * *"}), [])

    assert [op.action for op in operations] == ["create"]
    assert operations[0].active is True
    assert operations[0].slug == "schedule-1"


def test_unslugged_server_schedule_matched_by_position() -> None:
    existing = [ServerSchedule("0 6 * * *", True, None)]

    operations = plan_schedules(desired({"cron": "0 6 * * *"}), existing)

    assert [op.action for op in operations] == ["update"]
    assert operations[0].schedule_id == existing[0].id
    assert operations[0].slug == "schedule-1"


def test_duplicate_slugs_rejected() -> None:
    with pytest.raises(FlowSpecError, match="repeat the slug"):
        normalise_schedules("daily", [{"cron": "0 6 * * *", "slug": "x"}, {"cron": "0 7 * * *", "slug": "x"}])
