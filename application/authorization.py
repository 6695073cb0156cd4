"""What a principal may call: a key is limited to its models and its team's (an empty list, or
`all-proxy-models`, allows every model; a pattern such as `openai/*`, every model it matches);
a key's `aliases` name model groups by other names."""
from __future__ import annotations

from typing import Any, Iterable

from moneta.application.principal import ALL_MODELS, Principal
from moneta.domain.errors import AuthenticationError
from moneta.domain.model_patterns import is_pattern, matches


def model_for(principal: Principal | None, model: str) -> str:
    """The model group the call is for; AuthenticationError (401, as LiteLLM answers) when the
    key or its team may not call it."""
    if principal is None or not principal.key_id:
        return model
    model = (principal.key.get("aliases") or {}).get(model, model)
    _check("key", principal.key.get("models"), model)
    _check("team", principal.team.get("models"), model)
    return model


def visible(principal: Principal | None, models: Iterable[str]) -> list[str]:
    """The model groups `/v1/models` lists to this principal."""
    return [model for model in models if _allows(principal, model)]


def _allows(principal: Principal | None, model: str) -> bool:
    if principal is None or not principal.key_id:
        return True
    return _open(principal.key.get("models"), model) and _open(principal.team.get("models"), model)


def _open(allowed: Any, model: str) -> bool:
    return (not allowed or ALL_MODELS in allowed or model in allowed
            or any(is_pattern(entry) and matches(entry, model) for entry in allowed))


def _check(owner: str, allowed: Any, model: str) -> None:
    if not _open(allowed, model):
        raise AuthenticationError(
            f"The {owner} may not call model {model!r}; it may call: {', '.join(sorted(allowed))}.",
            param="model", code=f"{owner}_model_access_denied")
