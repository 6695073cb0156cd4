"""Routing across the deployments of a model group: strategies, cooldowns, health events."""
from application.routing.health_journal import HealthJournal
from application.routing.router import DeploymentRouter, Route
from application.routing.settings import RouterSettings

__all__ = ["DeploymentRouter", "HealthJournal", "Route", "RouterSettings"]
