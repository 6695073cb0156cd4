"""Which rows of spend a reader may see: all of them, or those of some keys, users and teams."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Visibility:
    """`everything`, or the rows whose api key (hash), user or team is listed (any one of them)."""

    everything: bool = False
    api_keys: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    team_ids: tuple[str, ...] = ()


EVERYTHING = Visibility(everything=True)
