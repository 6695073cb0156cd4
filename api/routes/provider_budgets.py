"""LiteLLM's `GET /provider/budgets`: each provider budget of `router_settings.provider_budget_config`
now, from the budget counters (rebuilt from the ledger's budget view on start).

`{"providers": {"openai": {"budget_limit", "time_period", "spend", "budget_reset_at", ...}}}` as
LiteLLM answers, with `reserved` (what calls in flight hold) and `period_start` beside; money also
as exact text (`spend_exact`). No provider budget configured: `{"providers": {}}`. Auth is the
including app's business.
"""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from moneta.api.responses import json_response, jsonable

router = APIRouter(tags=["budgets"])


@router.get("/provider/budgets")
async def provider_budgets(request: Request) -> Response:
    return json_response({"providers": jsonable(await request.app.state.container.budgets.provider_status())})
