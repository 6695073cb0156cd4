"""Wildcard routing, as LiteLLM does it: a `model_list` entry named by a pattern (`openai/*`, `*`)
serves every model that matches it. A call for `openai/gpt-4.1-mini` through `openai/*` (model
`openai/*`) goes to `openai/gpt-4.1-mini`: the text the `*` matched fills the `*` of the entry's
model. Among the patterns that match, the most specific serves (explicit groups are the router's
and win before any pattern is asked).

Each concrete model is a group of deployments of its own, one per entry of the pattern, each with
an id of its own (its cooldowns, health and spend are its own). They are made on first use and
kept for the next calls, up to `MADE_GROUPS`; their ids do not change when one is made again.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Iterable, Mapping, Sequence

from moneta.application.config import Deployment
from moneta.application.ports import PriceBook
from moneta.application.price_check import is_priced
from moneta.domain import model_patterns
from moneta.domain.model_ref import ModelRef

MADE_GROUPS = 1024


class WildcardGroups:
    def __init__(self, deployments: Iterable[Deployment]) -> None:
        patterns: dict[str, list[Deployment]] = {}
        for deployment in deployments:
            if deployment.is_pattern:
                patterns.setdefault(deployment.model_name, []).append(deployment)
        self._patterns = sorted(patterns.items(), key=lambda item: -model_patterns.specificity(item[0]))
        self._made: OrderedDict[str, list[Deployment]] = OrderedDict()

    def group(self, model: str) -> list[Deployment] | None:
        """The group serving `model` through the most specific pattern that matches it, or None."""
        made = self._made.get(model)
        if made is not None:
            self._made.move_to_end(model)
            return made
        for pattern, entries in self._patterns:
            parts = model_patterns.match(pattern, model)
            if parts is not None:
                return self._remember(model, [concrete(entry, parts, model) for entry in entries])
        return None

    def made(self) -> Mapping[str, list[Deployment]]:
        """The concrete groups in use."""
        return self._made

    def listed(self, prices: PriceBook) -> set[str]:
        """The concrete models the patterns serve with a price, as far as the price library knows
        them: every priced model of the provider a pattern's model names (`openai/*`)."""
        names: set[str] = set()
        for pattern, entries in self._patterns:
            for entry in entries:
                names.update(_priced_models(pattern, entry, prices))
        return names

    def _remember(self, model: str, group: list[Deployment]) -> list[Deployment]:
        self._made[model] = group
        if len(self._made) > MADE_GROUPS:
            self._made.popitem(last=False)
        return group


def concrete(entry: Deployment, parts: Sequence[str], model: str) -> Deployment:
    """The deployment of a pattern entry that serves `model`, whose `*`s matched `parts`."""
    name = model_patterns.fill(entry.model_template or "", parts)
    custom = entry.extra_params.get("custom_llm_provider")
    ref = ModelRef(str(custom).lower(), name) if custom else ModelRef.parse(name)
    return replace(entry, id=f"{entry.id}:{ref}", model_name=model, provider=ref.provider,
                   provider_model=ref.name, model_template=None)


def _priced_models(pattern: str, entry: Deployment, prices: PriceBook) -> Iterable[str]:
    """The model names matching `pattern` that reach a priced model of the entry's provider; none
    when the entry's model leaves the provider open (`*`)."""
    provider, model_part = _split_template(entry)
    if provider is None:
        return
    for known in prices.known_models(provider):
        parts = model_patterns.match(model_part, known)
        if parts is None:
            continue
        name = model_patterns.fill(pattern, parts)
        if not model_patterns.is_pattern(name) and is_priced(concrete(entry, parts, name), prices):
            yield name


def _split_template(entry: Deployment) -> tuple[str | None, str]:
    """The provider an entry's model names (None when a `*` stands for it) and its model part."""
    template = entry.model_template or ""
    custom = entry.extra_params.get("custom_llm_provider")
    if custom:
        return str(custom).lower(), template
    provider, sep, model = template.partition("/")
    if not sep or model_patterns.is_pattern(provider):
        return None, template
    return provider.lower(), model
