"""LiteLLM's health routes: liveliness (the process answers) and readiness (its stores do, the
read side keeps up with the ledger, and, with Lago configured, Lago's state is fresh enough or
`on_unreachable` allows calls anyway). A check that does not answer in time counts as unreachable."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, TypeVar

from eventsourcing.application import Application
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from moneta.api.responses import json_response
from moneta.application.billing_state import BillingDirectory
from moneta.bootstrap import Container, Probe
from moneta.projections import seals
from moneta.projections.runner import DEFAULT_NAME
from moneta.projections.status import read_status
from moneta.projections.view_store import ViewStore

router = APIRouter()
READ_SIDE_DOWN_AFTER_S = 5.0  # without a heartbeat (the runner beats about once a second)
READ_SIDE_LAGGING_AFTER_S = 1.0
READINESS_CHECK_S = 0.8  # each check, all at once: readiness answers within a second whatever is down
# The ledger and view reads run on threads of their own: a read stuck until its connection wait
# ends (an outage) must not hold a thread of the pool that serves requests.
_CHECK_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="moneta-readiness")
T = TypeVar("T")


@router.get("/health/liveliness")
@router.get("/health/liveness")
async def liveliness() -> PlainTextResponse:
    return PlainTextResponse("I'm alive!")


@router.get("/health/readiness")
async def readiness(request: Request) -> Response:
    container: Container = request.app.state.container
    checks: dict[str, Awaitable[Any]] = {"db": _bounded(_in_thread(_ledger_status, container), "unreachable")}
    for probe in container.probes:
        checks[probe.field] = _bounded(_probe_status(probe), "unreachable")
    if container.views is not None:
        checks["read_side"] = _bounded(_in_thread(_read_side_status, container.event_store, container.views.store),
                                       _read_side_unknown("unreachable"))
        checks["audit_chain"] = _bounded(_in_thread(_chain_status, container.event_store, container.views.store),
                                         _chain_unknown("unreachable"))
    results = dict(zip(checks, await asyncio.gather(*checks.values())))
    read_side = results.get("read_side", {"status": "ok"})["status"]
    lago = None if container.billing is None else _lago_status(container.billing)
    healthy = (results["db"] == "connected"
               and all(results[probe.field] == probe.label for probe in container.probes)
               and read_side in ("ok", "lagging", "degraded")
               and not (lago is not None and lago["stale"] and lago["on_unreachable"] == "deny"))
    # Degraded: serving, but some events are quarantined and missing from the views.
    overall = "unhealthy" if not healthy else "degraded" if read_side == "degraded" else "healthy"
    body = {"status": overall, **results, "rate_limits": container.rate_limits.store.mode,
            "budgets": {"store": container.budgets.store.mode,
                        "when_unverifiable": "admit" if container.budgets.settings.fail_open else "refuse"},
            "ledger": container.location.kind, "litellm_version": None, "moneta_version": request.app.version}
    if lago is not None:
        body["lago"] = lago
    return json_response(body, status_code=200 if healthy else 503)


async def _bounded(check: Awaitable[T], on_timeout: T) -> T:
    try:
        return await asyncio.wait_for(check, READINESS_CHECK_S)
    except asyncio.TimeoutError:
        return on_timeout


def _in_thread(read: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
    return asyncio.get_running_loop().run_in_executor(_CHECK_THREADS, read, *args)


async def _probe_status(probe: Probe) -> str:
    return probe.label if await probe() else "unreachable"


def _ledger_status(container: Container) -> str:
    try:
        container.reader.head()
    except Exception:  # any failure to read the store means not ready
        return "unreachable"
    return "connected" if container.ledger.is_healthy() else "write failing"


def _read_side_status(app: Application, store: ViewStore) -> dict[str, Any]:
    """Down when no heartbeat proves the projection runner alive; degraded when events are
    quarantined; lagging (still serving) when behind."""
    try:
        statuses = read_status(app, store)
    except Exception:  # the views or the ledger cannot be read
        return _read_side_unknown("unreachable")
    status = next((status for status in statuses if status.name == DEFAULT_NAME), None)
    if status is None:  # no tracking row: nothing proves the read side alive
        return _read_side_unknown("down")
    age = status.heartbeat_age_s
    if age is None or age > READ_SIDE_DOWN_AFTER_S:
        state = "down"
    elif status.quarantined:
        state = "degraded"
    else:
        state = "lagging" if status.lag_s > READ_SIDE_LAGGING_AFTER_S else "ok"
    return {"status": state, "lag_events": status.lag_events, "lag_s": round(status.lag_s, 3),
            "heartbeat_age_s": None if age is None else round(age, 3), "quarantined": status.quarantined}


def _lago_status(billing: BillingDirectory) -> dict[str, Any]:
    """Stale: no good sync from Lago within max_staleness_s; then on_unreachable decides the calls
    (and, when it denies them, readiness is 503)."""
    last = billing.last_sync_at
    return {"last_sync_at": None if last is None else last.isoformat(), "stale": billing.stale(),
            "on_unreachable": billing.on_unreachable}


def _chain_status(app: Application, store: ViewStore) -> dict[str, Any]:
    """The runner that seals the ledger: shown, never a reason to be unready (a stuck chain is lag)."""
    try:
        statuses = read_status(app, store)
    except Exception:  # the views or the ledger cannot be read
        return _chain_unknown("unreachable")
    status = next((status for status in statuses if status.name == seals.NAME), None)
    if status is None:
        return _chain_unknown("down")
    age = status.heartbeat_age_s
    down = age is None or age > READ_SIDE_DOWN_AFTER_S
    state = "down" if down else "lagging" if status.lag_s > READ_SIDE_LAGGING_AFTER_S else "ok"
    return {"status": state, "lag_events": status.lag_events, "lag_s": round(status.lag_s, 3),
            "heartbeat_age_s": None if age is None else round(age, 3)}


def _chain_unknown(state: str) -> dict[str, Any]:
    return {"status": state, "lag_events": None, "lag_s": None, "heartbeat_age_s": None}


def _read_side_unknown(state: str) -> dict[str, Any]:
    return {"status": state, "lag_events": None, "lag_s": None, "heartbeat_age_s": None, "quarantined": None}
