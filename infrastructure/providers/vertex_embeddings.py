"""Embeddings on Vertex AI's `:predict` (`vertex_ai/text-embedding-005`, ...), answered in OpenAI's
embedding list shape.

Vertex takes at most 250 instances per call, so longer inputs go out in batches. Each prediction
carries its own `statistics.token_count`; their sum is the usage.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from moneta.application.config import Deployment
from moneta.domain import errors

MAX_INSTANCES = 250

Predict = Callable[[dict[str, Any]], Awaitable[Any]]  # a `:predict` body -> Vertex's answer


async def vertex_embedding(predict: Predict, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    texts = _texts(body.get("input"))
    parameters = {"outputDimensionality": body["dimensions"]} if body.get("dimensions") else {}
    batches = [texts[i:i + MAX_INSTANCES] for i in range(0, len(texts), MAX_INSTANCES)]
    answers = await asyncio.gather(
        *(predict({"instances": [{"content": text} for text in batch], "parameters": parameters})
          for batch in batches))
    embeddings = [prediction["embeddings"] for answer in answers for prediction in answer.get("predictions") or ()]
    tokens = sum(int((embedding.get("statistics") or {}).get("token_count") or 0) for embedding in embeddings)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": embedding.get("values") or []}
                 for i, embedding in enumerate(embeddings)],
        "model": deployment.provider_model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _texts(value: Any) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise errors.BadRequestError("vertex_ai embeddings take `input` as a string or a list of strings",
                                     param="input", provider="vertex_ai")
    return texts
