"""The library: `completion()`, `acompletion()`, `embedding()`, `transcription()` and friends.

Call any provider with OpenAI's arguments: `completion(model="openai/gpt-4o-mini",
messages=[...])`. A model name that the config (MONETA_CONFIG) defines is routed through its
deployments; any other `provider/model` is called directly with the `api_key` / `api_base`
given. Every call is recorded in the ledger (DATABASE_URL, else ./moneta.db) like a proxy call.
Failures raise `moneta.exceptions` (LiteLLM's names, subclasses of openai's exceptions).
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import uuid
from dataclasses import replace
from typing import Any, AsyncIterator, BinaryIO, Callable, Iterator, Sequence, TypeVar

from moneta import bootstrap
from moneta.application import validation
from moneta.application.budget_check import BudgetRefused
from moneta.application.config import Deployment
from moneta.application.gateway import Caller, Gateway
from moneta.application.json_limits import check_carriable, refuse_nul
from moneta.application.ports import AudioFile
from moneta.application.tokens import total_tokens
from moneta.application.results import (
    EmbeddingResponse,
    ModelResponse,
    ModelResponseChunk,
    TranscriptionResponse,
)
from moneta.domain.errors import GatewayError
from moneta.domain.model_ref import ModelRef
from moneta.domain.pricing import TokenPrice, to_decimal
from moneta.exceptions import from_gateway_error, raising_library_errors

# Call arguments that configure the call rather than travel in the request body.
_CALL_SETTINGS = {"api_key", "api_base", "base_url", "api_version", "timeout", "stream_timeout",
                  "custom_llm_provider", "input_cost_per_token", "output_cost_per_token", "num_retries"}

_R = TypeVar("_R", ModelResponse, EmbeddingResponse)


def _gateway(model: str, settings: dict[str, Any], mock_response: Any) -> Gateway:
    container = bootstrap.library_container()
    if model in container.config.model_names() and not settings and mock_response is None:
        return container.gateway
    return container.gateway_for(_ad_hoc_deployment(model, settings, mock_response))


def _ad_hoc_deployment(model: str, settings: dict[str, Any], mock_response: Any) -> Deployment:
    ref = ModelRef.parse(model)
    if settings.get("custom_llm_provider"):
        ref = ModelRef(str(settings["custom_llm_provider"]), model)
    if mock_response is not None:
        ref = ModelRef("mock", ref.name)
    price = None
    if "input_cost_per_token" in settings or "output_cost_per_token" in settings:
        price = TokenPrice(to_decimal(settings.get("input_cost_per_token", 0), "input_cost_per_token"),
                           to_decimal(settings.get("output_cost_per_token", 0), "output_cost_per_token"))
    return Deployment(
        id=f"adhoc:{ref}", model_name=model, provider=ref.provider, provider_model=ref.name,
        api_base=settings.get("api_base") or settings.get("base_url"), api_key=settings.get("api_key"),
        api_version=settings.get("api_version"), timeout=settings.get("timeout"),
        stream_timeout=settings.get("stream_timeout"), price=price,
        extra_params={"mock_response": mock_response} if mock_response is not None else {},
    )


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k in _CALL_SETTINGS and kwargs[k] is not None}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return kwargs, settings, kwargs.pop("mock_response", None)


def _check(validate: Callable[[Any], str], body: dict[str, Any]) -> None:
    """The proxy's checks of a request: what any request must respect, then its shape."""
    check_carriable(body)
    validate(body)


def _answered_as(response: _R, model: str, caller: Caller, request_id: uuid.UUID) -> _R:
    """The response, remembering the model the call named, as LiteLLM's `_hidden_params` do:
    `completion_cost()` prices it so (its own `model` is the provider's, without the provider);
    and its call in the ledger, with the end user it was charged to (for `BudgetManager`)."""
    response._hidden_params = {"model": model, "request_id": str(request_id),  # type: ignore[attr-defined]
                               "end_user": caller.end_user}
    return response


def _caller(body: dict[str, Any]) -> Caller:
    return Caller(end_user=str(body.get("user") or ""))


async def _budgeted(gateway: Gateway, call_type: str, body: dict[str, Any], request_id: uuid.UUID,
                    audio_bytes: int = 0) -> tuple[Caller, dict[str, Any]]:
    """The caller, and the call as its end user's budget lets it be made (its output capped to what
    is left), once a `BudgetManager` exists and the call names a `user` with a budget; a refusal
    is recorded in the ledger and raised."""
    caller, budgets = _caller(body), bootstrap.end_user_budgets()
    if budgets is None or not caller.end_user:
        return caller, body
    try:
        reservation = await budgets.reserve(str(request_id), caller.end_user, call_type, body, gateway.router.group,
                                            audio_bytes)
    except BudgetRefused as refused:
        denied = replace(caller, checks={"budget": refused.decision.as_event()})
        await gateway.deny(denied, call_type, body["model"], refused, request_id)
        raise
    if reservation is None:
        return caller, body
    return replace(caller, checks={"budget": reservation.as_event()},
                   on_end=budgets.settler(str(request_id), reservation)), reservation.call


# -- async API ----------------------------------------------------------------------------

# The gateway a call goes to, from its model, call settings and mock_response (see `_gateway`).
GatewayChoice = Callable[[str, dict[str, Any], Any], Gateway]


@raising_library_errors
async def acompletion(model: str, messages: list[dict[str, Any]], stream: bool = False, **kwargs: Any) -> Any:
    """Chat completion. With `stream=True`, an async iterator of ModelResponseChunk."""
    return await chat_with(_gateway, model, messages, stream, kwargs)


@raising_library_errors
async def atext_completion(model: str, prompt: str | list[str], **kwargs: Any) -> ModelResponse:
    return await text_completion_with(_gateway, model, prompt, kwargs)


@raising_library_errors
async def aembedding(model: str, input: str | list[str], **kwargs: Any) -> EmbeddingResponse:  # noqa: A002
    return await embedding_with(_gateway, model, input, kwargs)


async def chat_with(choose: GatewayChoice, model: str, messages: list[dict[str, Any]], stream: bool,
                    kwargs: dict[str, Any]) -> Any:
    body, settings, mock_response = _split({"model": model, "messages": messages, **kwargs})
    if stream:
        body["stream"] = True
    _check(validation.validate_chat, body)
    gateway = choose(model, settings, mock_response)
    request_id = uuid.uuid4()
    caller, body = await _budgeted(gateway, "chat", body, request_id)
    if stream:
        chunks = await gateway.open_chat_stream(caller, body, request_id)
        return _typed_chunks(chunks)
    return _answered_as(ModelResponse(await gateway.chat(caller, body, request_id)), model, caller, request_id)


async def text_completion_with(choose: GatewayChoice, model: str, prompt: str | list[str],
                               kwargs: dict[str, Any]) -> ModelResponse:
    body, settings, mock_response = _split({"model": model, "prompt": prompt, **kwargs})
    _check(validation.validate_text_completion, body)
    gateway = choose(model, settings, mock_response)
    request_id = uuid.uuid4()
    caller, body = await _budgeted(gateway, "text_completion", body, request_id)
    return _answered_as(ModelResponse(await gateway.text_completion(caller, body, request_id)), model, caller,
                        request_id)


async def embedding_with(choose: GatewayChoice, model: str, input: str | list[str],  # noqa: A002
                         kwargs: dict[str, Any]) -> EmbeddingResponse:
    body, settings, mock_response = _split({"model": model, "input": input, **kwargs})
    _check(validation.validate_embedding, body)
    gateway = choose(model, settings, mock_response)
    request_id = uuid.uuid4()
    caller, body = await _budgeted(gateway, "embedding", body, request_id)
    return _answered_as(EmbeddingResponse(await gateway.embedding(caller, body, request_id)), model, caller,
                        request_id)


@raising_library_errors
async def atranscription(model: str, file: BinaryIO | bytes | tuple[str, bytes], **kwargs: Any) -> TranscriptionResponse:
    fields, settings, mock_response = _split(dict(kwargs))
    _check(validation.validate_transcription, {"model": model, **fields})
    audio = _audio(file)
    refuse_nul({"file": audio.filename})
    gateway = _gateway(model, settings, mock_response)
    request_id = uuid.uuid4()
    caller, _ = await _budgeted(gateway, "transcription", {"model": model, **fields}, request_id, len(audio.content))
    return TranscriptionResponse(await gateway.transcription(caller, model, audio, fields, request_id))


async def _typed_chunks(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[ModelResponseChunk]:
    try:
        async for chunk in chunks:
            yield ModelResponseChunk(chunk)
    except GatewayError as error:
        raise from_gateway_error(error) from error


def _audio(file: BinaryIO | bytes | tuple[str, bytes]) -> AudioFile:
    if isinstance(file, tuple):
        return AudioFile(file[0], file[1], "application/octet-stream")
    if isinstance(file, bytes):
        return AudioFile("audio.wav", file, "audio/wav")
    name = getattr(file, "name", "audio.wav")
    return AudioFile(str(name).rsplit("/", 1)[-1], file.read(), "application/octet-stream")


# -- sync API: the async one, run on a private event loop in a background thread ---------------

class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="moneta-library-loop", daemon=True).start()
        atexit.register(self.close)

    def close(self) -> None:
        """Closes the loop's HTTP session to the providers (this loop runs until the process ends)."""
        closing = asyncio.run_coroutine_threadsafe(bootstrap.close_http_session(), self.loop)
        with contextlib.suppress(Exception):
            closing.result(timeout=5)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def iterate(self, chunks: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self.run(chunks.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            # Bounded: an abandoned stream may be finalised while the interpreter shuts down.
            closing = asyncio.run_coroutine_threadsafe(chunks.aclose(), self.loop)  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                closing.result(timeout=5)


_loop: _LoopThread | None = None
_loop_lock = threading.Lock()


def _runner() -> _LoopThread:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = _LoopThread()
        return _loop


def in_background(coroutine: Any, stream: bool = False) -> Any:
    """Runs a library coroutine on the library's loop; a stream it returns becomes an iterator."""
    runner = _runner()
    result = runner.run(coroutine)
    return runner.iterate(result) if stream else result


def completion(model: str, messages: list[dict[str, Any]], stream: bool = False, **kwargs: Any) -> Any:
    """Chat completion. With `stream=True`, an iterator of ModelResponseChunk."""
    return in_background(acompletion(model, messages, stream=stream, **kwargs), stream)


def text_completion(model: str, prompt: str | list[str], **kwargs: Any) -> ModelResponse:
    return in_background(atext_completion(model, prompt, **kwargs))


def embedding(model: str, input: str | list[str], **kwargs: Any) -> EmbeddingResponse:  # noqa: A002
    return in_background(aembedding(model, input, **kwargs))


def transcription(model: str, file: BinaryIO | bytes | tuple[str, bytes], **kwargs: Any) -> TranscriptionResponse:
    return in_background(atranscription(model, file, **kwargs))


@raising_library_errors
def token_counter(
    model: str = "", messages: Sequence[dict[str, Any]] | None = None, text: str | Sequence[str] | None = None
) -> int:
    """LiteLLM's `token_counter()`: the number of tokens in `messages` or `text` for `model`."""
    return total_tokens(bootstrap.tokenizer(), model, messages, text)
