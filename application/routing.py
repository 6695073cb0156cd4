"""Choosing deployments of a model group: weighted shuffle, then the rest in turn."""
from __future__ import annotations

import random
from typing import Any, Sequence

from application.config import Deployment, GatewayConfig
from domain.errors import ModelNotFoundError


class ShuffleRouter:
    """LiteLLM's `simple-shuffle`: pick by `weight`, else `rpm`, else `tpm`, else evenly;
    the others follow as failover candidates."""

    def __init__(self, config: GatewayConfig) -> None:
        self._groups: dict[str, list[Deployment]] = {}
        for deployment in config.deployments:
            self._groups.setdefault(deployment.model_name, []).append(deployment)

    def plan(self, model_group: str, body: dict[str, Any]) -> Sequence[Deployment]:
        group = self._groups.get(model_group)
        if not group:
            raise ModelNotFoundError(
                f"The model '{model_group}' does not exist or you do not have access to it.",
                param="model",
            )
        if len(group) == 1:
            return group
        first = random.choices(group, weights=[_weight(d) for d in group])[0]
        return [first, *(d for d in group if d is not first)]

    def on_success(self, deployment: Deployment, latency_ms: float) -> None:
        return None

    def on_failure(self, deployment: Deployment, error: Exception) -> None:
        return None


def _weight(deployment: Deployment) -> float:
    for value in (deployment.weight, deployment.rpm, deployment.tpm):
        if value:
            return float(value)
    return 1.0
