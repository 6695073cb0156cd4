"""The composition root: the one place that reads the environment and wires adapters to ports.

The proxy (`build_proxy`), the library (`library_container`) and the command line build their
object graph here, and nothing else names an adapter. The library needs no web framework.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from zoneinfo import ZoneInfo
from typing import TYPE_CHECKING, Awaitable, Callable, Iterator, Mapping, Protocol, Sequence

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from moneta.application import abandonment
from moneta.application.alert_delivery import AlertDelivery, BackgroundDelivery
from moneta.application.askii import SYNC_INTERVAL_S as ASKII_SYNC_INTERVAL_S
from moneta.application.askii import AskiiExchange, AskiiSync
from moneta.application.billing_state import BillingDirectory, BillingDirectorySync
from moneta.application.access_directory import Directory
from moneta.application.access_sync import DirectorySync
from moneta.application.authentication import Authenticator
from moneta.application.budget_check import BudgetSettings, Budgets
from moneta.application.budget_store import BudgetStore
from moneta.application.entitlement_check import Entitlements, WalletSpend
from moneta.application.end_users import EndUsers
from moneta.application.library_budgets import LibraryBudgets
from moneta.application.management.context import Context
from moneta.application.config import CacheSettings, Deployment, GatewayConfig, LagoSettings
from moneta.application.gateway import Gateway
from moneta.application.lago_delivery import DeliveryPolicy, LagoBackground, LagoDelivery
from moneta.application.price_check import priced_only
from moneta.application.ports import (
    CooldownStore,
    Ledger,
    LedgerObserver,
    LedgerReader,
    PriceBook,
    ProviderRegistry,
    RealtimeConnector,
    UsageMeter,
)
from moneta.application.rate_limit_check import RateLimits
from moneta.application.reconciliation import Reconciliation
from moneta.application.request_explanation import RequestExplainer
from moneta.application.response_cache import ResponseCache
from moneta.application.rate_limits import LimitStore
from moneta.application.routing import DeploymentRouter, HealthJournal
from moneta.application.tokens import EncodingTokenizer
from moneta.domain.askii import valid_rate
from moneta.domain.budgets import BudgetLine
from moneta.domain.redaction import key_hash
from moneta.infrastructure.access_store import EventStoreAccess
from moneta.infrastructure.budgets_in_process import InProcessBudgetStore
from moneta.infrastructure.aggregate_reader import EventStoreReader
from moneta.infrastructure.event_store import StoreLocation
from moneta.infrastructure.event_store import migrate as migrate_store
from moneta.projections.access import AccessViewReader
from moneta.projections.alert_deliveries import AlertDeliveries
from moneta.projections.budgets import BudgetViewReader
from moneta.projections.end_user_spend import EndUserSpend
from moneta.projections.in_flight import InFlightQueries
from moneta.projections.instances import InstanceHeartbeat
from moneta.projections.lago_deliveries import LagoOutbox
from moneta.projections.queries import SpendQueries
from moneta.projections.runner import DEFAULT_NAME as RUNNER_NAME
from moneta.projections.runner import ProjectionRunner
from moneta.projections import seals
from moneta.projections.view_store import ViewStore

if TYPE_CHECKING:  # prometheus_client is imported only once the metrics are built (see call_metrics)
    from moneta.application.lago_webhooks import LagoWebhookInbox
    from moneta.infrastructure.call_metrics import CallMetrics
    from moneta.infrastructure.lago_sync_schedule import BackgroundLagoSync
    from moneta.projections.billing import BillingViewReader
    from moneta.infrastructure.ledger_scan import LedgerScan


class Probe(Protocol):
    """A readiness check: `GET /health/readiness` shows `{field: label}` when it passes."""

    field: str
    label: str

    async def __call__(self) -> bool: ...


class Background(Protocol):
    """Work that runs beside the requests, started and stopped by the app's lifespan."""

    def start(self) -> None: ...

    async def stop(self) -> None:
        """Stops, and returns once nothing of it still runs."""
        ...


@dataclass
class Container:
    config: GatewayConfig
    location: StoreLocation
    event_store: Application  # the ledger as the library sees it: for reads, and to close it
    ledger: Ledger
    reader: LedgerReader
    providers: ProviderRegistry
    prices: PriceBook
    tokenizer: EncodingTokenizer
    cooldowns: CooldownStore
    usage: UsageMeter
    realtime: RealtimeConnector
    limits: LimitStore = field(default_factory=lambda: _in_process_limits())
    cache: ResponseCache | None = None  # response caching, when the config turns it on
    instance: str = field(default_factory=lambda: instance_name())  # this process, in the ledger's Admitted events
    directory: Directory = field(default_factory=Directory)  # keys, teams, users, ... in memory
    askii: AskiiExchange = field(init=False)  # the askii rates, as this process last read them
    gateway: Gateway = field(init=False)
    authenticator: Authenticator = field(init=False)
    access: Context = field(init=False)  # what the management commands work on
    end_users: EndUsers = field(init=False)
    rate_limits: RateLimits = field(init=False)
    budgets: Budgets = field(init=False)  # none enforced until `count_budgets` (a proxy worker)
    views: SpendQueries | None = None  # the read side's queries, in a proxy worker
    metrics: CallMetrics | None = None  # what `GET /metrics` shows, in a proxy worker
    billing: BillingDirectory | None = None  # Lago's state in memory, in a proxy worker when Lago is configured
    lago_inbox: LagoWebhookInbox | None = None  # `POST /lago/webhooks`, when Lago is configured
    entitlements: Entitlements | None = None  # the entitlement step of admission, when Lago is configured
    background: list[Background] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)  # readiness checks beyond the ledger
    _closing: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.askii = AskiiExchange(self.config.moneta.askii_per_usd, EventStoreAccess(self.event_store))
        self.gateway = self._gateway(self.config)
        self.authenticator = Authenticator(self.directory, self.config.master_key)
        store = EventStoreAccess(self.event_store)
        self.access = Context(store, self.directory, lambda: datetime.now(UTC))
        self.end_users = EndUsers(self.directory, store, self.config.litellm_settings.get("max_end_user_budget_id"))
        self.rate_limits = RateLimits(self.limits, self.directory)
        self.background.append(_Closing(self.limits.close))
        self.budgets = self._budgets(InProcessBudgetStore(_NothingSpent()), BudgetSettings())
        if self.cache is not None:
            self.background.append(_Closing(self.cache.store.close))

    def count_budgets(self, store: BudgetStore) -> None:
        """Enforces the budgets of keys, teams, users, ... and the config's, on `store`'s counters."""
        self.budgets = self._budgets(store, budget_settings(self.config))
        self.background.append(_Closing(store.close))

    def _budgets(self, store: BudgetStore, settings: BudgetSettings) -> Budgets:
        router = self.gateway.router
        return Budgets(store, self.directory, self.prices, self.tokenizer, router.group, settings, router.reachable)

    def read_access_view(self, view: AccessViewReader) -> None:
        """Keys, teams, users, ... from the access view: loaded now, kept fresh in the background,
        looked up there when a key is not known yet, and waited for by management commands."""
        self.authenticator = Authenticator(self.directory, self.config.master_key, view)
        self.access.view = view
        sync = DirectorySync(self.directory, view)
        sync.load()
        self.background.append(sync)

    def keep_askii_rates(self) -> None:
        """The askii rates from the ledger: read now, then again about once a second beside the calls."""
        self.askii.load()
        self.background.append(AskiiSync(self.askii))
    def follow_lago(self, view: BillingViewReader, wallet_spend: WalletSpend) -> None:
        """When Lago is configured: its state from the billing view, loaded now and kept fresh in the
        background, the entitlement check on it, and the inbox of its webhooks."""
        from moneta.application.lago_webhooks import LagoWebhookInbox
        from moneta.infrastructure.lago_client import LagoBillingClient
        from moneta.infrastructure.lago_signatures import LagoSignatures

        lago = self.config.moneta.lago
        if lago is None:
            return
        self.billing = BillingDirectory(lago.max_staleness_s, lago.on_unreachable)
        sync = BillingDirectorySync(self.billing, view)
        sync.load()
        self.background.append(sync)
        self.entitlements = Entitlements(lago, self.billing, wallet_spend, self.askii.settle)
        client = LagoBillingClient(lago)
        self.lago_inbox = LagoWebhookInbox(lago, LagoSignatures(lago.webhook_hmac_key, client.webhook_public_key),
                                           EventStoreReader(self.event_store), saver(self.event_store), self.billing)
        self.background.append(_Closing(client.close))

    def gateway_for(self, deployment: Deployment) -> Gateway:
        """A gateway over one ad-hoc deployment (library calls that name `provider/model`), sharing
        this container's ledger, cooldowns and usage counters."""
        return self._gateway(replace(self.config, deployments=(deployment,)))

    def gateway_over(self, config: GatewayConfig) -> Gateway:
        """A gateway over another config's deployments and router settings (a library `Router`),
        sharing this container's ledger, with cooldowns and usage counts of its own (in Redis
        when that config names one, so routers and proxies on one Redis share them)."""
        cooldowns, usage = _shared_counters(config)
        self.on_close(cooldowns.close)
        return self._gateway(config, cooldowns, usage)

    def _gateway(self, config: GatewayConfig, cooldowns: CooldownStore | None = None,
                 usage: UsageMeter | None = None) -> Gateway:
        journal = HealthJournal(self.reader, self.ledger)
        router = DeploymentRouter(config, cooldowns or self.cooldowns, usage or self.usage, journal, self.tokenizer,
                                  self.prices)
        return Gateway(config, router, self.providers, self.ledger, self.prices, self.tokenizer, self.instance,
                       cache=self.cache, askii=self.askii)

    def on_close(self, action: Callable[[], None]) -> None:
        self._closing.append(action)

    def close(self) -> None:
        self.ledger.close()  # commits what is queued before the store goes away
        for action in reversed(self._closing):
            action()
        self.cooldowns.close()
        self.event_store.close()


def budget_settings(config: GatewayConfig) -> BudgetSettings:
    budgets = config.budgets
    return BudgetSettings(
        proxy_max_budget=budgets.proxy_max_budget, proxy_duration=budgets.proxy_duration,
        zone=ZoneInfo(budgets.timezone) if budgets.timezone else None, fail_open=budgets.fail_open,
        alert_share=budgets.alert_share, end_user_budget_id=budgets.end_user_budget_id,
        providers=budgets.providers)


class _NothingSpent:
    """The spend of budgets nobody enforces (the library's gateway has none)."""

    def spent(self, lines: Sequence[BudgetLine]) -> list[int]:
        return [0 for _ in lines]


class _Closing:
    """Closes something asynchronous when the app stops."""

    def __init__(self, close: Callable[[], Awaitable[None]]) -> None:
        self._close = close

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self._close()


def saver(app: Application) -> Callable[..., bool]:
    """Saves aggregates together, in one commit; False when a stream moved meanwhile (another
    process wrote it), nothing saved then."""
    def save(*aggregates: Aggregate) -> bool:
        try:
            app.save(*aggregates)
        except IntegrityError:
            return False
        return True
    return save


def _in_process_limits() -> LimitStore:
    from moneta.infrastructure.limits_in_process import InProcessLimitStore

    return InProcessLimitStore()


def instance_name() -> str:
    """host:pid:random, unique to this process's life (a pid is reused; the random part is not)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# Set by `moneta serve` for its children, which load the config again: the parent has warned.
CONFIG_ANNOUNCED = "MONETA_CONFIG_ANNOUNCED"
WORKERS = "MONETA_WORKERS"  # set by `moneta serve`: how many workers share this host's limits
# Set by `moneta serve --workers N` for its children: where their metrics meet.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def environment() -> dict[str, str]:
    return dict(os.environ)


def load_gateway_config(config_path: str | None, environ: Mapping[str, str]) -> GatewayConfig:
    """The config file if one is named (argument or MONETA_CONFIG), else the embedded default;
    its notices logged unless a parent process has logged them."""
    config = read_gateway_config(config_path, environ)
    if not environ.get(CONFIG_ANNOUNCED):
        for notice in config.notices:
            logging.getLogger("moneta.config").warning("%s", notice)
    return config


def read_gateway_config(config_path: str | None, environ: Mapping[str, str]) -> GatewayConfig:
    """The config as it will be served (its unpriced deployments taken out), without logging
    anything (`moneta config check`)."""
    from moneta.infrastructure.config_loader import load_config, parse_config
    from moneta.infrastructure.default_config import DEFAULT_CONFIG

    path = config_path or environ.get("MONETA_CONFIG")
    config = load_config(path, environ) if path else parse_config(DEFAULT_CONFIG, environ)
    return priced_only(config, price_book())


def build(config: GatewayConfig, environ: Mapping[str, str] | None = None, *, migrate: bool = False,
          limits: LimitStore | None = None, observer: LedgerObserver | None = None) -> Container:
    """The gateway over the configured ledger, with cooldowns and usage shared through Redis when
    one is configured, else kept in this process; rate limits in `limits` (default: in this process)."""
    from moneta.infrastructure.group_commit import GroupCommitLedger
    from moneta.infrastructure.providers.realtime import RealtimeWebSockets
    from moneta.infrastructure.providers.registry import default_providers

    environ = dict(environ if environ is not None else environment())
    location = StoreLocation.from_url(config.database_url)
    if migrate:
        migrate_store(location)
    event_store = location.open()
    cooldowns, usage = _shared_counters(config)
    providers = default_providers(environ, tokenizer())
    return Container(config=config, location=location, event_store=event_store,
                     ledger=GroupCommitLedger(event_store, timeout_s=config.ledger_timeout_s, observer=observer),
                     reader=EventStoreReader(event_store),
                     providers=providers, prices=price_book(), tokenizer=tokenizer(),
                     cooldowns=cooldowns, usage=usage, realtime=RealtimeWebSockets(providers),
                     limits=limits or _in_process_limits(), cache=response_cache(config.cache))


def response_cache(settings: CacheSettings | None) -> ResponseCache | None:
    if settings is None:
        return None
    if settings.kind == "redis":
        from moneta.infrastructure.cache_redis import RedisCacheStore

        assert settings.redis_url is not None  # the config loader requires one for a Redis cache
        return ResponseCache(RedisCacheStore(settings.redis_url), settings)
    from moneta.infrastructure.cache_in_process import InProcessCacheStore

    return ResponseCache(InProcessCacheStore(settings.max_entries), settings)


def build_proxy(config: GatewayConfig, environ: Mapping[str, str]) -> Container:
    """What a proxy worker serves: the gateway, the read side's queries, the metrics, the background
    health checks the config asks for, and a Redis probe for readiness."""
    from moneta.infrastructure import tokenizer as tiktoken_files
    from moneta.infrastructure.health_checks import background_health_checks
    from moneta.infrastructure.budget_stores import budget_store_for
    from moneta.infrastructure.limit_stores import limit_store_for
    from moneta.projections.billing import BillingViewReader
    from moneta.projections.lag_metrics import ProjectionLag

    tiktoken_files.preload()
    workers = int(environ.get(WORKERS, "1"))
    limits = limit_store_for(config.redis_url, config.database_url, workers)
    metrics = call_metrics(config, environ)
    container = build(config, environ, limits=limits, observer=metrics)
    store = open_view_store(container.location)
    container.views = SpendQueries(store)
    container.metrics = metrics
    metrics.metrics.add(ProjectionLag(container.event_store, store))
    container.on_close(store.close)
    container.read_access_view(AccessViewReader(store))
    container.keep_askii_rates()
    container.access.spend_totals = container.views
    spent = BudgetViewReader(store, container.reader.head, RUNNER_NAME)
    container.follow_lago(BillingViewReader(store), spent)
    container.count_budgets(budget_store_for(config.redis_url, config.database_url, workers, spent))
    beat_s = abandonment.beat_interval_s(config.abandon_after_s)
    container.background.append(InstanceHeartbeat(store, container.instance, beat_s))
    checks = background_health_checks(config, container.gateway.router, container.providers)
    if checks is not None:
        container.background.append(checks)
    if config.redis_url:
        from moneta.infrastructure.redis_probe import RedisProbe

        container.probes.append(RedisProbe(config.redis_url))
    return container


def call_metrics(config: GatewayConfig, environ: Mapping[str, str]) -> CallMetrics:
    """Created here, not at import: prometheus_client reads PROMETHEUS_MULTIPROC_DIR (set by
    `moneta serve --workers N` for its workers) when a metric is created."""
    from moneta.infrastructure.call_metrics import CallMetrics
    from moneta.infrastructure.metrics import GatewayMetrics

    return CallMetrics(GatewayMetrics(environ.get(MULTIPROCESS_DIR)), config.model_names())


SEAL_PAGE_SIZE = 1000  # events per seal at most
SEAL_INTERVAL_S = 0.25  # a seal at most this often: fewer, larger seals under a trickle of calls


@dataclass
class ReadSide:
    """The projection runner over the ledger, with connections of its own, the runner that seals
    the ledger into the audit chain, the budget alerts' deliverer when alerting is configured, and
    the Lago sync and Lago's usage deliverer when Lago is."""

    event_store: Application
    store: ViewStore
    runner: ProjectionRunner
    abandon_after_s: float
    alerts: BackgroundDelivery | None = None
    lago: BackgroundLagoSync | None = None
    lago_usage: LagoBackground | None = None
    sealer: ProjectionRunner | None = None

    def create_tables(self) -> None:
        for runner in (self.runner, self.sealer):
            if runner is not None:
                runner.create_tables()

    def close_abandoned(self) -> int:
        """Ends as Abandoned the calls of gateway processes that are gone; returns how many."""
        return abandonment.sweep(InFlightQueries(self.store), EventStoreReader(self.event_store),
                                 self.save_unless_moved, datetime.now(UTC), self.abandon_after_s)

    def save_unless_moved(self, aggregate: Aggregate) -> bool:
        try:
            self.event_store.save(aggregate)
        except IntegrityError:  # its process settled it after all (another deliverer, for an alert)
            return False
        return True

    def save_all_unless_moved(self, aggregates: Sequence[Aggregate]) -> set[uuid.UUID]:
        """Saves the aggregates in one commit; when one moved meanwhile, each on its own. Returns
        the ids of those saved."""
        pending = [(aggregate.id, aggregate.collect_events()) for aggregate in aggregates]
        try:
            self.event_store.save(*(event for _, events in pending for event in events))
            return {aggregate_id for aggregate_id, _ in pending}
        except IntegrityError:
            saved = set()
            for aggregate_id, events in pending:
                try:
                    self.event_store.save(*events)
                except IntegrityError:
                    continue
                saved.add(aggregate_id)
            return saved

    def close(self) -> None:
        if self.lago_usage is not None:
            self.lago_usage.stop()
        if self.alerts is not None:
            self.alerts.stop()
        if self.lago is not None:
            self.lago.stop()
        if self.sealer is not None:
            self.sealer.stop()
        self.runner.stop()
        self.store.close()
        self.event_store.close()


def build_read_side(config: GatewayConfig) -> ReadSide:
    location = StoreLocation.from_url(config.database_url)
    event_store = location.open()
    store = open_view_store(location, check_connections=False)  # the runner retries what fails
    runner = ProjectionRunner(event_store, store, listen_dsn=location.postgres_dsn)
    read_side = ReadSide(event_store, store, runner, config.abandon_after_s, sealer=ProjectionRunner(
        event_store, store, name=seals.NAME, views=(seals,), page_size=SEAL_PAGE_SIZE,
        listen_dsn=location.postgres_dsn, min_interval_s=SEAL_INTERVAL_S, skips_poison=False))
    if config.alerting:
        from moneta.infrastructure.webhook_sender import AiohttpWebhookSender

        read_side.alerts = BackgroundDelivery(AlertDelivery(
            config.alerting, AlertDeliveries(store), EventStoreReader(event_store), read_side.save_unless_moved,
            AiohttpWebhookSender()))
    if config.moneta.lago is not None:
        read_side.lago = lago_sync(config.moneta.lago, read_side)
        read_side.lago_usage = LagoBackground(lago_delivery(read_side, config.moneta.lago))
    return read_side


@contextmanager
def askii_exchange(config: GatewayConfig, *, writing: bool) -> Iterator[AskiiExchange]:
    """The askii rates of the config's ledger, read (`moneta askii ...`). Writing migrates the ledger
    first; reading an embedded ledger that does not exist yet finds the default rate alone."""
    location = StoreLocation.from_url(config.database_url)
    if not writing and location.kind == "sqlite" and not os.path.exists(str(location.sqlite_path)):
        yield AskiiExchange(config.moneta.askii_per_usd)
        return
    migrate_store(location)
    event_store = location.open()
    try:
        exchange = AskiiExchange(config.moneta.askii_per_usd, EventStoreAccess(event_store))
        exchange.load()
        yield exchange
    finally:
        event_store.close()


def lago_sync(settings: LagoSettings, read_side: ReadSide) -> BackgroundLagoSync:
    """Reads Lago into the ledger on a schedule, from the read side."""
    from moneta.application.lago_sync import LagoSync
    from moneta.infrastructure.lago_client import LagoBillingClient
    from moneta.infrastructure.lago_sync_schedule import BackgroundLagoSync
    from moneta.projections.billing import BillingViewReader

    sync = LagoSync(settings, LagoBillingClient(settings), BillingViewReader(read_side.store),
                    EventStoreReader(read_side.event_store), saver(read_side.event_store))
    return BackgroundLagoSync(sync, settings.sync_interval_s)


def lago_delivery(read_side: ReadSide, settings: LagoSettings,
                  policy: DeliveryPolicy = DeliveryPolicy()) -> LagoDelivery:
    """Usage delivery from the read side's outbox to Lago (see application/lago_delivery.py)."""
    from moneta.infrastructure.lago_events_http import HttpLagoEvents
    from moneta.infrastructure.stream_batch_reader import StreamBatchReader

    return LagoDelivery(settings.billable_metric_code, LagoOutbox(read_side.store),
                        StreamBatchReader(read_side.event_store), read_side.save_all_unless_moved,
                        HttpLagoEvents(settings, policy.timeout_s), policy)


def lago_reconciliation(settings: LagoSettings, store: ViewStore, event_store: Application) -> Reconciliation:
    """The ledger's billed calls (from the outbox view) against Lago's events; close its `lago`."""
    from moneta.infrastructure.lago_events_http import HttpLagoEvents

    return Reconciliation(LagoOutbox(store), EventStoreReader(event_store), HttpLagoEvents(settings),
                          settings.billable_metric_code)


@dataclass
class AuditSide:
    """What the audit commands read: the ledger (whole, a page at a time) and the seals of its chain."""

    event_store: Application
    store: ViewStore
    scan: LedgerScan
    budget_settings: BudgetSettings

    def close(self) -> None:
        self.store.close()
        self.event_store.close()


def build_audit(config: GatewayConfig) -> AuditSide:
    location = StoreLocation.from_url(config.database_url)
    event_store = location.open()
    return AuditSide(event_store, open_view_store(location), ledger_scan(event_store, location),
                     budget_settings(config))


def ledger_scan(event_store: Application, location: StoreLocation) -> LedgerScan:
    from moneta.infrastructure.ledger_scan import LedgerScan

    return LedgerScan(event_store, location)  # type: ignore[arg-type]


def request_explainer(event_store: Application, views: ViewStore | None, config: GatewayConfig) -> RequestExplainer:
    """Explains calls from the ledger; a key named by its hash alone is looked up in the access view."""
    return RequestExplainer(EventStoreReader(event_store), AccessViewReader(views) if views is not None else None,
                            key_hash(config.master_key) if config.master_key else "")


def open_view_store(location: StoreLocation, check_connections: bool = True) -> ViewStore:
    return ViewStore.connect(sqlite_path=location.sqlite_path, postgres_dsn=location.postgres_dsn,
                             check_connections=check_connections)


def _shared_counters(config: GatewayConfig) -> tuple[CooldownStore, UsageMeter]:
    if config.redis_url:
        from moneta.infrastructure.cooldowns_redis import RedisCooldownStore
        from moneta.infrastructure.usage_redis import RedisUsageMeter

        return RedisCooldownStore(config.redis_url), RedisUsageMeter(config.redis_url)
    from moneta.infrastructure.cooldowns_in_process import InProcessCooldownStore
    from moneta.infrastructure.usage_in_process import InProcessUsageMeter

    return InProcessCooldownStore(), InProcessUsageMeter()


# -- the library: one container per process, built on first use ---------------------------------

_library: Container | None = None
_library_lock = threading.Lock()


def library_container() -> Container:
    """The library's gateway, from MONETA_CONFIG (or the embedded default) and DATABASE_URL."""
    global _library
    with _library_lock:
        if _library is None:
            import atexit

            _library = build(library_config(), environment(), migrate=True)
            _library.askii.lazy_refresh_s = ASKII_SYNC_INTERVAL_S
            _library.askii.load()
            atexit.register(_library.close)  # commits what an abandoned stream left queued
        _follow_askii_default(_library)
        return _library


def library_ledger_configured() -> bool:
    """Whether the library has a ledger to read: one in use, DATABASE_URL or MONETA_CONFIG."""
    return _library is not None or bool(os.environ.get("DATABASE_URL") or os.environ.get("MONETA_CONFIG"))


def library_askii_rate() -> Decimal:
    """The library's default askii rate, `moneta.askii_per_usd` (LiteLLM-style module setting)."""
    import moneta

    return valid_rate(moneta.askii_per_usd, "moneta.askii_per_usd")


def _follow_askii_default(container: Container) -> None:
    """Without a config file, the library's default rate is `moneta.askii_per_usd` as it is now."""
    if not os.environ.get("MONETA_CONFIG"):
        container.askii.use_default(library_askii_rate())


def library_config() -> GatewayConfig:
    """The config the library answers with: MONETA_CONFIG's file, read once per path."""
    return _config_at(os.environ.get("MONETA_CONFIG"))


@cache
def _config_at(path: str | None) -> GatewayConfig:
    return load_gateway_config(path, environment())


def router_config(model_list: list[dict], router_settings: Mapping[str, object]) -> GatewayConfig:
    """A library `Router`'s deployments and settings, read as a config file's `model_list` and
    `router_settings` are: the same checks, the same errors, the same notices (logged)."""
    from moneta.infrastructure.config_loader import parse_config

    raw = {"model_list": model_list, "router_settings": dict(router_settings)}
    config = priced_only(parse_config(raw, environment()), price_book())
    notices = [*config.notices]
    if config.budgets.providers:
        notices.append("provider_budget_config is enforced by the proxy (moneta serve), not by a library Router:"
                       " it has no effect here")
    for notice in notices:
        logging.getLogger("moneta.config").warning("%s", notice)
    return config


async def close_http_session() -> None:
    """Closes the running event loop's HTTP session to the providers."""
    from moneta.infrastructure.http_session import close_session

    await close_session()


@cache
def price_book() -> PriceBook:
    from moneta.infrastructure.pricing import PriceTable

    return PriceTable()


@cache
def tokenizer() -> EncodingTokenizer:
    from moneta.infrastructure.tokenizer import TiktokenCounter

    return TiktokenCounter()


# -- the library's end-user budgets (`moneta.BudgetManager`), built on first use --------------------

@dataclass
class LibraryBudgetSide:
    """The end users' budgets, their counters shared through the ledger's database by every process
    on it, and the views they are read from, which this process catches up itself when asked (the
    library runs no read side of its own, and no thread it was not asked for)."""

    budgets: LibraryBudgets
    runner: ProjectionRunner
    spend: EndUserSpend

    def caught_up(self) -> EndUserSpend:
        self.runner.catch_up()
        return self.spend


class _CaughtUpView:
    """The budget view as the counters' source: caught up with the ledger by this process first."""

    def __init__(self, runner: ProjectionRunner, reader: BudgetViewReader) -> None:
        self._runner = runner
        self._reader = reader

    def spent(self, lines: Sequence[BudgetLine]) -> list[int]:
        self._runner.catch_up()
        return self._reader.spent(lines)


_library_budgets: LibraryBudgetSide | None = None


def library_budgets() -> LibraryBudgetSide:
    global _library_budgets
    container = library_container()
    with _library_lock:
        if _library_budgets is None:
            from moneta.infrastructure.budgets_database import DatabaseBudgetStore

            store = open_view_store(container.location)
            runner = ProjectionRunner(container.location.open(), store)
            runner.create_tables()
            head = EventStoreReader(runner.app).head
            reader = _CaughtUpView(runner, BudgetViewReader(store, head, RUNNER_NAME))
            counters = DatabaseBudgetStore.open(container.config.database_url, reader)
            _library_budgets = LibraryBudgetSide(
                LibraryBudgets(counters, EventStoreAccess(container.event_store), container.prices,
                               container.tokenizer), runner, EndUserSpend(store))
            container.on_close(store.close)
            container.on_close(runner.app.close)
        return _library_budgets


def end_user_budgets() -> LibraryBudgets | None:
    """The end users' budgets that library calls naming a `user` reserve on, once a BudgetManager
    exists in this process (None before: the library enforces no budget then)."""
    return None if _library_budgets is None else _library_budgets.budgets
