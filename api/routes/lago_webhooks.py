"""`POST /lago/webhooks`: the URL to give Lago for its webhooks. No API key: the signature is the
authentication (a bad or missing one is a 401 and nothing is recorded). The answer comes once the
webhook is durable in the ledger; a webhook received before (same `X-Lago-Unique-Key`) is a 200
that records nothing new."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from moneta.api.responses import json_response
from moneta.application.lago_webhooks import LagoWebhookInbox

router = APIRouter()


@router.post("/lago/webhooks")
async def lago_webhook(request: Request) -> Response:
    inbox: LagoWebhookInbox = request.app.state.container.lago_inbox
    outcome = await inbox.receive(await request.body(), request.headers)
    return json_response({"received": True, "duplicate": outcome.duplicate, "webhook_type": outcome.webhook_type})
