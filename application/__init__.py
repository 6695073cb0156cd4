"""Use cases, ports and the library facade.

    from application import completion
    completion(model="mock/demo", messages=[{"role": "user", "content": "hi"}])
"""
from typing import Any

_FACADE = {"completion", "acompletion", "text_completion", "atext_completion", "embedding", "aembedding",
           "transcription", "atranscription"}


def __getattr__(name: str) -> Any:
    # Lazy, so importing a submodule (ports, config) does not build the facade's graph.
    if name in _FACADE:
        from application import facade

        return getattr(facade, name)
    raise AttributeError(name)


__all__ = sorted(_FACADE)
