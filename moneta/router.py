"""LiteLLM's `Router`, over the gateway's own router: routing, retries, fallbacks, cooldowns.

    router = moneta.Router(model_list=[...], routing_strategy="simple-shuffle", num_retries=2,
                           allowed_fails=1, cooldown_time=30)
    router.completion(model="gpt-4o", messages=[...])

The keyword arguments are the config file's `router_settings`, checked as they are there. Calls
answer as `moneta.completion` does and are recorded in the library's ledger (DATABASE_URL, else
./moneta.db), as are cooldowns, manual ones naming who asked. Each Router keeps its cooldowns and
usage counts in this process, or in Redis when its settings name one (then shared with every
router and proxy on that Redis).
"""
from __future__ import annotations

from typing import Any

from moneta import bootstrap
from moneta.application.gateway import Gateway
from moneta.application.results import EmbeddingResponse, ModelResponse
from moneta.domain import errors
from moneta.exceptions import raising_library_errors, to_gateway_error
from moneta.library import chat_with, embedding_with, in_background, text_completion_with

_KINDS: dict[str, type[errors.GatewayError]] = {
    "BadRequestError": errors.BadRequestError,
    "AuthenticationError": errors.AuthenticationError,
    "TimeoutError": errors.TimeoutError,
    "RateLimitError": errors.RateLimitError,
    "ContentPolicyViolationError": errors.ContentPolicyViolationError,
    "InternalServerError": errors.InternalServerError,
}


class Router:
    def __init__(self, model_list: list[dict[str, Any]] | None = None, **router_settings: Any) -> None:
        """A bad setting raises the config loader's ConfigError (a ValueError, as LiteLLM's Router
        raises), naming the key: `router_settings.routing_strategy: 'fastest' is not one of ...`."""
        settings = {key: value for key, value in router_settings.items() if value is not None}
        config = bootstrap.router_config(model_list or [], settings)
        self._gateway = bootstrap.library_container().gateway_over(config)

    # -- calls ---------------------------------------------------------------------------------

    @raising_library_errors
    async def acompletion(self, model: str, messages: list[dict[str, Any]], stream: bool = False,
                          **kwargs: Any) -> Any:
        return await chat_with(self._choose, model, messages, stream, kwargs)

    @raising_library_errors
    async def atext_completion(self, model: str, prompt: str | list[str], **kwargs: Any) -> ModelResponse:
        return await text_completion_with(self._choose, model, prompt, kwargs)

    @raising_library_errors
    async def aembedding(self, model: str, input: str | list[str], **kwargs: Any) -> EmbeddingResponse:  # noqa: A002
        return await embedding_with(self._choose, model, input, kwargs)

    def completion(self, model: str, messages: list[dict[str, Any]], stream: bool = False, **kwargs: Any) -> Any:
        return in_background(self.acompletion(model, messages, stream=stream, **kwargs), stream)

    def text_completion(self, model: str, prompt: str | list[str], **kwargs: Any) -> ModelResponse:
        return in_background(self.atext_completion(model, prompt, **kwargs))

    def embedding(self, model: str, input: str | list[str], **kwargs: Any) -> EmbeddingResponse:  # noqa: A002
        return in_background(self.aembedding(model, input, **kwargs))

    def _choose(self, model: str, settings: dict[str, Any], mock_response: Any) -> Gateway:
        per_call = sorted(settings) + (["mock_response"] if mock_response is not None else [])
        if per_call:
            raise errors.UnsupportedParamsError(
                f"A Router call takes its deployments' settings from model_list: {', '.join(per_call)} "
                "cannot be set per call (put them in the deployment's litellm_params).", param=per_call[0])
        return self._gateway

    # -- the router itself -----------------------------------------------------------------------

    @raising_library_errors
    def route(self, model: str, messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The deployment the router picks for `model` now (skipping those cooling down), without
        calling it. A pick among equals is random as a real call's is; in a group with rpm or
        tpm limits, the pick counts against the deployment's minute as a routed call does."""
        route = in_background(self._gateway.router.route(model, {"model": model, "messages": messages or []}))
        deployment = route.deployment
        return {"id": deployment.id, "model_name": deployment.model_name, "provider": deployment.provider,
                "model": deployment.label, "reason": route.reason}

    @raising_library_errors
    def mark_failure(self, deployment_id: str, error: BaseException | str) -> bool:
        """Counts a failure of the deployment as a failed call would (the same cooldown policy):
        `error` is an exception, or a failure kind of `allowed_fails_policy` ("RateLimitError",
        "TimeoutError", "InternalServerError", ...). True when the deployment is cooling down now."""
        router = self._gateway.router
        deployment = router.deployment(deployment_id)
        in_background(router.on_failure(deployment, _failure(error)))
        return deployment.id in router.cooldowns.state().cooling

    @raising_library_errors
    def cooldown_deployment(self, deployment_id: str, seconds: float, reason: str, requested_by: str) -> float:
        """Takes the deployment out of rotation for `seconds` (above 0, at most a day), recorded in
        the ledger with `reason` and who asked. Returns when it ends (epoch seconds)."""
        return in_background(self._gateway.router.cool_down(deployment_id, seconds, reason, requested_by))


def _failure(error: BaseException | str) -> errors.GatewayError:
    if isinstance(error, BaseException):
        return to_gateway_error(error)
    if error not in _KINDS:
        raise errors.BadRequestError(f"error must be an exception or one of {', '.join(_KINDS)}, got {error!r}",
                              param="error")
    return _KINDS[error](f"{error} reported by the caller")
