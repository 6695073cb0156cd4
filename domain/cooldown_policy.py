"""When a failing deployment is taken out of rotation, and for how long (LiteLLM's cooldowns).

A deployment cools down when its failures of one kind within `window_s` exceed the allowed
number: `allowed_fails_policy` per kind, else `allowed_fails`. Rate limits, bad credentials,
missing models and timeouts cool it down at once, as in LiteLLM. The caller's own mistakes
(other 4xx) never do, and neither does anything in a group of one: with no other deployment
to send traffic to, a cooldown would only turn a flaky upstream into a certain failure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from moneta.domain.errors import BadRequestError, GatewayError
from moneta.domain.failure_kinds import failure_kind

IMMEDIATE_STATUSES = frozenset({401, 404, 408, 429})
MAX_COOLDOWN_S = 300.0
MAX_MANUAL_COOLDOWN_S = 86_400.0


@dataclass(frozen=True)
class CooldownPolicy:
    allowed_fails: int = 3
    allowed_fails_by_kind: Mapping[str, int] = field(default_factory=dict)
    cooldown_s: float = 5.0
    window_s: float = 60.0
    disabled: bool = False

    def allowed_fails_for(self, error: GatewayError, group_size: int) -> int | None:
        """Failures of this error's kind the deployment may have in the window before it cools
        down (0: at once); None when this error never cools it down."""
        if self.disabled or group_size < 2:
            return None
        kind = failure_kind(error)
        if kind in self.allowed_fails_by_kind:
            return self.allowed_fails_by_kind[kind]
        if error.status_code in IMMEDIATE_STATUSES:
            return 0
        if error.status_code < 500:
            return None
        return self.allowed_fails

    def cooldown_for(self, error: GatewayError) -> float:
        """`cooldown_time`, or longer when the upstream's Retry-After asks for longer (bounded)."""
        asked = min(error.retry_after or 0.0, MAX_COOLDOWN_S)
        return max(self.cooldown_s, asked)


def manual_cooldown_s(seconds: object) -> float:
    """The length of a manual cooldown: a number of seconds above 0, at most a day."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_MANUAL_COOLDOWN_S:
        raise BadRequestError(f"seconds must be a number above 0 and at most {MAX_MANUAL_COOLDOWN_S:g}, got {seconds!r}",
                              param="seconds", code="invalid_seconds")
    return float(seconds)
