"""Model name patterns, as LiteLLM's wildcard routing writes them: `openai/*`, `anthropic/claude-*`,
`*`. A `*` matches any text, `/` included; the text each `*` matched fills the `*`s of another
pattern in order (`openai/*` matched by `openai/gpt-4o` gives `gpt-4o` to `openai/*` -> itself)."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

WILDCARD = "*"


def is_pattern(name: str) -> bool:
    return WILDCARD in name


def match(pattern: str, name: str) -> tuple[str, ...] | None:
    """What each `*` of `pattern` matched in `name`, or None when `name` does not match."""
    found = _compiled(pattern).fullmatch(name)
    return found.groups() if found else None


def matches(pattern: str, name: str) -> bool:
    return match(pattern, name) is not None


def fill(pattern: str, parts: Sequence[str]) -> str:
    """`pattern` with its `*`s replaced by `parts`, in order; `*`s beyond them stay."""
    pieces = pattern.split(WILDCARD)
    filled = [pieces[0]]
    for i, piece in enumerate(pieces[1:]):
        filled.append(parts[i] if i < len(parts) else WILDCARD)
        filled.append(piece)
    return "".join(filled)


def specificity(pattern: str) -> int:
    """How much of a name the pattern fixes: among patterns that match, the highest wins
    (LiteLLM's order: the longest pattern first)."""
    return len(pattern) - pattern.count(WILDCARD)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile("(.*)".join(re.escape(piece) for piece in pattern.split(WILDCARD)), re.DOTALL)
