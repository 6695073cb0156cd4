"""Use cases, ports and the library facade.

    from moneta.application import completion
    completion(model="mock/demo", messages=[{"role": "user", "content": "hi"}])
"""
from importlib import import_module
from typing import Any

# Public name -> the module that defines it.
_FACADE = {
    **dict.fromkeys(("completion", "acompletion", "text_completion", "atext_completion", "embedding", "aembedding",
                     "transcription", "atranscription"), "moneta.application.facade"),
    **dict.fromkeys(("completion_cost", "cost_per_token"), "moneta.application.cost"),
    "token_counter": "moneta.application.tokens",
}


def __getattr__(name: str) -> Any:
    # Lazy, so importing a submodule (ports, config) does not build the facade's graph.
    if name in _FACADE:
        return getattr(import_module(_FACADE[name]), name)
    raise AttributeError(name)


__all__ = sorted(_FACADE)
