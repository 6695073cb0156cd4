"""`moneta config check`: what a config file will serve, read without starting or migrating
anything: each model group, its deployments, and the price each is billed at, with its source."""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from moneta.application.config import Deployment, GatewayConfig
from moneta.application.ports import PriceBook
from moneta.domain.usage import Usage

_MILLION = 1_000_000


def served(config: GatewayConfig, prices: PriceBook, at: datetime | None = None) -> list[str]:
    """One line per model group, then one per deployment."""
    at = at or datetime.now(UTC)
    groups: dict[str, list[Deployment]] = {}
    for deployment in config.deployments:
        groups.setdefault(deployment.model_name, []).append(deployment)
    lines = []
    for name, deployments in groups.items():
        lines.append(f"{name}: {len(deployments)} deployment{'s' if len(deployments) > 1 else ''}")
        lines.extend(f"  {d.id}  {d.label}  {_price(d, prices, at)}" for d in deployments)
    return lines


def _price(deployment: Deployment, prices: PriceBook, at: datetime) -> str:
    """Its price (the config's deployments are all priced: bootstrap takes the others out)."""
    if deployment.is_pattern and deployment.price is None:
        return "priced as each model it serves, when called"
    per_input = prices.quote(deployment, Usage(prompt_tokens=_MILLION), at)
    per_output = prices.quote(deployment, Usage(completion_tokens=_MILLION), at)
    per_minute = prices.quote(deployment, Usage(audio_seconds=60), at)
    text = f"${_amount(per_input.cost)} input, ${_amount(per_output.cost)} output per 1M tokens ({per_input.source})"
    if per_minute.cost:
        text += f", ${_amount(per_minute.cost)} per minute of audio ({per_minute.source})"
    return text


def _amount(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.0001")).normalize(), "f")
