"""`GET /audit/head`: the audit chain's head seal, to be copied where the database's owner cannot
reach it (`moneta audit verify --expect HASH` then proves the chain still holds it).

Auth is the including app's business (a proxy admin or viewer).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from moneta.api.responses import json_response
from moneta.domain.audit_chain import GENESIS
from moneta.projections import seals

router = APIRouter(tags=["audit"])


@router.get("/audit/head")
async def audit_head(request: Request) -> Response:
    container = request.app.state.container
    return json_response(await run_in_threadpool(_head, container.views.store, container.reader.head))


def _head(store: Any, ledger_head: Any) -> dict[str, Any]:
    """`seq` 0 and the genesis hash before the first seal; `unsealed`: events after the head seal."""
    with store.reading() as cur:
        head = seals.head(cur)
    position = ledger_head()
    summary = head.summary() if head else {"seq": 0, "last_position": 0, "hash": GENESIS.hex(), "count": 0,
                                           "events": 0, "sealed_at": None}
    return {**summary, "ledger_position": position, "unsealed": max(position - summary["last_position"], 0)}
