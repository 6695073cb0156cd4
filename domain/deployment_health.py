"""One event stream per deployment: when it was taken out of rotation, and when it came back.

Only changes of state are events (a cooldown starting, a recovery), never single requests:
those are in the requests' own streams (Completed, AttemptFailed).
"""
from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

_NAMESPACE = UUID("5b0e6f0e-3c55-4a57-9f55-6d6f6e657461")


def health_id(deployment_id: str) -> UUID:
    return uuid5(_NAMESPACE, deployment_id)


class DeploymentHealth(Aggregate):
    class Registered(Aggregate.Created):
        deployment_id: str
        model_group: str

    class CooledDown(Aggregate.Event):
        """Automatic (after failures), or manual: then `requested_by` names who asked (an actor,
        `master_key`, `user:<id>`, or the library caller's name) and there is no failure to
        name (`status_code` 0, `error_type` "manual")."""

        class_version = 2
        until: datetime
        status_code: int
        error_type: str
        reason: str
        requested_by: str = ""

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state["requested_by"] = ""

        def apply(self, aggregate: "DeploymentHealth") -> None:
            aggregate.cooling_until = self.until
            aggregate.cooldowns += 1

    class Recovered(Aggregate.Event):
        cooled_until: datetime

        def apply(self, aggregate: "DeploymentHealth") -> None:
            aggregate.cooling_until = None

    @classmethod
    def register(cls, deployment_id: str, model_group: str) -> "DeploymentHealth":
        return cls._create(cls.Registered, id=health_id(deployment_id), deployment_id=deployment_id,
                           model_group=model_group)

    def __init__(self, deployment_id: str, model_group: str) -> None:
        self.deployment_id = deployment_id
        self.model_group = model_group
        self.cooling_until: datetime | None = None
        self.cooldowns = 0

    def cool_down(self, *, until: datetime, status_code: int, error_type: str, reason: str,
                  requested_by: str = "") -> None:
        self.trigger_event(self.CooledDown, until=until, status_code=status_code, error_type=error_type,
                           reason=reason, requested_by=requested_by)

    def recover(self) -> bool:
        """Records the return to rotation; False (no event) when it was not cooling down."""
        if self.cooling_until is None:
            return False
        self.trigger_event(self.Recovered, cooled_until=self.cooling_until)
        return True
