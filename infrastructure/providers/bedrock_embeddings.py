"""Embeddings on Bedrock's InvokeModel, answered in OpenAI's embedding list shape.

- Amazon Titan (`amazon.titan-embed-text-v1`, `-v2:0`): one call per input text; Titan reports
  `inputTextTokenCount`, which is the usage.
- Cohere Embed (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`, ...): up to 96 texts
  per call. Bedrock returns no token count for these, so usage is an estimate of one token per
  four characters (rounded up per text), the rule of thumb Cohere's English tokenizer follows.
"""
from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

from moneta.application.config import Deployment
from moneta.domain import errors

COHERE_BATCH = 96
COHERE_DEFAULT_INPUT_TYPE = "search_document"


class InvokeModel(Protocol):
    async def invoke(self, deployment: Deployment, model_id: str, payload: dict[str, Any]) -> dict[str, Any]: ...


async def bedrock_embedding(client: InvokeModel, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    model_id = body["model"]
    texts = _texts(body.get("input"))
    if "titan-embed" in model_id:
        vectors, tokens = await _titan(client, deployment, model_id, texts, body)
    elif "cohere.embed" in model_id:
        vectors, tokens = await _cohere(client, deployment, model_id, texts, body)
    else:
        raise errors.BadRequestError(
            f"bedrock: {model_id!r} is not a supported embedding model (amazon.titan-embed-*, cohere.embed-*)",
            param="model", provider="bedrock", model=model_id)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(vectors)],
        "model": model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _texts(value: Any) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise errors.BadRequestError("bedrock embeddings take `input` as a string or a list of strings",
                                     param="input", provider="bedrock")
    return texts


async def _titan(client: InvokeModel, deployment: Deployment, model_id: str, texts: list[str],
                 body: dict[str, Any]) -> tuple[list[list[float]], int]:
    options = {key: body[key] for key in ("dimensions", "normalize") if body.get(key) is not None}
    answers = await asyncio.gather(
        *(client.invoke(deployment, model_id, {"inputText": text, **options}) for text in texts))
    return ([answer["embedding"] for answer in answers],
            sum(int(answer.get("inputTextTokenCount") or 0) for answer in answers))


async def _cohere(client: InvokeModel, deployment: Deployment, model_id: str, texts: list[str],
                  body: dict[str, Any]) -> tuple[list[list[float]], int]:
    if body.get("dimensions") is not None:
        raise errors.UnsupportedParamsError("bedrock cohere embeddings: dimensions is not supported",
                                            param="dimensions", provider="bedrock", model=model_id)
    input_type = body.get("input_type") or COHERE_DEFAULT_INPUT_TYPE
    batches = [texts[i:i + COHERE_BATCH] for i in range(0, len(texts), COHERE_BATCH)]
    answers = await asyncio.gather(
        *(client.invoke(deployment, model_id, {"texts": batch, "input_type": input_type}) for batch in batches))
    vectors = [vector for answer in answers for vector in answer["embeddings"]]
    return vectors, sum(math.ceil(len(text) / 4) for text in texts)
