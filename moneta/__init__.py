"""Moneta Gateway: `import moneta` gives the library, as `import litellm` does.

    import moneta
    moneta.completion(model="mock/demo", messages=[{"role": "user", "content": "hi"}])

The layers install beneath this package: moneta.domain, moneta.application,
moneta.infrastructure, moneta.projections, moneta.api.
"""
from decimal import Decimal
from importlib import import_module
from typing import Any

# The library's default askii rate (askii per USD) when no config file names one, settable as
# LiteLLM's module settings are: `moneta.askii_per_usd = 1200`.
askii_per_usd: int | str | Decimal = 1000

# Public name -> the module that defines it.
_LIBRARY = {
    **dict.fromkeys(("completion", "acompletion", "text_completion", "atext_completion", "embedding", "aembedding",
                     "transcription", "atranscription", "token_counter"), "moneta.library"),
    "Router": "moneta.router",
    "BudgetManager": "moneta.budget_manager",
    "convert_to_askii": "moneta.askii",
    **dict.fromkeys(("completion_cost", "cost_per_token"), "moneta.cost"),
    # LiteLLM's exceptions, as `litellm.RateLimitError` is written
    **dict.fromkeys(("APIConnectionError", "APIError", "AuthenticationError", "BadRequestError", "BudgetExceededError",
                     "ContentPolicyViolationError", "ContextWindowExceededError", "InternalServerError",
                     "NotFoundError", "PermissionDeniedError", "RateLimitError", "ServiceUnavailableError", "Timeout",
                     "UnprocessableEntityError", "UnsupportedParamsError"), "moneta.exceptions"),
}


def __getattr__(name: str) -> Any:
    # Lazy, so importing a layer (moneta.domain, ...) does not build the library's object graph.
    if name in _LIBRARY:
        return getattr(import_module(_LIBRARY[name]), name)
    if name == "exceptions":
        return import_module("moneta.exceptions")
    raise AttributeError(f"module 'moneta' has no attribute {name!r}")


__all__ = sorted([*_LIBRARY, "exceptions", "askii_per_usd"])
