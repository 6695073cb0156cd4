"""The use cases of the gateway: admit, call through the router, settle, record.

The Admitted event's commit overlaps a slow provider call (see `admission.py`); the outcome
event is committed before the caller sees the result.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable
from uuid import UUID

from moneta.application.admission import Admission
from moneta.application.askii import AskiiExchange
from moneta.application.attempts import Attempts, first_route, route_decision
from moneta.application.config import Deployment, GatewayConfig
from moneta.application.ports import (
    AudioFile,
    Ledger,
    PriceBook,
    ProviderRegistry,
    Tokenizer,
)
from moneta.application.response_cache import Lookup, ResponseCache
from moneta.application.routing import DeploymentRouter, Route
from moneta.application.stream_assembly import StreamAssembler, as_chunks
from moneta.application.streaming import StreamTally
from moneta.application.tokens import count_messages_async, count_text_async
from moneta.domain.errors import GatewayError
from moneta.domain.redaction import redact
from moneta.domain.request_record import RequestRecord
from moneta.domain.usage import Usage


@dataclass(frozen=True)
class Caller:
    """Who is calling: the hash of their key (never the key), the end user they name, who the key
    belongs to, what the admission checks before routing decided (for the ledger), whom to
    tell once the call has ended (with its record), whom to tell the key of a cache hit, and
    the providers the call must not be routed to (their budgets cannot pay for it)."""

    key_hash: str = ""
    end_user: str = ""
    principal: dict[str, str] | None = None  # key_alias, team_id, user_id, org_id of a virtual key
    checks: dict[str, Any] = field(default_factory=dict)
    on_end: Callable[[RequestRecord], None] | None = None
    on_cache_hit: Callable[[str], None] | None = None
    barred_providers: frozenset[str] = frozenset()


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        router: DeploymentRouter,
        providers: ProviderRegistry,
        ledger: Ledger,
        prices: PriceBook,
        tokenizer: Tokenizer,
        instance: str = "",
        cache: ResponseCache | None = None,
        askii: AskiiExchange | None = None,
    ) -> None:
        """`instance` names this gateway process in each Admitted event (see `abandonment`);
        `askii` converts each settled cost (default: the configured rate alone)."""
        self.cache = cache
        self.askii = askii or AskiiExchange(config.moneta.askii_per_usd)
        self.instance = instance
        self.config = config
        self.router = router
        self.providers = providers
        self.ledger = ledger
        self.prices = prices
        self.tokenizer = tokenizer
        self._secrets = config.secrets()

    # -- the calls -------------------------------------------------------------------------

    async def chat(
        self, caller: Caller, body: dict[str, Any], request_id: UUID, call_type: str = "chat"
    ) -> dict[str, Any]:
        return await self._call(
            call_type, caller, body, request_id,
            lambda d: self.providers.for_deployment(d).chat(d, _for(d, body)),
        )

    async def text_completion(self, caller: Caller, body: dict[str, Any], request_id: UUID) -> dict[str, Any]:
        return await self._call(
            "text_completion", caller, body, request_id,
            lambda d: self.providers.for_deployment(d).text_completion(d, _for(d, body)),
        )

    async def embedding(self, caller: Caller, body: dict[str, Any], request_id: UUID) -> dict[str, Any]:
        return await self._call(
            "embedding", caller, body, request_id,
            lambda d: self.providers.for_deployment(d).embedding(d, _for(d, body)),
        )

    async def transcription(
        self, caller: Caller, model: str, audio: AudioFile, fields: dict[str, Any], request_id: UUID
    ) -> dict[str, Any]:
        return await self._call(
            "transcription", caller, {"model": model, **fields}, request_id,
            lambda d: self.providers.for_deployment(d).transcription(d, audio, fields),
        )

    async def open_chat_stream(
        self, caller: Caller, body: dict[str, Any], request_id: UUID, call_type: str = "chat"
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Admits the request and opens the provider's stream up to its first chunk, so that
        errors before any output still reach the caller as a status; then streams the rest."""
        stream = self._stream(caller, body, request_id, call_type)
        first = await stream.__anext__()
        return _prepend(first, stream)

    # -- admission ---------------------------------------------------------------------------

    async def deny(self, caller: Caller, call_type: str, model: str, error: GatewayError, request_id: UUID) -> None:
        """Records a refusal (nothing reached a provider), with what the checks saw, and waits
        until it is durable."""
        record = RequestRecord.deny(
            request_id,
            call_type=call_type,
            key_hash=caller.key_hash,
            end_user=caller.end_user,
            model_group=model[:200],
            status_code=error.status_code,
            error_type=error.error_type,
            code=str(error.code or ""),
            reason=redact(error.message, self._secrets)[:500],
            principal=caller.principal,
            decision=caller.checks or None,
        )
        if caller.on_end is not None:
            caller.on_end(record)
        await self.ledger.record(record)

    async def _admit(
        self, call_type: str, caller: Caller, body: dict[str, Any], request_id: UUID, stream: bool
    ) -> tuple[RequestRecord, Route | GatewayError, Admission]:
        model = body["model"]
        try:
            for deployment in self.router.group(model):
                self.prices.check_priced(deployment)
            first = await first_route(self.router, model, body, caller.barred_providers)
        except GatewayError as error:
            await self.deny(caller, call_type, model, error, request_id)
            raise
        record = RequestRecord.admit(
            request_id,
            call_type=call_type,
            key_hash=caller.key_hash,
            end_user=caller.end_user,
            model_group=model,
            stream=stream,
            decision={**route_decision(first), **caller.checks},
            instance=self.instance,
            principal=caller.principal,
        )
        return record, first, Admission(self.ledger, record, on_settle=caller.on_end)

    # -- one-shot calls ----------------------------------------------------------------------

    async def _call(
        self,
        call_type: str,
        caller: Caller,
        body: dict[str, Any],
        request_id: UUID,
        invoke: Callable[[Deployment], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        lookup = await self._look_up(call_type, body) if self.cache is not None else None
        if lookup is not None and lookup.hit is not None:
            return await self._from_cache(call_type, caller, body, request_id, lookup, stream=False)
        record, first, admitted = await self._admit(call_type, caller, body, request_id, stream=False)
        try:
            response, deployment, latency_ms = await self._attempt(record, first, admitted, body, invoke, stream=False,
                                                                   barred=caller.barred_providers)
            usage = _usage_of(call_type, response) or await self._estimate_usage(deployment, body, response)
        except asyncio.CancelledError:
            await self._cancelled(record, admitted)
            raise
        settled_at = _now()
        quote = self.prices.quote(deployment, usage, settled_at)
        askii, askii_rate = self.askii.settle(quote.cost, settled_at)
        record.complete(
            deployment_id=deployment.id,
            provider=deployment.provider,
            provider_model=deployment.provider_model,
            usage=usage,
            cost=quote.cost,
            price_source=quote.source,
            latency_ms=round(latency_ms, 3),
            finish_reason=_finish_reason(response),
            askii=askii,
            askii_rate=askii_rate,
        )
        await admitted.settle()
        if lookup is not None:
            await self._fill(lookup, response, usage, request_id)
        return response

    @staticmethod
    async def _cancelled(record: RequestRecord, admitted: Admission) -> None:
        """The caller gave up (a timeout around the call, a client gone) before the answer: the
        request ends as Failed with 499, as nginx names a request its client closed."""
        if record.is_open:
            record.fail(status_code=499, error_type="cancelled", reason="the caller cancelled the call")
        await asyncio.shield(admitted.settle())

    async def _attempt(self, record: RequestRecord, first: Route | GatewayError, admitted: Admission,
                       body: dict[str, Any], invoke: Callable[[Deployment], Awaitable[Any]],
                       *, stream: bool, barred: frozenset[str] = frozenset()) -> tuple[Any, Deployment, float]:
        """The first successful attempt, never with a provider in `barred`; when none succeeds, the
        request is recorded as Failed."""
        attempts = Attempts(record, self.router, body, invoke, stream=stream, secrets=self._secrets,
                            precheck=self.prices.check_priced, barred=barred)
        try:
            return await attempts.run(body["model"], first)
        except GatewayError as error:
            record.fail(status_code=error.status_code, error_type=error.error_type,
                        reason=redact(error.message, self._secrets)[:500])
            await admitted.settle()
            raise

    async def _estimate_usage(self, deployment: Deployment, body: dict[str, Any], response: dict[str, Any]) -> Usage:
        """For a provider that reports no usage: count the tokens ourselves rather than bill $0."""
        model = deployment.provider_model
        prompt = body.get("messages") or body.get("prompt") or body.get("input") or ""
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            prompt_tokens = await count_messages_async(self.tokenizer, model, prompt)
        else:
            prompt_tokens = await count_text_async(self.tokenizer, model, str(prompt))
        texts = [(c.get("message") or {}).get("content") or c.get("text") or "" for c in response.get("choices") or []]
        completion = await count_text_async(self.tokenizer, model, "".join(str(t) for t in texts))
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion)

    # -- the response cache ------------------------------------------------------------------

    async def _look_up(self, call_type: str, body: dict[str, Any]) -> Lookup | None:
        """The cache's answer to a call it applies to (a model group this gateway serves)."""
        assert self.cache is not None
        if not self.cache.applies(call_type) or body["model"] not in self.router.groups():
            return None
        return await self.cache.lookup(call_type, body)

    async def _from_cache(self, call_type: str, caller: Caller, body: dict[str, Any], request_id: UUID,
                          lookup: Lookup, *, stream: bool) -> dict[str, Any]:
        """Records the hit (admitted, then answered from the cache: no provider, no cost) and
        returns the cached answer once that is durable."""
        assert lookup.hit is not None
        started = time.perf_counter()
        record = RequestRecord.admit(
            request_id, call_type=call_type, key_hash=caller.key_hash, end_user=caller.end_user,
            model_group=body["model"], stream=stream, decision={"cache": "hit", **caller.checks},
            instance=self.instance, principal=caller.principal)
        record.serve_from_cache(cache_key=lookup.key, filled_by=lookup.hit.filled_by, usage=lookup.hit.usage,
                                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                                finish_reason=_finish_reason(lookup.hit.response))
        if caller.on_cache_hit is not None:
            caller.on_cache_hit(lookup.key)
        if caller.on_end is not None:
            caller.on_end(record)
        await self.ledger.record(record)
        return lookup.hit.response

    async def _fill(self, lookup: Lookup, response: dict[str, Any], usage: Usage, request_id: UUID) -> None:
        assert self.cache is not None
        await self.cache.fill(lookup, response, usage, str(request_id))

    # -- streams -----------------------------------------------------------------------------

    async def _stream(
        self, caller: Caller, body: dict[str, Any], request_id: UUID, call_type: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        lookup = await self._look_up(call_type, body) if self.cache is not None else None
        if lookup is not None and lookup.hit is not None:
            response = await self._from_cache(call_type, caller, body, request_id, lookup, stream=True)
            for cached in as_chunks(response, wants_usage):
                yield cached
            return
        record, first, admitted = await self._admit(call_type, caller, body, request_id, stream=True)
        started = time.perf_counter()

        async def open_stream(deployment: Deployment) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
            chunks = self.providers.for_deployment(deployment).chat_stream(deployment, _for(deployment, body))
            return await chunks.__anext__(), chunks

        try:
            (head, chunks), deployment, _ = await self._attempt(record, first, admitted, body, open_stream,
                                                                stream=True, barred=caller.barred_providers)
        except asyncio.CancelledError:
            await self._cancelled(record, admitted)
            raise
        tally = StreamTally(first_token_ms=(time.perf_counter() - started) * 1000)
        filling = StreamAssembler() if lookup is not None and not lookup.controls.no_store else None
        ending: GatewayError | None = None  # stays None while the stream runs, or if the client leaves
        finished = False
        try:
            chunk: dict[str, Any] | None = head
            while chunk is not None:
                tally.add(chunk)
                if filling is not None:
                    filling.add(chunk)
                visible = tally.visible(chunk, wants_usage)
                if visible is not None:
                    yield visible
                try:
                    chunk = await anext(chunks, None)
                except GatewayError as error:
                    ending = error
                    raise
            finished = True
        finally:
            usage = await self._settle_stream(record, admitted, deployment, body, tally, started, finished, ending)
        if filling is not None and lookup is not None:
            await self._fill(lookup, filling.response(usage), usage, request_id)

    async def _settle_stream(
        self,
        record: RequestRecord,
        admitted: Admission,
        deployment: Deployment,
        body: dict[str, Any],
        tally: StreamTally,
        started: float,
        finished: bool,
        ending: GatewayError | None,
    ) -> Usage:
        usage, estimated = await tally.usage_or_estimate(self.tokenizer, deployment.provider_model, body)
        settled_at = _now()
        quote = self.prices.quote(deployment, usage, settled_at)
        askii, askii_rate = self.askii.settle(quote.cost, settled_at)
        common = dict(
            deployment_id=deployment.id,
            provider=deployment.provider,
            provider_model=deployment.provider_model,
            usage=usage,
            cost=quote.cost,
            price_source=quote.source,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            first_token_ms=round(tally.first_token_ms, 3),
            askii=askii,
            askii_rate=askii_rate,
        )
        if finished:
            record.complete(**common, finish_reason=tally.finish_reason)
        elif ending is not None:
            record.interrupt(**common, usage_estimated=estimated, cause="upstream_error",
                             error_type=ending.error_type, status_code=ending.status_code)
        else:
            record.interrupt(**common, usage_estimated=estimated)
        # A disconnected client cancels this task: the writer still commits what was queued.
        await asyncio.shield(admitted.settle())
        return usage


async def _prepend(
    first: dict[str, Any], rest: AsyncGenerator[dict[str, Any], None]
) -> AsyncGenerator[dict[str, Any], None]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


def _for(deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    """The request as the deployment should receive it: its provider's model name, without the
    gateway's own `cache` controls."""
    sent = {**body, "model": deployment.provider_model}
    sent.pop("cache", None)
    return sent


def _usage_of(call_type: str, response: dict[str, Any]) -> Usage | None:
    if call_type == "transcription":
        return _transcription_usage(response)
    usage = response.get("usage")
    return Usage.from_openai(usage) if isinstance(usage, dict) else None


def _transcription_usage(response: dict[str, Any]) -> Usage:
    usage = response.get("usage") or {}
    if usage.get("type") == "duration":
        return Usage(audio_seconds=float(usage.get("seconds") or 0))
    if usage.get("type") == "tokens":
        return Usage(prompt_tokens=int(usage.get("input_tokens") or 0),
                     completion_tokens=int(usage.get("output_tokens") or 0),
                     audio_prompt_tokens=int((usage.get("input_token_details") or {}).get("audio_tokens") or 0))
    return Usage(audio_seconds=float(response.get("duration") or 0))


def _finish_reason(response: dict[str, Any]) -> str | None:
    choices = response.get("choices") or []
    return choices[0].get("finish_reason") if choices else None
