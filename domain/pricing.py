"""Cost arithmetic: Decimal only, never float."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from moneta.domain.usage import Usage

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """Per-token prices in USD. `source` says where the price came from (audited)."""

    input_per_token: Decimal
    output_per_token: Decimal
    cache_read_per_token: Decimal | None = None
    per_second: Decimal | None = None
    source: str = "config"
    # Audio tokens (part of prompt/completion tokens) at their own rate; None: at the text rate.
    input_audio_per_token: Decimal | None = None
    output_audio_per_token: Decimal | None = None

    def cost_of(self, usage: Usage) -> Decimal:
        audio_in = min(usage.audio_prompt_tokens, usage.prompt_tokens) if self.input_audio_per_token is not None else 0
        audio_out = (min(usage.audio_completion_tokens, usage.completion_tokens)
                     if self.output_audio_per_token is not None else 0)
        cached = min(usage.cached_tokens, usage.prompt_tokens - audio_in)
        cache_rate = self.input_per_token if self.cache_read_per_token is None else self.cache_read_per_token
        cost = (
            (usage.prompt_tokens - audio_in - cached) * self.input_per_token
            + cached * cache_rate
            + (usage.completion_tokens - audio_out) * self.output_per_token
        )
        if audio_in:
            cost += audio_in * self.input_audio_per_token
        if audio_out:
            cost += audio_out * self.output_audio_per_token
        if self.per_second is not None and usage.audio_seconds:
            cost += Decimal(str(usage.audio_seconds)) * self.per_second
        return cost


@dataclass(frozen=True, slots=True)
class CostQuote:
    """The cost of one call and the price it was computed from."""

    cost: Decimal
    source: str


def to_decimal(value: object, name: str) -> Decimal:
    """Reads a config price (YAML gives floats or strings) exactly, via its text."""
    try:
        result = Decimal(str(value))
    except Exception as exc:  # decimal.InvalidOperation and friends
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if not result.is_finite() or result < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return result
