"""LiteLLM's utility routes: `POST /utils/token_counter`."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from moneta.api.auth import authenticate
from moneta.api.body import parse_json, read_body
from moneta.api.responses import json_response
from moneta.application import validation
from moneta.application.tokens import count_tokens, provider_model

router = APIRouter()


@router.post("/utils/token_counter")
async def token_counter(request: Request) -> Response:
    """`{"model", "messages"}` or `{"model", "prompt"}` -> LiteLLM's TokenCountResponse, plus
    the `encoding` used and whether the count is `exact` (else an estimate, see application.tokens)."""
    await authenticate(request)
    body = parse_json(await read_body(request))
    model = validation.validate_token_count(body)
    container = request.app.state.container
    used = provider_model(container.config, model)
    count = count_tokens(container.tokenizer, used, messages=body.get("messages"), text=body.get("prompt"))
    return json_response({"total_tokens": count.total_tokens, "request_model": model, "model_used": used,
                          "tokenizer_type": "openai_tokenizer", "encoding": count.encoding, "exact": count.exact})
