"""Routing across the deployments of a model group: strategies, cooldowns, health events."""
from moneta.application.routing.health_journal import HealthJournal
from moneta.application.routing.router import DeploymentRouter, Route
from moneta.application.routing.settings import RouterSettings

__all__ = ["DeploymentRouter", "HealthJournal", "Route", "RouterSettings"]
