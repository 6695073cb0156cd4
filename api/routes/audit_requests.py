"""`GET /audit/requests/{request_id}`: one call explained from its ledger stream (see
application/request_explanation.py). Auth is the including app's business (a proxy admin or viewer).
"""
from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from moneta.api.responses import json_response, jsonable
from moneta.bootstrap import request_explainer
from moneta.domain.errors import BadRequestError, NotFoundError

router = APIRouter(tags=["audit"])


@router.get("/audit/requests/{request_id}")
async def explain_request(request: Request, request_id: str) -> Response:
    stream_id = parse_request_id(request_id)
    container = request.app.state.container
    explainer = request_explainer(container.event_store, container.views.store if container.views else None,
                                  container.config)
    explanation = await run_in_threadpool(explainer.explain, stream_id)
    if explanation is None:
        raise NotFoundError(f"No request {stream_id} in the ledger.", param="request_id", code="request_not_found")
    return json_response(jsonable(explanation))


def parse_request_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise BadRequestError("A request id is a UUID, as the x-request-id header gives it.", param="request_id",
                              code="invalid_request_id") from None
