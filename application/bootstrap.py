"""The composition root: the one place that reads the environment and wires adapters to ports.

The proxy and the library facade both build their object graph here, so that
`from application import completion` works without the web framework.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cache
from typing import Mapping

from moneta.application.config import Deployment, GatewayConfig
from moneta.application.gateway import Gateway
from moneta.application.ports import PriceBook, Tokenizer
from moneta.application.routing import DeploymentRouter, HealthJournal


@dataclass
class Container:
    config: GatewayConfig
    gateway: Gateway
    ledger: object  # infrastructure.group_commit.GroupCommitLedger
    location: object  # infrastructure.event_store.StoreLocation
    providers: object
    prices: object
    tokenizer: object
    environ: Mapping[str, str]

    def gateway_for(self, deployment: Deployment) -> Gateway:
        """A gateway over one ad-hoc deployment (library calls that name `provider/model`)."""
        config = replace(self.config, deployments=(deployment,))
        from moneta.infrastructure.cooldowns_in_process import InProcessCooldownStore
        from moneta.infrastructure.usage_in_process import InProcessUsageMeter

        router = DeploymentRouter(config, InProcessCooldownStore(), InProcessUsageMeter())
        return Gateway(config, router, self.providers, self.ledger, self.prices,  # type: ignore[arg-type]
                       self.tokenizer)  # type: ignore[arg-type]

    def close(self) -> None:
        self.ledger.close()  # type: ignore[attr-defined]
        self.ledger.app.close()  # type: ignore[attr-defined]


def environment() -> dict[str, str]:
    return dict(os.environ)


def load_gateway_config(config_path: str | None, environ: Mapping[str, str]) -> GatewayConfig:
    """The config file if one is named (argument or MONETA_CONFIG), else the embedded default."""
    from moneta.infrastructure.config_loader import load_config, parse_config
    from moneta.infrastructure.default_config import DEFAULT_CONFIG

    path = config_path or environ.get("MONETA_CONFIG")
    return load_config(path, environ) if path else parse_config(DEFAULT_CONFIG, environ)


@cache
def price_book() -> PriceBook:
    """The prices alone, for cost questions that need no ledger (`completion_cost()`)."""
    from moneta.infrastructure.pricing import PriceTable

    return PriceTable()


@cache
def tokenizer() -> Tokenizer:
    """The tokenizer alone, for `token_counter()`."""
    from moneta.infrastructure.tokenizer import TiktokenCounter

    return TiktokenCounter()


def build(config: GatewayConfig, environ: Mapping[str, str] | None = None, *, migrate: bool = False) -> Container:
    from moneta.infrastructure.event_store import StoreLocation
    from moneta.infrastructure.event_store import migrate as migrate_store
    from moneta.infrastructure.group_commit import GroupCommitLedger
    from moneta.infrastructure.pricing import PriceTable
    from moneta.infrastructure.providers.registry import default_providers
    from moneta.infrastructure.tokenizer import TiktokenCounter

    environ = dict(environ if environ is not None else environment())
    location = StoreLocation.from_url(config.database_url)
    if migrate:
        migrate_store(location)
    ledger = GroupCommitLedger(location.open())
    providers = default_providers(environ)
    prices = PriceTable()
    tokenizer = TiktokenCounter()
    gateway = Gateway(config, _router(config, ledger, tokenizer, prices), providers, ledger, prices,  # type: ignore[arg-type]
                      tokenizer)
    return Container(config, gateway, ledger, location, providers, prices, tokenizer, environ)


def _router(config: GatewayConfig, ledger: object, tokenizer: object, prices: object) -> DeploymentRouter:
    """Cooldowns and usage shared through Redis when one is configured, else kept in this process."""
    from moneta.infrastructure.aggregate_reader import EventStoreReader
    from moneta.infrastructure.cooldowns_in_process import InProcessCooldownStore
    from moneta.infrastructure.cooldowns_redis import RedisCooldownStore
    from moneta.infrastructure.usage_in_process import InProcessUsageMeter
    from moneta.infrastructure.usage_redis import RedisUsageMeter

    store = RedisCooldownStore(config.redis_url) if config.redis_url else InProcessCooldownStore()
    usage = RedisUsageMeter(config.redis_url) if config.redis_url else InProcessUsageMeter()
    journal = HealthJournal(EventStoreReader(ledger.app), ledger)  # type: ignore[attr-defined,arg-type]
    return DeploymentRouter(config, store, usage, journal, tokenizer, prices)  # type: ignore[arg-type]
